#include "webhook/logging.h"
#include "kube/utc_time.h"

#include <cstdio>
#include <ctime>
#include <stdexcept>

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace sizeguard {
namespace {

// Structured fields travel inside the spdlog payload, after the message, so that one
// formatter renders both plain spdlog calls and log_event lines:
//   message ( kFieldStart key (kStringValue | kNumberValue) value )*
constexpr char kFieldStart = '\x1f';
constexpr char kStringValue = '\x1e';
constexpr char kNumberValue = '\x1d';

bool is_separator(char c) { return c == kFieldStart || c == kStringValue || c == kNumberValue; }

struct ParsedField {
  std::string_view key, value;
  bool number = false;
};

// Splits a payload into its message and fields; a payload without fields is all message.
std::string_view split_payload(std::string_view payload, std::vector<ParsedField>& fields) {
  size_t start = payload.find(kFieldStart);
  std::string_view message = payload.substr(0, start);
  while (start != std::string_view::npos) {
    size_t end = payload.find(kFieldStart, start + 1);
    std::string_view field = payload.substr(start + 1, end == std::string_view::npos ? end : end - start - 1);
    size_t mark = field.find_first_of(std::string_view("\x1e\x1d", 2));
    if (mark != std::string_view::npos) {
      fields.push_back({field.substr(0, mark), field.substr(mark + 1), field[mark] == kNumberValue});
    }
    start = end;
  }
  return message;
}

void append(spdlog::memory_buf_t& dest, std::string_view text) { dest.append(text.data(), text.data() + text.size()); }

void append_time(spdlog::memory_buf_t& dest, spdlog::log_clock::time_point time) {
  append(dest, format_utc(time, UtcPrecision::Milliseconds));
}

// Length of the valid UTF-8 sequence starting at text[i], or 0 if it is not valid.
size_t utf8_sequence_length(std::string_view text, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char lead = byte(i);
  size_t length = lead >= 0xF0 && lead <= 0xF4 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 && lead <= 0xDF ? 2 : 0;
  if (length == 0 || lead > 0xF4 || i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  // Overlong forms, UTF-16 surrogates and code points past U+10FFFF.
  if ((lead == 0xE0 && byte(i + 1) < 0xA0) || (lead == 0xED && byte(i + 1) > 0x9F) ||
      (lead == 0xF0 && byte(i + 1) < 0x90) || (lead == 0xF4 && byte(i + 1) > 0x8F)) {
    return 0;
  }
  return length;
}

// A JSON string; bytes that are not valid UTF-8 (hostile input quoted in an error) become
// U+FFFD so every line stays parseable.
void append_json_string(spdlog::memory_buf_t& dest, std::string_view text) {
  dest.push_back('"');
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      size_t length = utf8_sequence_length(text, i);
      if (length == 0) {
        append(dest, "\xEF\xBF\xBD");
      } else {
        append(dest, text.substr(i, length));
        i += length - 1;
      }
      continue;
    }
    switch (c) {
      case '"': append(dest, "\\\""); break;
      case '\\': append(dest, "\\\\"); break;
      case '\n': append(dest, "\\n"); break;
      case '\r': append(dest, "\\r"); break;
      case '\t': append(dest, "\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          append(dest, escaped);
        } else {
          dest.push_back(c);
        }
    }
  }
  dest.push_back('"');
}

// A logfmt value: invalid UTF-8 becomes U+FFFD (log shippers refuse such lines), control
// characters become spaces, and inside quotes `"` and `\` are escaped.
void append_text_value(spdlog::memory_buf_t& dest, std::string_view text, bool quoted) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      const size_t length = utf8_sequence_length(text, i);
      append(dest, length == 0 ? std::string_view("\xEF\xBF\xBD") : text.substr(i, length));
      i += length == 0 ? 0 : length - 1;
      continue;
    }
    if (quoted && (c == '"' || c == '\\')) dest.push_back('\\');
    dest.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
  }
}

bool needs_quotes(std::string_view value) {
  if (value.empty()) return true;
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

class TextFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::vector<ParsedField> fields;
    std::string_view message = split_payload(std::string_view(msg.payload.data(), msg.payload.size()), fields);
    append_time(dest, msg.time);
    dest.push_back(' ');
    auto level = spdlog::level::to_string_view(msg.level);
    append(dest, std::string_view(level.data(), level.size()));
    dest.push_back(' ');
    append_text_value(dest, message, false);
    for (const auto& field : fields) {
      dest.push_back(' ');
      append(dest, field.key);
      dest.push_back('=');
      const bool quoted = !field.number && needs_quotes(field.value);
      if (quoted) dest.push_back('"');
      append_text_value(dest, field.value, quoted);
      if (quoted) dest.push_back('"');
    }
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<TextFormatter>(); }
};

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::vector<ParsedField> fields;
    std::string_view message = split_payload(std::string_view(msg.payload.data(), msg.payload.size()), fields);
    append(dest, "{\"time\":\"");
    append_time(dest, msg.time);
    append(dest, "\",\"level\":");
    auto level = spdlog::level::to_string_view(msg.level);
    append_json_string(dest, std::string_view(level.data(), level.size()));
    append(dest, ",\"msg\":");
    append_json_string(dest, message);
    for (const auto& field : fields) {
      dest.push_back(',');
      append_json_string(dest, field.key);
      dest.push_back(':');
      if (field.number) {
        append(dest, field.value);
      } else {
        append_json_string(dest, field.value);
      }
    }
    append(dest, "}\n");
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

class BufferedSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  BufferedSink(int fd, LineWriterOptions options) : writer_(fd, std::move(options)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    writer_.write(std::string_view(line.data(), line.size()));
  }
  void flush_() override { writer_.flush(); }

 private:
  LineWriter writer_;
};

std::string format_millis(std::chrono::nanoseconds latency) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3f", static_cast<double>(latency.count()) / 1e6);
  return buffer;
}

}  // namespace

LogFormat parse_log_format(std::string_view text) {
  if (text == "text") return LogFormat::Text;
  if (text == "json") return LogFormat::Json;
  throw std::invalid_argument("unknown log format '" + std::string(text) + "': expected text or json");
}

spdlog::level::level_enum parse_log_level(std::string_view text) {
  for (int level = spdlog::level::trace; level < spdlog::level::n_levels; ++level) {
    auto name = spdlog::level::to_string_view(static_cast<spdlog::level::level_enum>(level));
    if (text == std::string_view(name.data(), name.size())) return static_cast<spdlog::level::level_enum>(level);
  }
  if (text == "warn" || text == "warning") return spdlog::level::warn;
  throw std::invalid_argument("unknown log level '" + std::string(text) +
                              "': expected trace, debug, info, warn, error, critical or off");
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, LogFormat format, spdlog::sink_ptr sink) {
  if (!sink) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
  if (format == LogFormat::Json) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_formatter(std::make_unique<TextFormatter>());
  }
  return logger;
}

spdlog::sink_ptr make_buffered_sink(int fd, LineWriterOptions options) {
  return std::make_shared<BufferedSink>(fd, std::move(options));
}

void describe_log_drop_metric(Metrics& metrics) {
  metrics.describe(kLogLinesDropped, MetricType::Counter,
                   "Log lines dropped because the destination did not keep up (buffered logs: the process log "
                   "of serve and the audit log).");
  metrics.increment(kLogLinesDropped, {{"log", "audit"}}, 0);
  metrics.increment(kLogLinesDropped, {{"log", "process"}}, 0);
}

void log_event(spdlog::logger& logger, spdlog::level::level_enum level, std::string_view message,
               std::initializer_list<LogField> fields) {
  if (!logger.should_log(level)) return;
  std::size_t size = message.size();
  for (const auto& field : fields) size += field.key.size() + field.value.size() + 2;
  std::string payload;
  payload.reserve(size);
  payload += message;
  for (const auto& field : fields) {
    payload += kFieldStart;
    payload += field.key;
    payload += field.number ? kNumberValue : kStringValue;
    for (char c : field.value) payload += is_separator(c) ? '?' : c;
  }
  logger.log(level, spdlog::string_view_t(payload.data(), payload.size()));
}

void log_decision(spdlog::logger& logger, const DecisionRecord& record) {
  const auto level = !record.request ? spdlog::level::warn : record.response ? spdlog::level::info : spdlog::level::err;
  if (!logger.should_log(level)) return;  // the fields below are not worth formatting
  const std::string latency = format_millis(record.latency);
  const std::string_view decision = decision_label(record);
  if (!record.request) {
    log_event(logger, level, "admission request rejected",
              {{"webhook", to_string(record.webhook)},
               {"status", std::to_string(record.http_status), true},
               {"decision", decision},
               {"error", record.error},
               {"latency_ms", latency, true}});
    return;
  }
  const AdmissionRequest& request = *record.request;
  std::string_view reason;
  if (record.response && record.response->status) {
    const Status& status = *record.response->status;
    reason = status.causes.empty() ? status.reason : status.causes.front().reason;
  }
  if (!record.error.empty()) reason = record.error;
  log_event(logger, level, "admission decision",
            {{"webhook", to_string(record.webhook)},
             {"uid", request.uid},
             {"kind", request.kind.kind},
             {"namespace", request.namespace_},
             {"name", request.display_name()},
             {"operation", to_string(request.operation)},
             {"username", request.user_info.username},
             {"dry_run", request.dry_run ? "true" : "false", true},
             {"decision", decision},
             {"reason", reason},
             {"latency_ms", latency, true}});
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned code) {
    char escaped[8];
    std::snprintf(escaped, sizeof escaped, "\\u%04x", code);
    out += escaped;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t length = utf8_sequence_length(text, i);
      if (length == 0) {
        out += "\xEF\xBF\xBD";
      } else if (length == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0) {
        escape(static_cast<unsigned char>(text[i + 1]));  // C1 controls: U+0080..U+009F (0x9B is CSI)
        i += 1;
      } else {
        out.append(text.substr(i, length));
        i += length - 1;
      }
    } else if (c < 0x20 || c == 0x7F) {
      escape(c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace sizeguard
