#include "webhook/app/handlers.h"

#include <algorithm>

#include "kube/workload.h"

namespace sizeguard {
namespace {

constexpr size_t kMaxMessages = 10;   // violations spelled out in status.message
constexpr size_t kMaxCauses = 100;    // entries in status.details.causes
constexpr size_t kMaxWarnings = 50;   // kubectl prints each one
// An audit record must stay one readable line: a Pod with 10,000 containers would write
// megabytes per review (and hold the log's lock meanwhile). Lists keep their first
// entries and count the rest; a patch over the limit is summarised.
constexpr size_t kMaxAuditListEntries = 200;
constexpr size_t kMaxAuditPatchBytes = 64 * 1024;

// A pod with thousands of containers must not produce a multi-megabyte answer: the
// first warnings are sent, the rest counted.
void cap_warnings(std::vector<std::string>& warnings, std::string_view where_the_rest_are) {
  if (warnings.size() <= kMaxWarnings) return;
  const size_t more = warnings.size() - (kMaxWarnings - 1);
  warnings.resize(kMaxWarnings - 1);
  warnings.push_back("sizeguard: ... and " + std::to_string(more) + " more warnings (see " +
                     std::string(where_the_rest_are) + ")");
}

std::string subject_description(const AdmissionRequest& request) {
  std::string kind = request.sub_resource.empty() ? request.kind.kind
                                                  : request.resource.resource + "/" + request.sub_resource;
  std::string name = request.display_name().empty() ? "(unnamed)" : request.display_name();
  return kind + " " + (request.namespace_.empty() ? "" : request.namespace_ + "/") + name;
}

// Audit annotation keys must be qualified names of at most 63 characters.
std::string audit_key(const Finding& finding) {
  std::string key = finding.rule + "-" + finding.policy;
  if (key.size() > 63) key.resize(63);
  while (!key.empty() && !std::isalnum(static_cast<unsigned char>(key.back()))) key.pop_back();
  return key;
}

Json findings_json(const Decision& decision) {
  Json out = Json::array();
  for (const auto& f : decision.findings) {
    if (out.size() == kMaxAuditListEntries) break;
    out.push_back({{"policy", f.policy},
                   {"rule", f.rule},
                   {"mode", to_string(f.mode)},
                   {"reason", f.cause.reason},
                   {"message", f.cause.message},
                   {"field", f.cause.field},
                   {"denies", f.denies}});
  }
  return out;
}

bool controller_made_pod(const WorkloadView& view) {
  return view.kind == WorkloadKind::Pod && view.controller_owned;
}

}  // namespace

void describe_handler_metrics(Metrics& metrics) {
  metrics.describe("sizeguard_rightsizing_total", MetricType::Counter,
                   "Right-sizing evaluations by mode and result (patched, reported, unchanged).");
  metrics.describe("sizeguard_policy_decisions_total", MetricType::Counter,
                   "Policy rule evaluations by policy, rule, effective mode and result "
                   "(pass, deny, warn, audit, error).");
  describe_gpu_reservation_metrics(metrics);
}

AdmissionResponse to_admission_response(const AdmissionRequest& request, const Decision& decision) {
  AdmissionResponse response;
  response.uid = request.uid;
  std::vector<const Finding*> denials;
  for (const auto& f : decision.findings) {
    if (f.denies) {
      denials.push_back(&f);
    } else if (f.mode == Mode::Audit) {
      response.audit_annotations[audit_key(f)] = f.cause.reason + ": " + f.cause.message;
    } else {
      response.warnings.push_back("sizeguard: " + std::string(f.mode == Mode::Warn ? "[warn] " : "") +
                                  f.cause.reason + ": " + f.cause.message);
    }
  }
  for (const auto& note : decision.notes) response.warnings.push_back("sizeguard: " + note);
  cap_warnings(response.warnings, "the audit log");
  if (!denials.empty()) {
    response.allowed = false;
    Status status;
    status.code = 403;
    status.reason = "Forbidden";
    // kubectl prints only the message: it starts with the reason codes, each once, in the
    // order of the causes ("[BelowFloor, MissingChangeReason] sizeguard denied ...").
    std::vector<std::string> codes;
    for (const Finding* f : denials) {
      if (std::find(codes.begin(), codes.end(), f->cause.reason) == codes.end()) codes.push_back(f->cause.reason);
    }
    status.message = "[";
    for (size_t i = 0; i < codes.size(); ++i) status.message += (i ? ", " : "") + codes[i];
    status.message += "] sizeguard denied " + subject_description(request) + ": ";
    for (size_t i = 0; i < denials.size() && i < kMaxMessages; ++i) {
      status.message += (i ? "; " : "") + denials[i]->cause.message;
    }
    if (denials.size() > kMaxMessages) {
      status.message += "; and " + std::to_string(denials.size() - kMaxMessages) + " more violations";
    }
    for (size_t i = 0; i < denials.size() && i < kMaxCauses; ++i) status.causes.push_back(denials[i]->cause);
    if (denials.size() > kMaxCauses) {
      status.causes.push_back({"TooManyViolations",
                               std::to_string(denials.size() - kMaxCauses) + " more violations not listed", ""});
    }
    response.status = std::move(status);
  }
  return response;
}

AdmissionResponse mutate(const AdmissionRequest& request, AdmissionContext& context) {
  AdmissionResponse response;
  response.uid = request.uid;
  if (!context.policies || !context.cluster_state || !context.rightsizing) return response;
  const auto policies = context.policies();
  EvaluationOptions options = context.evaluation;
  options.now = context.clock();
  const WorkloadView view = workload_view(request);  // once per request, read by every stage
  const RightsizingResult result = rightsize(request, view, *policies, *context.cluster_state, context.rightsizing(), options);
  if (!result.applies) return response;

  const bool apply = result.mode == Mode::Enforce;
  if (apply && !result.patch.empty()) response.patch = result.patch;
  // A Pod a controller creates (a ReplicaSet's, a Job's) has no one to read its warnings but
  // the controller, which logs each one: the per-container lines stay in the annotation and
  // the audit log, the apiserver does not carry them. Notes about problems are still sent.
  std::vector<std::string> warnings =
      context.quiet_controller_pods && controller_made_pod(view) ? std::vector<std::string>{} : result.warnings;
  std::vector<std::string> all = result.warnings;  // the audit line keeps them all (capped)
  for (const auto& note : result.notes) {
    warnings.push_back("sizeguard: " + note);
    all.push_back("sizeguard: " + note);
  }
  cap_warnings(warnings, "the sizeguard.io/rightsized annotation and the audit log");
  cap_warnings(all, "the sizeguard.io/rightsized annotation");
  response.warnings = std::move(warnings);
  if (context.report) context.report->record(request, result);
  if (context.metrics) {
    const std::string outcome = result.changes.empty() ? "unchanged" : apply ? "patched" : "reported";
    context.metrics->increment("sizeguard_rightsizing_total",
                               {{"mode", std::string(to_string(result.mode))}, {"result", outcome}});
  }
  if (context.audit && context.audit->enabled()) {
    Json record = audit_record_base(request, "mutate");
    Json changes = Json::array();
    for (const auto& c : result.changes) {
      if (changes.size() == kMaxAuditListEntries) break;
      changes.push_back({{"container", c.container},
                         {"resource", c.resource},
                         {"field", c.field},
                         {"before", c.before ? c.before->to_string() : ""},
                         {"after", c.after ? c.after->to_string() : ""}});
    }
    Json rightsizing = {{"policy", result.policy},
                        {"mode", to_string(result.mode)},
                        {"workload", result.workload},
                        {"replicas", result.replicas},
                        {"coldStart", result.cold_start},
                        {"changes", std::move(changes)},
                        {"cpuCores", {{"current", result.cpu_before}, {"recommended", result.cpu_after}}},
                        {"memoryBytes", {{"current", result.memory_before}, {"recommended", result.memory_after}}}};
    if (result.changes.size() > kMaxAuditListEntries) {
      rightsizing["omittedChanges"] = result.changes.size() - kMaxAuditListEntries;
    }
    const std::string patch_key = apply ? "patch" : "wouldPatch";
    if (const std::size_t bytes = result.patch.dump().size(); bytes <= kMaxAuditPatchBytes) {
      rightsizing[patch_key] = result.patch;
    } else {
      rightsizing[patch_key + "Omitted"] = {{"operations", result.patch.size()}, {"bytes", bytes}};
    }
    record["rightsizing"] = std::move(rightsizing);
    record["allowed"] = true;
    record["warnings"] = all;
    context.audit->write(record);
  }
  return response;
}

AdmissionResponse validate(const AdmissionRequest& request, AdmissionContext& context) {
  if (!context.policies || !context.cluster_state) {
    AdmissionResponse response;
    response.uid = request.uid;
    return response;
  }
  const auto policies = context.policies();
  EvaluationOptions options = context.evaluation;
  options.now = context.clock();
  Decision decision = evaluate_policies(request, workload_view(request), *policies, *context.cluster_state, options);
  GpuReservationRun gpu_reservations;
  if (context.gpu_reservations) gpu_reservations = reserve_gpus(decision, *context.gpu_reservations, request, options.now);
  if (context.budgets) {
    spend_budgets(decision, *context.budgets, request, options.now);
  } else {
    if (!decision.budget_charges.empty()) {
      decision.notes.push_back("change budgets not evaluated: no cluster access to count changes");
    }
    if (!decision.reason_claims.empty()) {
      decision.notes.push_back("change reasons not checked for reuse: no cluster access to record them");
    }
  }
  if (context.gpu_reservations) settle_gpu_reservations(gpu_reservations, decision, *context.gpu_reservations, request);
  AdmissionResponse response = to_admission_response(request, decision);
  if (context.report) context.report->validated(request, response.allowed);
  if (context.metrics) {
    count_gpu_reservations(gpu_reservations, *context.metrics);
    for (const auto& o : decision.outcomes) {
      context.metrics->increment("sizeguard_policy_decisions_total",
                                 {{"policy", o.policy}, {"rule", o.rule}, {"mode", std::string(to_string(o.mode))},
                                  {"result", o.result}});
    }
  }
  if (context.audit && context.audit->enabled()) {
    Json record = audit_record_base(request, "validate");
    record["allowed"] = response.allowed;
    record["policies"] = policies->policies.size();
    record["findings"] = findings_json(decision);
    if (decision.findings.size() > kMaxAuditListEntries) {
      record["omittedFindings"] = decision.findings.size() - kMaxAuditListEntries;
    }
    for (const auto& [key, value] : decision.audit_fields) record[key] = value;
    record["warnings"] = response.warnings;
    if (response.status) record["message"] = response.status->message;
    context.audit->write(record);
  }
  return response;
}

}  // namespace sizeguard
