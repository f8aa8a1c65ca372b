// Differential target for the request-body parser (kube/json_read.h): for any bytes,
// parse_json must agree with nlohmann::json::parse — both reject, or both accept with the
// same serialization. Seeds: the apiserver fixtures.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "kube/json_read.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::optional<nlohmann::json> fast = sizeguard::parse_json(text);
  const nlohmann::json reference = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (fast.has_value() == reference.is_discarded()) {
    std::fprintf(stderr, "parse_json %s what nlohmann %s\n", fast ? "accepts" : "rejects",
                 fast ? "rejects" : "accepts");
    std::abort();
  }
  if (fast && fast->dump() != reference.dump()) {
    std::fprintf(stderr, "parse_json and nlohmann disagree:\n%s\n%s\n", fast->dump().c_str(), reference.dump().c_str());
    std::abort();
  }
  return 0;
}
