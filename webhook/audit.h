// The audit trail: one JSON object per line for every admission decision, to a file
// (appended, flushed per line, so `tail -f` and log shippers see whole records) or stdout.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include "kube/review.h"

namespace sizeguard {

class AuditLog {
 public:
  // "-" writes to stdout; "" disables the log. Throws std::runtime_error if the file
  // cannot be opened.
  explicit AuditLog(const std::string& destination);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  bool enabled() const { return out_ != nullptr; }
  void write(const Json& record);

 private:
  std::mutex mutex_;
  std::FILE* out_ = nullptr;
  bool owned_ = false;
};

// The fields every audit record starts with, taken from the request.
Json audit_record_base(const AdmissionRequest& request, std::string_view webhook);

}  // namespace sizeguard
