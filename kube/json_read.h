// Parsing request bodies into the nlohmann::json tree the handlers read, about twice as
// fast as nlohmann's own parser (tests/bench/json_read_bench): simdjson validates and
// tokenizes, then the tree is built from its DOM. Same result as nlohmann::json::parse.
#pragma once

#include <initializer_list>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sizeguard {

// The parsed document, or nullopt if `text` is not valid JSON (nlohmann's verdict: inputs
// simdjson declines — nesting deeper than 1024, integers beyond 64 bits — are parsed by
// nlohmann, so the result never depends on which parser ran).
std::optional<nlohmann::json> parse_json(std::string_view text);

// parse_json without the members at `omit`, JSON pointers through object keys only (no array
// indices, no ~ escapes), e.g. "/request/object/metadata/managedFields": the same tree as
// parse_json followed by erasing them, but they are never built, so a large subtree nobody
// reads costs no allocations. A pointer whose path is missing or not made of objects omits
// nothing.
std::optional<nlohmann::json> parse_json(std::string_view text, std::initializer_list<std::string_view> omit);

// parse_json's two steps, for a caller that checks the text between them (the depth pre-scan
// below costs a pass over the text, and is needed only when simdjson declined it): simdjson's
// tree (nullopt when it declines: invalid JSON, nesting deeper than 1024 levels, integers
// beyond 64 bits), then nlohmann's verdict.
std::optional<nlohmann::json> parse_json_simdjson(std::string_view text, std::initializer_list<std::string_view> omit);
std::optional<nlohmann::json> parse_json_nlohmann(std::string_view text, std::initializer_list<std::string_view> omit);

// Go's encoding/json (so the apiserver) refuses JSON nested deeper than this. Deeper
// documents would overflow the stack later, in nlohmann's recursive copies and dumps, so
// every reader checks it first.
constexpr std::size_t kMaxJsonDepth = 10000;

// The byte offset where `text` opens its (kMaxJsonDepth + 1)th nested array or object, if
// it does. Brackets inside strings do not count.
std::optional<std::size_t> json_too_deep_at(std::string_view text);

}  // namespace sizeguard
