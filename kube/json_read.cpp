#include "kube/json_read.h"

#include <cstring>

#include <simdjson.h>

namespace sizeguard {

namespace {

using Json = nlohmann::json;

// Bodies up to this size reuse one parser per thread; larger ones get a parser of their
// own, so a single 3 MiB review does not leave megabytes of buffers on every worker.
constexpr size_t kReusedParserCapacity = 256 * 1024;

Json to_json(simdjson::dom::element element) {
  using Type = simdjson::dom::element_type;
  switch (element.type()) {
    case Type::OBJECT: {
      Json object(nlohmann::json::value_t::object);
      // operator[] so a repeated key keeps its last value, as nlohmann's parser does.
      for (auto field : simdjson::dom::object(element)) object[std::string(field.key)] = to_json(field.value);
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

std::optional<Json> parse_with_simdjson(std::string_view text) {
  thread_local simdjson::dom::parser reused;
  simdjson::dom::parser once;
  simdjson::dom::parser& parser = text.size() <= kReusedParserCapacity ? reused : once;
  simdjson::dom::element root;
  if (parser.parse(text.data(), text.size(), /*realloc_if_needed=*/true).get(root) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return to_json(root);
}

}  // namespace

std::optional<Json> parse_json(std::string_view text) {
  if (auto parsed = parse_with_simdjson(text)) return parsed;
  Json document = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return std::nullopt;
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
