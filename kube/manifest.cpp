#include "kube/manifest.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include "kube/json_read.h"

namespace sizeguard {
namespace {

constexpr std::string_view kTagPrefix = "tag:yaml.org,2002:";

// A YAML document JSON cannot hold (a key that is not a scalar, excessive aliasing, an
// alias inside its own anchor); carries the position for the error message.
struct KeyError : std::invalid_argument {
  KeyError(const std::string& what, YAML::Mark where) : std::invalid_argument(what), mark(where) {}
  YAML::Mark mark;
};

// go-yaml's guard against alias bombs (and so kubectl's): past 100 alias-expanded nodes
// and 1000 nodes in all, at most this share of the nodes may come from aliases: 99% up to
// 400,000 nodes, falling to 10% at 4,000,000.
double allowed_alias_ratio(std::uint64_t decoded) {
  constexpr double kLow = 400'000, kHigh = 4'000'000;
  if (static_cast<double>(decoded) <= kLow) return 0.99;
  if (static_cast<double>(decoded) >= kHigh) return 0.10;
  return 0.99 - 0.89 * ((static_cast<double>(decoded) - kLow) / (kHigh - kLow));
}

// Deeper than yaml-cpp's own parser goes (500): reached only through an alias that
// contains itself, which would otherwise recurse forever.
constexpr int kMaxYamlDepth = 1000;

// yaml-cpp gives an alias the very node of its anchor, with no flag; a node met a second
// time (same position and type) is an alias, and everything below it counts as expanded.
struct Expansion {
  std::uint64_t decoded = 0, aliased = 0;
  int alias_depth = 0, depth = 0;
  std::unordered_set<std::uint64_t> seen;

  // Counts `node`; returns whether it is an alias (the caller then leaves alias_depth).
  bool enter(const YAML::Node& node) {
    const YAML::Mark mark = node.Mark();
    bool alias = false;
    if (!mark.is_null() && mark.pos >= 0 && !node.IsNull()) {
      const std::uint64_t key = (static_cast<std::uint64_t>(mark.pos) << 3) | static_cast<std::uint64_t>(node.Type());
      alias = !seen.insert(key).second;
    }
    if (alias) ++alias_depth;
    ++decoded;
    if (alias_depth > 0) ++aliased;
    if (aliased > 100 && decoded > 1000 &&
        static_cast<double>(aliased) / static_cast<double>(decoded) > allowed_alias_ratio(decoded)) {
      throw KeyError("document contains excessive aliasing", mark);
    }
    if (++depth > kMaxYamlDepth) throw KeyError("an alias contains itself (or nesting is too deep)", mark);
    return alias;
  }
  void leave(bool alias) {
    --depth;
    if (alias) --alias_depth;
  }
};

Json to_json(const YAML::Node& node, Expansion& expansion);

bool all_digits(std::string_view text, int base) {
  if (text.empty()) return false;
  for (char c : text) {
    bool ok = base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) != 0
                         : c >= '0' && c < static_cast<char>('0' + base);
    if (!ok) return false;
  }
  return true;
}

// YAML 1.2 core schema integers: [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+.
std::optional<Json> parse_integer(std::string_view text) {
  bool negative = false;
  std::string_view digits = text;
  int base = 10;
  if (digits.starts_with("0x")) {
    base = 16;
    digits.remove_prefix(2);
  } else if (digits.starts_with("0o")) {
    base = 8;
    digits.remove_prefix(2);
  } else if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) {
    negative = digits.front() == '-';
    digits.remove_prefix(1);
  }
  if (!all_digits(digits, base)) return std::nullopt;
  uint64_t magnitude = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
  if (ec == std::errc::result_out_of_range || end != digits.data() + digits.size()) {
    if (base != 10) return std::nullopt;
    return Json(std::strtod(std::string(text).c_str(), nullptr));
  }
  constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (negative) {
    if (magnitude <= kMaxInt64) return Json(-static_cast<int64_t>(magnitude));
    if (magnitude == kMaxInt64 + 1) return Json(std::numeric_limits<int64_t>::min());
    return Json(-static_cast<double>(magnitude));
  }
  if (magnitude <= kMaxInt64) return Json(static_cast<int64_t>(magnitude));
  return Json(magnitude);
}

// YAML 1.2 core schema floats: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
// (.inf and .nan are left to the caller: JSON has no such numbers).
std::optional<Json> parse_float(std::string_view text) {
  size_t i = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    return i - start;
  };
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
  size_t integer_digits = digits();
  size_t fraction_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    fraction_digits = digits();
  }
  if (integer_digits == 0 && fraction_digits == 0) return std::nullopt;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
    if (digits() == 0) return std::nullopt;
  }
  if (i != text.size()) return std::nullopt;
  return Json(std::strtod(std::string(text).c_str(), nullptr));
}

std::optional<Json> parse_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return Json(true);
  if (text == "false" || text == "False" || text == "FALSE") return Json(false);
  return std::nullopt;
}

bool is_null_text(std::string_view text) {
  return text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL";
}

// A plain (unquoted) scalar resolved with the core schema.
Json resolve_plain(const std::string& text) {
  if (is_null_text(text)) return nullptr;
  if (auto value = parse_bool(text)) return *value;
  if (auto value = parse_integer(text)) return *value;
  if (auto value = parse_float(text)) return *value;
  return text;
}

Json scalar_to_json(const YAML::Node& node) {
  const std::string& tag = node.Tag();
  const std::string& text = node.Scalar();
  if (tag == "?") return resolve_plain(text);
  if (tag == "!") return text;  // quoted or block scalar
  if (std::string_view(tag).starts_with(kTagPrefix)) {
    std::string_view type = std::string_view(tag).substr(kTagPrefix.size());
    if (type == "str" || type == "binary" || type == "timestamp") return text;
    if (type == "null" && is_null_text(text)) return nullptr;
    if (type == "bool") {
      if (auto value = parse_bool(text)) return *value;
    }
    if (type == "int") {
      if (auto value = parse_integer(text)) return *value;
    }
    if (type == "float") {
      if (auto value = parse_float(text)) return Json(value->get<double>());
    }
    return text;  // the tag does not fit the text: keep the text
  }
  return resolve_plain(text);  // an application tag (!foo): resolve like a plain scalar
}

void merge_into(Json& target, const Json& source) {
  if (!source.is_object()) return;
  for (auto it = source.begin(); it != source.end(); ++it) {
    if (!target.contains(it.key())) target[it.key()] = it.value();
  }
}

std::string position(int first_line, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return "";
  return "line " + std::to_string(first_line + mark.line + 1) + ", column " + std::to_string(mark.column + 1) + ": ";
}

bool is_document_marker(std::string_view line) {
  return line.starts_with("---") &&
         (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r' || line[3] == '\n');
}

// True when the text holds only blank lines, comments and directives.
bool has_no_content(std::string_view text) {
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    size_t first = line.find_first_not_of(" \t\r");
    if (first != std::string::npos && line[first] != '#' && line[first] != '%') return false;
  }
  return true;
}

}  // namespace

std::vector<YamlChunk> split_yaml_documents(std::string_view text) {
  std::vector<YamlChunk> chunks(1);
  size_t pos = 0;
  int line_number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    size_t next = end == std::string_view::npos ? text.size() : end + 1;
    std::string_view line = text.substr(pos, next - pos);
    if (is_document_marker(line)) {
      chunks.push_back({"   " + std::string(line.substr(3)), line_number});
    } else {
      chunks.back().text += line;
    }
    pos = next;
    ++line_number;
  }
  // Comments or directives before the first "---" are not a document of their own.
  if (chunks.size() > 1 && has_no_content(chunks.front().text)) chunks.erase(chunks.begin());
  return chunks;
}

namespace {

std::optional<std::string> object_problem(const Json& object) {
  if (!object.is_object()) {
    return std::string("not a Kubernetes object: expected a mapping, got ") +
           (object.is_array() ? "a list" : "a " + std::string(object.type_name()));
  }
  for (const char* field : {"kind", "apiVersion"}) {
    auto it = object.find(field);
    if (it == object.end() || it->is_null()) return std::string("not a Kubernetes object: missing ") + field;
    if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
      return std::string("not a Kubernetes object: ") + field + " must be a non-empty string";
    }
  }
  return std::nullopt;
}

// Adds the object, or the items of a List, to `out`; returns an error message otherwise.
std::optional<std::string> collect(Json object, const std::string& where, const std::string& source, int index,
                                   std::vector<ManifestDocument>& out) {
  if (auto problem = object_problem(object)) return where + *problem;
  const auto& kind = object["kind"].get_ref<const std::string&>();
  auto items = object.find("items");
  bool has_items = items != object.end() && items->is_array();
  if (kind == "List" || (kind.ends_with("List") && has_items)) {
    if (items != object.end() && !items->is_null() && !has_items) return where + "items must be a list";
    if (!has_items) return std::nullopt;
    for (size_t i = 0; i < items->size(); ++i) {
      if (auto error = collect(std::move((*items)[i]), where + "items[" + std::to_string(i) + "]: ", source, index, out)) {
        return error;
      }
    }
    return std::nullopt;
  }
  out.push_back({std::move(object), source, index});
  return std::nullopt;
}

std::string prefix(const std::string& source, int index) { return source + "[" + std::to_string(index) + "]: "; }

// nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 5: ..." ->
// "line 1, column 5: ...".
std::string json_error_text(const std::string& what) {
  std::string text = what;
  if (auto bracket = text.find("] "); text.starts_with("[json.exception") && bracket != std::string::npos) {
    text.erase(0, bracket + 2);
  }
  if (text.starts_with("parse error at ")) text.erase(0, std::string_view("parse error at ").size());
  return text;
}

}  // namespace

namespace {

Json to_json_unguarded(const YAML::Node& node, Expansion& expansion) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      if (node.Tag() == std::string(kTagPrefix) + "str") return "";
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      Json out = Json::array();
      for (const auto& item : node) out.push_back(to_json(item, expansion));
      return out;
    }
    case YAML::NodeType::Map: {
      Json out = Json::object();
      std::vector<Json> merges;
      for (const auto& entry : node) {
        const YAML::Node& key = entry.first;
        if (key.IsScalar() && key.Tag() == "?" && key.Scalar() == "<<") {
          merges.push_back(to_json(entry.second, expansion));
          continue;
        }
        if (!key.IsScalar() && !key.IsNull()) throw KeyError("mapping key is not a scalar", key.Mark());
        out[key.IsNull() ? std::string("null") : key.Scalar()] = to_json(entry.second, expansion);
      }
      // "<<: *base" or "<<: [*a, *b]": keys of the mapping itself win, then earlier merges.
      for (const Json& merge : merges) {
        if (merge.is_array()) {
          for (const Json& item : merge) merge_into(out, item);
        } else {
          merge_into(out, merge);
        }
      }
      return out;
    }
  }
  return nullptr;
}

Json to_json(const YAML::Node& node, Expansion& expansion) {
  const bool alias = expansion.enter(node);
  Json out = to_json_unguarded(node, expansion);
  expansion.leave(alias);
  return out;
}

}  // namespace

Json yaml_to_json(const YAML::Node& node) {
  Expansion expansion;
  return to_json(node, expansion);
}

std::variant<std::vector<ManifestDocument>, ManifestError> parse_manifests(std::string_view text,
                                                                           const std::string& source) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  std::vector<ManifestDocument> documents;

  // JSON: one object (YAML would read it too, but JSON numbers and errors are exact).
  std::optional<std::string> json_error;
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && (text[first] == '{' || text[first] == '[')) {
    if (const auto at = json_too_deep_at(text)) {
      return ManifestError{prefix(source, 0) + "JSON nests arrays and objects more than " +
                           std::to_string(kMaxJsonDepth) + " levels deep (at byte " + std::to_string(*at) + ")"};
    }
    try {
      Json object = Json::parse(text);
      if (auto error = collect(std::move(object), prefix(source, 0), source, 0, documents)) {
        return ManifestError{*error};
      }
      return documents;
    } catch (const Json::parse_error& e) {
      json_error = json_error_text(e.what());  // maybe YAML flow style: try YAML next
    } catch (const Json::out_of_range& e) {  // a number no double holds (1e400)
      std::string what = json_error_text(e.what());
      if (what.size() > 200) what = what.substr(0, 200) + "...";
      return ManifestError{prefix(source, 0) + "JSON " + what};
    }
  }

  int index = 0;
  for (const YamlChunk& chunk : split_yaml_documents(text)) {
    const int document = index++;
    Json object;
    try {
      YAML::Node node = YAML::Load(chunk.text);
      if (node.IsNull() && node.Tag().empty()) continue;  // empty document (comments only)
      object = yaml_to_json(node);
    } catch (const KeyError& e) {
      return ManifestError{prefix(source, document) + position(chunk.first_line, e.mark) + e.what()};
    } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own message is "bad file"
      return ManifestError{prefix(source, document) + position(chunk.first_line, e.mark) + "nested more than " +
                           std::to_string(e.depth()) + " levels deep"};
    } catch (const YAML::Exception& e) {
      if (json_error && document == 0) return ManifestError{prefix(source, document) + *json_error};
      return ManifestError{prefix(source, document) + position(chunk.first_line, e.mark) + e.msg};
    }
    if (object.is_null()) continue;
    if (auto error = collect(std::move(object), prefix(source, document), source, document, documents)) {
      return ManifestError{*error};
    }
  }
  return documents;
}

std::variant<std::vector<ManifestDocument>, ManifestError> read_manifests(const std::string& path) {
  std::ostringstream contents;
  if (path == "-") {
    contents << std::cin.rdbuf();
    if (std::cin.bad()) return ManifestError{"cannot read standard input"};
    return parse_manifests(contents.str(), path);
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return ManifestError{"cannot read " + path + ": is a directory"};
  std::ifstream in(path, std::ios::binary);
  if (!in) return ManifestError{"cannot read " + path + ": " + std::strerror(errno)};
  contents << in.rdbuf();
  if (in.bad()) return ManifestError{"cannot read " + path + ": " + std::strerror(errno)};
  return parse_manifests(contents.str(), path);
}

}  // namespace sizeguard
