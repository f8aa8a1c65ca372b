// RFC 6902 JSONPatch building against a known document: escapes pointer tokens and
// creates missing parents, so callers only say "set this path to this value".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "kube/review.h"

namespace sizeguard {

// RFC 6901 escaping of one reference token ("~" -> "~0", "/" -> "~1").
std::string escape_pointer_token(std::string_view token);
// Joins escaped tokens into a pointer: {"metadata","annotations","a/b"} -> /metadata/annotations/a~1b
std::string make_pointer(const std::vector<std::string>& tokens);

// The inverse of make_pointer: "/spec/containers/0" -> {"spec","containers","0"}, unescaped.
std::vector<std::string> split_pointer(std::string_view pointer);

// A pointer as Kubernetes writes field paths in messages and status causes:
// "/spec/containers/0/resources/limits/nvidia.com~1gpu" -> spec.containers[0].resources.limits[nvidia.com/gpu]
std::string field_path(std::string_view pointer);

class PatchBuilder {
 public:
  explicit PatchBuilder(const Json& original);

  // Sets the member at `tokens` (unescaped) to `value`: "replace" if it exists, otherwise
  // "add", first adding any missing parent objects. A no-op if the value is already equal.
  void set(const std::vector<std::string>& tokens, Json value);
  // Removes the member if present.
  void remove(const std::vector<std::string>& tokens);

  bool empty() const { return ops_.empty(); }
  const Json& operations() const { return ops_; }  // a JSON array
  // The document with the operations applied so far.
  const Json& result() const { return current_; }

 private:
  Json current_;
  Json ops_ = Json::array();
};

}  // namespace sizeguard
