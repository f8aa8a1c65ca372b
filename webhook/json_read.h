// Parsing request bodies into the nlohmann::json tree the handlers read, about twice as
// fast as nlohmann's own parser (tests/bench/json_read_bench): simdjson validates and
// tokenizes, then the tree is built from its DOM. Same result as nlohmann::json::parse.
#pragma once

#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sizeguard {

// The parsed document, or nullopt if `text` is not valid JSON (nlohmann's verdict: inputs
// simdjson declines — nesting deeper than 1024, integers beyond 64 bits — are parsed by
// nlohmann, so the result never depends on which parser ran).
std::optional<nlohmann::json> parse_json(std::string_view text);

}  // namespace sizeguard
