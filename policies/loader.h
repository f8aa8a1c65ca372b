// Reads Policy documents from YAML (or JSON) files and validates them strictly: unknown
// fields, wrong types and bad values are errors that name the file, the document index,
// the field path and what was expected, e.g.
//   prod.yaml[1] spec.replicas.min: expected a non-negative integer, got "two"
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

#include "policies/policy.h"

namespace sizeguard {

struct PolicyLoad {
  std::vector<Policy> policies;
  std::vector<std::string> errors;  // empty when everything loaded
  std::vector<std::string> files;
  std::string fingerprint;  // hash of the files' names and contents: equal means unchanged
  bool ok() const { return errors.empty(); }
};

// Parses every document of one file's text. `source` names it in messages ("prod.yaml").
PolicyLoad parse_policies(std::string_view text, const std::string& source);

// A file, or a directory's *.yaml / *.yml / *.json files (not hidden ones, so a kubelet
// ConfigMap volume's ..data entries are read once, through the visible names), in name
// order. Policy names must be unique across the whole set. If the ..data symlink is
// swapped while reading, the read starts over, so a set never mixes two generations.
PolicyLoad load_policies(const std::filesystem::path& path);

// load_policies in two steps, so that a poller can skip the parse when nothing changed:
// reading the files and their fingerprint is cheap, parsing the YAML is not.
struct PolicyFiles {
  std::vector<std::pair<std::string, std::optional<std::string>>> files;  // name, text (none: unreadable)
  std::vector<std::string> errors;  // listing and reading errors
  std::string fingerprint;          // as PolicyLoad::fingerprint
};
PolicyFiles read_policy_files(const std::filesystem::path& path);
PolicyLoad parse_policy_files(const PolicyFiles& files);

}  // namespace sizeguard
