#include "webhook/audit.h"
#include "kube/utc_time.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace sizeguard {

AuditLog::AuditLog(const std::string& destination) {
  if (destination.empty()) return;
  if (destination == "-") {
    out_ = stdout;
    return;
  }
  out_ = std::fopen(destination.c_str(), "a");
  if (!out_) throw std::runtime_error("--audit-log " + destination + ": cannot open for appending: " + std::strerror(errno));
  owned_ = true;
}

AuditLog::~AuditLog() {
  if (owned_ && out_) std::fclose(out_);
}

void AuditLog::write(const Json& record) {
  if (!out_) return;
  const std::string line = record.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

Json audit_record_base(const AdmissionRequest& request, std::string_view webhook) {
  Json record = {
      {"time", format_utc(std::chrono::system_clock::now(), UtcPrecision::Milliseconds)},
      {"webhook", webhook},
      {"uid", request.uid},
      {"kind", request.kind.kind},
      {"resource", request.resource.resource},
      {"subResource", request.sub_resource},
      {"namespace", request.namespace_},
      {"name", request.display_name()},
      {"operation", to_string(request.operation)},
      {"user", request.user_info.username},
      {"groups", request.user_info.groups},
      {"dryRun", request.dry_run},
  };
  return record;
}

}  // namespace sizeguard
