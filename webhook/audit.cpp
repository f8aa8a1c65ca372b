#include "webhook/audit.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace sizeguard {

AuditLog::AuditLog(const std::string& destination) {
  if (destination.empty()) return;
  if (destination == "-") {
    out_ = stdout;
    return;
  }
  out_ = std::fopen(destination.c_str(), "a");
  if (!out_) throw std::runtime_error("--audit-log " + destination + ": cannot open for appending: " + std::strerror(errno));
  owned_ = true;
}

AuditLog::~AuditLog() {
  if (owned_ && out_) std::fclose(out_);
}

void AuditLog::write(const Json& record) {
  if (!out_) return;
  const std::string line = record.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

Json audit_record_base(const AdmissionRequest& request, std::string_view webhook) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char time[80];
  std::snprintf(time, sizeof time, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(millis));
  Json record = {
      {"time", time},
      {"webhook", webhook},
      {"uid", request.uid},
      {"kind", request.kind.kind},
      {"resource", request.resource.resource},
      {"subResource", request.sub_resource},
      {"namespace", request.namespace_},
      {"name", request.display_name()},
      {"operation", to_string(request.operation)},
      {"user", request.user_info.username},
      {"groups", request.user_info.groups},
      {"dryRun", request.dry_run},
  };
  return record;
}

}  // namespace sizeguard
