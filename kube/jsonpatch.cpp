#include "kube/jsonpatch.h"

#include <charconv>

namespace sizeguard {

namespace {

// An array index token ("0", "12"), as RFC 6901 allows it: no sign, no leading zeros.
std::optional<size_t> array_index(const std::string& token) {
  if (token.empty() || (token.size() > 1 && token[0] == '0')) return std::nullopt;
  size_t index = 0;
  auto [end, error] = std::from_chars(token.data(), token.data() + token.size(), index);
  if (error != std::errc() || end != token.data() + token.size()) return std::nullopt;
  return index;
}

// The child of `node` named by `token`, or nullptr.
Json* child(Json& node, const std::string& token) {
  if (node.is_object()) {
    auto it = node.find(token);
    return it == node.end() ? nullptr : &*it;
  }
  if (node.is_array()) {
    auto index = array_index(token);
    return index && *index < node.size() ? &node[*index] : nullptr;
  }
  return nullptr;
}

}  // namespace

std::string escape_pointer_token(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string make_pointer(const std::vector<std::string>& tokens) {
  std::string out;
  for (const auto& token : tokens) {
    out += '/';
    out += escape_pointer_token(token);
  }
  return out;
}

std::vector<std::string> split_pointer(std::string_view pointer) {
  std::vector<std::string> tokens;
  size_t pos = 0;
  while (pos < pointer.size() && pointer[pos] == '/') {
    size_t end = pointer.find('/', pos + 1);
    if (end == std::string_view::npos) end = pointer.size();
    std::string token;
    for (size_t i = pos + 1; i < end; ++i) {
      if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
        token += pointer[i + 1] == '0' ? '~' : '/';
        ++i;
      } else {
        token += pointer[i];
      }
    }
    tokens.push_back(std::move(token));
    pos = end;
  }
  return tokens;
}

PatchBuilder::PatchBuilder(const Json& original) : current_(original) {}

void PatchBuilder::set(const std::vector<std::string>& tokens, Json value) {
  if (tokens.empty()) return;  // replacing the whole document is never what a webhook wants
  Json* node = &current_;
  size_t depth = 0;
  // Walk down the existing part of the path.
  for (; depth + 1 < tokens.size(); ++depth) {
    Json* next = child(*node, tokens[depth]);
    if (next == nullptr || next->is_null()) break;
    node = next;
  }
  if (depth + 1 == tokens.size()) {
    const std::string& last = tokens.back();
    if (Json* existing = child(*node, last); existing != nullptr) {
      if (*existing == value) return;
      ops_.push_back({{"op", "replace"}, {"path", make_pointer(tokens)}, {"value", value}});
      *existing = std::move(value);
      return;
    }
    if (!node->is_object()) return;  // cannot add a member to a scalar or past an array's end
    ops_.push_back({{"op", "add"}, {"path", make_pointer(tokens)}, {"value", value}});
    (*node)[last] = std::move(value);
    return;
  }
  // Parents are missing (or null) from tokens[depth] on: one "add" of the nested object,
  // so the patch applies atomically and stays short.
  if (!node->is_object()) return;
  Json nested = std::move(value);
  for (size_t i = tokens.size() - 1; i > depth; --i) {
    nested = Json{{tokens[i], std::move(nested)}};
  }
  const std::vector<std::string> parent_path(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(depth) + 1);
  const bool replaces_null = node->contains(tokens[depth]);
  ops_.push_back({{"op", replaces_null ? "replace" : "add"}, {"path", make_pointer(parent_path)}, {"value", nested}});
  (*node)[tokens[depth]] = std::move(nested);
}

void PatchBuilder::remove(const std::vector<std::string>& tokens) {
  if (tokens.empty()) return;
  Json* node = &current_;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    node = child(*node, tokens[i]);
    if (node == nullptr) return;
  }
  const std::string& last = tokens.back();
  if (node->is_object() && node->contains(last)) {
    ops_.push_back({{"op", "remove"}, {"path", make_pointer(tokens)}});
    node->erase(last);
  } else if (node->is_array()) {
    if (auto index = array_index(last); index && *index < node->size()) {
      ops_.push_back({{"op", "remove"}, {"path", make_pointer(tokens)}});
      node->erase(*index);
    }
  }
}

std::string field_path(std::string_view pointer) {
  std::string out;
  for (const auto& token : split_pointer(pointer)) {
    const bool index = !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
    if (index) {
      out += "[" + token + "]";
    } else if (token.find_first_of("./") != std::string::npos || token.empty()) {
      out += "[" + token + "]";
    } else {
      out += (out.empty() ? "" : ".") + token;
    }
  }
  return out;
}

}  // namespace sizeguard
