#include "kube/json_read.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <simdjson.h>

namespace sizeguard {

namespace {

using Json = nlohmann::json;

// decode_admission_review skips its depth pre-scan when simdjson accepted a body.
static_assert(simdjson::DEFAULT_MAX_DEPTH <= kMaxJsonDepth);

// Bodies up to this size reuse one parser per thread; larger ones get a parser of their
// own, so a single 3 MiB review does not leave megabytes of buffers on every worker.
constexpr size_t kReusedParserCapacity = 256 * 1024;

// The keys of the pointers to leave out, split at '/': a pointer is followed while the
// object keys on the way match its segments, and the member at its last segment is skipped.
using OmitPaths = std::vector<std::vector<std::string_view>>;

OmitPaths split_pointers(std::initializer_list<std::string_view> pointers) {
  OmitPaths out;
  for (std::string_view pointer : pointers) {
    std::vector<std::string_view> segments;
    while (pointer.starts_with('/')) {
      pointer.remove_prefix(1);
      const size_t end = std::min(pointer.find('/'), pointer.size());
      segments.push_back(pointer.substr(0, end));
      pointer.remove_prefix(end);
    }
    if (!segments.empty()) out.push_back(std::move(segments));
  }
  return out;
}

// `active`: the pointers whose first `depth` segments led here (empty almost everywhere).
Json to_json(simdjson::dom::element element, const std::vector<const std::vector<std::string_view>*>& active = {},
             size_t depth = 0) {
  using Type = simdjson::dom::element_type;
  switch (element.type()) {
    case Type::OBJECT: {
      Json object(nlohmann::json::value_t::object);
      std::vector<const std::vector<std::string_view>*> below;
      for (auto field : simdjson::dom::object(element)) {
        below.clear();
        bool omitted = false;
        for (const auto* path : active) {
          if ((*path)[depth] != field.key) continue;
          if (path->size() == depth + 1) omitted = true;
          else below.push_back(path);
        }
        if (omitted) {
          object.erase(std::string(field.key));  // a repeated key: the last one wins, and it is omitted
          continue;
        }
        // operator[] so a repeated key keeps its last value, as nlohmann's parser does.
        object[std::string(field.key)] = below.empty() ? to_json(field.value) : to_json(field.value, below, depth + 1);
      }
      return object;
    }
    case Type::ARRAY: {
      Json array(nlohmann::json::value_t::array);
      simdjson::dom::array items(element);
      array.get_ref<Json::array_t&>().reserve(items.size());
      for (auto item : items) array.push_back(to_json(item));
      return array;
    }
    case Type::STRING: return Json(std::string(element.get_string().value_unsafe()));
    case Type::INT64: {
      // nlohmann stores every integer without a minus sign as unsigned.
      const int64_t value = element.get_int64().value_unsafe();
      return value >= 0 ? Json(static_cast<uint64_t>(value)) : Json(value);
    }
    case Type::UINT64: return Json(element.get_uint64().value_unsafe());
    case Type::DOUBLE: return Json(element.get_double().value_unsafe());
    case Type::BOOL: return Json(element.get_bool().value_unsafe());
    case Type::NULL_VALUE: return Json(nullptr);
  }
  return Json();
}

std::optional<Json> parse_with_simdjson(std::string_view text, const OmitPaths& omit) {
  thread_local simdjson::dom::parser reused;
  simdjson::dom::parser once;
  simdjson::dom::parser& parser = text.size() <= kReusedParserCapacity ? reused : once;
  simdjson::dom::element root;
  if (parser.parse(text.data(), text.size(), /*realloc_if_needed=*/true).get(root) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  std::vector<const std::vector<std::string_view>*> active;
  for (const auto& path : omit) active.push_back(&path);
  return to_json(root, active, 0);
}

// The nlohmann fallback builds everything; the omitted members are erased afterwards.
void erase_paths(Json& document, const OmitPaths& omit) {
  for (const auto& path : omit) {
    Json* at = &document;
    for (size_t i = 0; at && i + 1 < path.size(); ++i) {
      auto it = at->is_object() ? at->find(std::string(path[i])) : at->end();
      at = it == at->end() ? nullptr : &*it;
    }
    if (at && at->is_object()) at->erase(std::string(path.back()));
  }
}

}  // namespace

std::optional<Json> parse_json(std::string_view text) { return parse_json(text, {}); }

std::optional<Json> parse_json(std::string_view text, std::initializer_list<std::string_view> omit) {
  if (auto parsed = parse_json_simdjson(text, omit)) return parsed;
  return parse_json_nlohmann(text, omit);
}

std::optional<Json> parse_json_simdjson(std::string_view text, std::initializer_list<std::string_view> omit) {
  return parse_with_simdjson(text, split_pointers(omit));
}

std::optional<Json> parse_json_nlohmann(std::string_view text, std::initializer_list<std::string_view> omit) {
  Json document = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return std::nullopt;
  erase_paths(document, split_pointers(omit));
  return document;
}

std::optional<size_t> json_too_deep_at(std::string_view body) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      // Most of a Kubernetes object is string contents: jump to the next quote (memchr) and
      // skip it if an odd run of backslashes escapes it. The run cannot reach past the
      // string's opening quote, which is not a backslash.
      const void* quote = std::memchr(body.data() + i, '"', body.size() - i);
      if (!quote) return std::nullopt;
      i = static_cast<size_t>(static_cast<const char*>(quote) - body.data());
      size_t backslashes = 0;
      while (body[i - 1 - backslashes] == '\\') ++backslashes;
      if (backslashes % 2 == 0) in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::nullopt;
}

}  // namespace sizeguard
