// `sizeguard review`'s (and --cluster-state's) manifest reader: any text, YAML or JSON, gives
// objects or an error naming the file and document, never a crash, an exception, a stack
// overflow (JSON nested past 10,000 levels, YAML past yaml-cpp's 500) or unbounded memory
// (alias bombs are refused by go-yaml's excessive-aliasing rule; -rss_limit_mb catches
// one that is not). Each object is copied and serialized, as review does with it.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "kube/manifest.h"

namespace {

[[noreturn]] void violation(const char* what, std::string_view detail) {
  std::fprintf(stderr, "manifest_fuzz: invariant violated: %s\n%.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sizeguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::variant<std::vector<ManifestDocument>, ManifestError> result;
  try {
    result = parse_manifests(text, "fuzz.yaml");
  } catch (const std::exception& e) {
    violation("parse_manifests does not throw", e.what());
  }
  if (const auto* error = std::get_if<ManifestError>(&result)) {
    if (!error->message.starts_with("fuzz.yaml[")) violation("an error names the file and document", error->message);
    return 0;
  }
  for (const ManifestDocument& document : std::get<std::vector<ManifestDocument>>(result)) {
    const Json& object = document.object;
    if (!object.is_object() || !object.contains("kind") || !object["kind"].is_string() ||
        !object.contains("apiVersion") || !object["apiVersion"].is_string()) {
      violation("a document is an object with string kind and apiVersion", object.dump(-1, ' ', false, Json::error_handler_t::replace));
    }
    if (document.source != "fuzz.yaml" || document.index < 0) violation("a document keeps its source", document.source);
    const Json copy = object;  // recursive, as review's request building is
    const std::string dumped = copy.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (Json::parse(dumped, nullptr, false).is_discarded()) violation("an object serializes to valid JSON", dumped);
  }
  return 0;
}
