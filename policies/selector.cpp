#include "policies/policy.h"

#include <algorithm>

namespace sizeguard {

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with one backtrack point: linear in practice, no recursion.
  size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool glob_match_any(const std::vector<std::string>& patterns, std::string_view text) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return glob_match(p, text); });
}

bool LabelSelector::matches(const Json& labels) const {
  auto value_of = [&](const std::string& key) -> const std::string* {
    if (!labels.is_object()) return nullptr;
    auto it = labels.find(key);
    if (it == labels.end() || !it->is_string()) return nullptr;
    return it->get_ptr<const std::string*>();
  };
  for (const auto& [key, expected] : match_labels) {
    const std::string* value = value_of(key);
    if (!value || *value != expected) return false;
  }
  for (const auto& requirement : match_expressions) {
    const std::string* value = value_of(requirement.key);
    const bool listed = value && std::find(requirement.values.begin(), requirement.values.end(), *value) !=
                                     requirement.values.end();
    switch (requirement.op) {
      case LabelRequirement::Operator::In:
        if (!listed) return false;
        break;
      case LabelRequirement::Operator::NotIn:  // a missing label is "not in" (Kubernetes semantics)
        if (listed) return false;
        break;
      case LabelRequirement::Operator::Exists:
        if (!value) return false;
        break;
      case LabelRequirement::Operator::DoesNotExist:
        if (value) return false;
        break;
    }
  }
  return true;
}

}  // namespace sizeguard
