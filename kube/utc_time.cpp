#include "kube/utc_time.h"

#include <cstdio>
#include <ctime>

namespace sizeguard {

std::string format_utc(std::chrono::system_clock::time_point time, UtcPrecision precision) {
  using namespace std::chrono;
  // Floor, not truncate: a time before 1970 must not round towards the epoch.
  const auto whole = floor<seconds>(time);
  const std::time_t t = system_clock::to_time_t(whole);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[96];  // room for any int fields, so the compiler can see nothing is cut
  if (precision == UtcPrecision::Milliseconds) {
    std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(duration_cast<milliseconds>(time - whole).count()));
  } else {
    std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  }
  return buffer;
}

std::string format_utc(std::int64_t epoch_seconds) {
  return format_utc(std::chrono::system_clock::time_point(std::chrono::seconds(epoch_seconds)));
}

}  // namespace sizeguard
