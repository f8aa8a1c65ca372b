// UTC timestamps as sizeguard writes them everywhere (logs, audit lines, model metadata,
// snapshots, reports): RFC 3339 with a "Z".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace sizeguard {

enum class UtcPrecision { Seconds, Milliseconds };

// "2026-11-23T14:40:01Z" or, with milliseconds, "2026-11-23T14:40:01.120Z".
std::string format_utc(std::chrono::system_clock::time_point time, UtcPrecision precision = UtcPrecision::Seconds);
// The same for a Unix time in seconds.
std::string format_utc(std::int64_t epoch_seconds);

}  // namespace sizeguard
