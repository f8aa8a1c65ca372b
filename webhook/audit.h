// The audit trail: one JSON object per line for every admission decision, to a file
// (appended, whole lines only, so `tail -f` and log shippers see whole records) or stdout.
// Written at once (flushed per line) by default; `serve` buffers it (LineWriter): lines
// reach the file within LineWriterOptions::delay, a crash loses at most that much, and
// lines the destination cannot take in time are dropped and counted, never silently.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "kube/review.h"
#include "webhook/line_writer.h"

namespace sizeguard {

class AuditLog {
 public:
  // "-" writes to stdout; "" disables the log. Throws std::runtime_error if the file
  // cannot be opened.
  explicit AuditLog(const std::string& destination, std::optional<LineWriterOptions> buffered = std::nullopt);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  bool enabled() const { return out_ != nullptr; }
  void write(const Json& record);
  // Everything written so far is in the file (buffered mode); a no-op otherwise.
  void flush();
  // Records dropped because the buffer was full (buffered mode).
  std::uint64_t dropped() const { return writer_ ? writer_->dropped() : 0; }

 private:
  std::mutex mutex_;
  std::unique_ptr<LineWriter> writer_;  // destroyed (flushed) before out_ is closed
  std::FILE* out_ = nullptr;
  bool owned_ = false;
};

// The fields every audit record starts with, taken from the request.
Json audit_record_base(const AdmissionRequest& request, std::string_view webhook);

}  // namespace sizeguard
