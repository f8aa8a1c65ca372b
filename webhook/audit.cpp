#include "webhook/audit.h"
#include "kube/utc_time.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace sizeguard {

AuditLog::AuditLog(const std::string& destination, std::optional<LineWriterOptions> buffered) {
  if (destination.empty()) return;
  if (destination == "-") {
    out_ = stdout;
  } else {
    out_ = std::fopen(destination.c_str(), "a");
    if (!out_) throw std::runtime_error("--audit-log " + destination + ": cannot open for appending: " + std::strerror(errno));
    owned_ = true;
  }
  if (buffered) {
    std::fflush(out_);  // anything stdio holds goes first
    buffered->thread_name = "sg-audit";
    writer_ = std::make_unique<LineWriter>(fileno(out_), std::move(*buffered));
  }
}

AuditLog::~AuditLog() {
  writer_.reset();
  if (owned_ && out_) std::fclose(out_);
}

void AuditLog::flush() {
  if (writer_) writer_->flush();
}

void AuditLog::write(const Json& record) {
  if (!out_) return;
  std::string line = record.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += '\n';
  if (writer_) {
    writer_->write(line);  // a drop is counted by the writer and reported through on_drop
    return;
  }
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

Json audit_record_base(const AdmissionRequest& request, std::string_view webhook) {
  // Members are emplaced into the map: an initializer list would first build a two-element
  // array per member (twice the allocations, on every review).
  Json record(Json::value_t::object);
  auto& members = record.get_ref<Json::object_t&>();
  members.emplace("time", format_utc(std::chrono::system_clock::now(), UtcPrecision::Milliseconds));
  members.emplace("webhook", webhook);
  members.emplace("uid", request.uid);
  members.emplace("kind", request.kind.kind);
  members.emplace("resource", request.resource.resource);
  members.emplace("subResource", request.sub_resource);
  members.emplace("namespace", request.namespace_);
  members.emplace("name", request.display_name());
  members.emplace("operation", to_string(request.operation));
  members.emplace("user", request.user_info.username);
  members.emplace("groups", request.user_info.groups);
  members.emplace("dryRun", request.dry_run);
  return record;
}

}  // namespace sizeguard
