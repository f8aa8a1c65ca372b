// Process logs through spdlog in one of two line formats:
//   text: 2026-11-22T13:55:05.123Z info admission decision uid=... kind=Pod decision=allowed
//   json: {"time":"2026-11-22T13:55:05.123Z","level":"info","msg":"admission decision","uid":...}
// Plain spdlog calls (spdlog::info("...")) render in the same format; log_event adds
// structured key/value fields.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/common.h>

#include "webhook/line_writer.h"
#include "webhook/server.h"

namespace sizeguard {

enum class LogFormat { Text, Json };

// "text" or "json"; throws std::invalid_argument naming the accepted values.
LogFormat parse_log_format(std::string_view text);
// "trace", "debug", "info", "warn", "error", "critical", "off"; throws std::invalid_argument.
spdlog::level::level_enum parse_log_level(std::string_view text);

// A logger writing to `sink` (stderr when null) in the given format.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name, LogFormat format,
                                            spdlog::sink_ptr sink = nullptr);

// Fields are views: log_event copies them into the line before it returns, so temporaries
// in the call's braces (std::to_string(...)) live long enough, and no field is copied twice.
struct LogField {
  std::string_view key;
  std::string_view value;
  bool number = false;  // rendered unquoted in JSON (value must be a JSON number)
};

// A sink that formats on the caller's thread and writes through a LineWriter to `fd`
// (serve's process log: one write(2) per batch instead of per line). The sink owns the
// writer; flush() waits for the lines so far. Pair with logger->flush_on(err) so errors
// are out before a crash.
spdlog::sink_ptr make_buffered_sink(int fd, LineWriterOptions options);

// sizeguard_log_lines_dropped_total{log="process"|"audit"}: lines a buffered log dropped
// because its destination did not keep up (the counter stays visible when logs cannot).
inline constexpr const char* kLogLinesDropped = "sizeguard_log_lines_dropped_total";
void describe_log_drop_metric(Metrics& metrics);

// One line: the message plus fields, rendered by the logger's format.
void log_event(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view message,
               std::initializer_list<LogField> fields);

// `text` made safe for a terminal, as the JSON log escapes it: C0 and C1 control
// characters and DEL become \u001b-style escapes (a crafted file cannot recolour, retitle
// or erase the terminal, nor start a fake line), invalid UTF-8 becomes U+FFFD. For
// human-readable output of input-derived text (`review`, `policy lint`).
std::string printable(std::string_view text);

// One line per decision: webhook, uid, kind, namespace, name (or generateName), operation,
// username, decision, reason, dry_run, latency_ms; invalid bodies log at warn with the error.
void log_decision(spdlog::logger& logger, const DecisionRecord& record);

}  // namespace sizeguard
