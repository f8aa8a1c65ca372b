// The long usage CSV reader: any text gives series that keep the reader's promises, or a
// std::runtime_error naming the source.
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "recommender/ingest.h"
#include "usage_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sizeguard::IngestReport report;
  try {
    const auto out = sizeguard::parse_usage_csv(text, "fuzz.csv", report);
    sizeguard::fuzz::check_usage(out, report);
  } catch (const std::runtime_error& e) {
    if (!std::string_view(e.what()).starts_with("fuzz.csv")) sizeguard::fuzz::usage_violation("errors name the source");
  }
  return 0;
}
