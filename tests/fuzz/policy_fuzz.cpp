// Policy YAML loading: any text gives policies or errors that name the document (and, for
// YAML syntax errors, the line), never a crash or an exception.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "policies/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const sizeguard::PolicyLoad load = sizeguard::parse_policies(text, "fuzz.yaml");
  for (const std::string& error : load.errors) {
    if (!error.starts_with("fuzz.yaml[")) {
      std::fprintf(stderr, "policy_fuzz: error without a position: %s\n", error.c_str());
      std::abort();
    }
  }
  for (const sizeguard::Policy& policy : load.policies) {
    if (policy.name.empty() || !policy.source.starts_with("fuzz.yaml[")) {
      std::fprintf(stderr, "policy_fuzz: policy without a name or source: '%s' from '%s'\n", policy.name.c_str(),
                   policy.source.c_str());
      std::abort();
    }
  }
  return 0;
}
