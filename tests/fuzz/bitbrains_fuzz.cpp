// The Bitbrains trace reader: any text gives one series that keeps the reader's promises,
// or a std::runtime_error naming the source.
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "recommender/ingest.h"
#include "usage_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sizeguard::IngestReport report;
  try {
    std::vector<sizeguard::UsageSeries> out;
    out.push_back(sizeguard::parse_bitbrains(text, "17.csv", report));
    if (out.front().key.name != "17") sizeguard::fuzz::usage_violation("the workload is named by the source's stem");
    sizeguard::fuzz::check_usage(out, report);
  } catch (const std::runtime_error& e) {
    if (!std::string_view(e.what()).starts_with("17.csv")) sizeguard::fuzz::usage_violation("errors name the source");
  }
  return 0;
}
