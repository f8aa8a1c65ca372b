// Manifest reading for `sizeguard review`: YAML (multi-document) or JSON text turned into
// Kubernetes objects as JSON, with YAML scalars typed the way Kubernetes types them.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kube/review.h"

namespace YAML {
class Node;
}

namespace sizeguard {

struct ManifestDocument {
  Json object;         // a mapping with string kind and apiVersion
  std::string source;  // the file path, "-" for stdin
  int index = 0;       // 0-based document index in the file (items of a List share their List's index)
};

struct ManifestError {
  std::string message;  // e.g. "deploy.yaml[2]: line 4, column 3: illegal map value"
};

// Reads YAML (documents separated by "---" lines) or JSON text. Empty documents (only
// comments) are skipped but still count for the index; comments before the first "---"
// are not a document. A `kind: List` (or any kind ending in "List" with an `items` array)
// is replaced by its items, which keep the List's document index. Every document must be
// a mapping with `kind` and `apiVersion`. Returns all documents or the first error; line
// numbers in errors count from the start of the text.
std::variant<std::vector<ManifestDocument>, ManifestError> parse_manifests(std::string_view text,
                                                                           const std::string& source);

// parse_manifests on the contents of `path` ("-" reads stdin). An unreadable file gives an
// error naming it.
std::variant<std::vector<ManifestDocument>, ManifestError> read_manifests(const std::string& path);

// One "---"-separated piece of a YAML text. Its first line is the marker line with "---"
// blanked, so yaml-cpp's line numbers plus first_line are lines of the whole text.
// (yaml-cpp's LoadAll stops at the first empty document, hence our own split.)
struct YamlChunk {
  std::string text;
  int first_line = 0;
};
std::vector<YamlChunk> split_yaml_documents(std::string_view text);

// Converts a YAML node to JSON with the YAML 1.2 core schema, as Kubernetes does: plain
// (unquoted) true/false -> bool, null/~/empty -> null, integers (decimal, 0x, 0o) -> integer,
// floats -> number; quoted and block scalars -> string; explicit !!str/!!int/!!float/
// !!bool/!!null tags are honoured; "<<" merge keys are applied. .inf/.nan stay strings (JSON
// cannot hold them). Throws std::invalid_argument for a mapping key that is not a scalar,
// for excessive aliasing (go-yaml's rule, as kubectl: an alias bomb of a few hundred bytes
// would expand to gigabytes) and for an alias inside its own anchor.
Json yaml_to_json(const YAML::Node& node);

}  // namespace sizeguard
