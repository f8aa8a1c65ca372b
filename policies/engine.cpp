#include "policies/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>

#include "policies/rules.h"
#include "kube/jsonpatch.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

using namespace rules;

// true/false, or the cluster state error that kept us from knowing.
using MatchResult = std::variant<bool, ClusterStateError>;

MatchResult matches(const MatchCriteria& m, Subject& subject) {
  const AdmissionRequest& request = subject.request();
  if (!m.operations.empty() &&
      std::find(m.operations.begin(), m.operations.end(), request.operation) == m.operations.end()) {
    return false;
  }
  if (!subject.kind_matches(m.kinds)) return false;
  if (!m.namespaces.empty()) {
    if (!glob_match_any(m.namespaces, request.namespace_)) return false;
  }
  if (m.namespace_selector && !m.namespace_selector->empty()) {
    const auto& labels = subject.namespace_labels();
    if (auto* error = std::get_if<ClusterStateError>(&labels)) {
      return ClusterStateError{"labels of namespace " + request.namespace_ + ": " + error->message};
    }
    if (!m.namespace_selector->matches(std::get<Json>(labels))) return false;
  }
  if (m.object_selector && !m.object_selector->empty()) {
    auto labels = subject.object_labels();
    if (auto* error = std::get_if<ClusterStateError>(&labels)) return *error;
    if (!m.object_selector->matches(std::get<Json>(labels))) return false;
  }
  return true;
}

// --- replicas ---------------------------------------------------------------------------

void check_replica_bounds(RuleRun& run, const ReplicaRule& rule, int64_t value, const std::string& field) {
  if (rule.min && value < *rule.min) {
    run.violation("replicas", "ReplicasBelowMin",
                  field + " is " + std::to_string(value) + ", below the minimum of " +
                      std::to_string(*rule.min),
                  field);
  }
  if (rule.max && value > *rule.max) {
    run.violation("replicas", "ReplicasAboveMax",
                  field + " is " + std::to_string(value) + ", above the maximum of " +
                      std::to_string(*rule.max),
                  field);
  }
}

// Replica bounds judge what people and agents size: a Deployment, not the ReplicaSets its
// controller creates and scales during a rollout (nor their */scale).
bool replicas_apply(Subject& s) {
  const Operation op = s.request().operation;
  if (s.is_scale()) return op == Operation::Update && is_replicated_kind(s.kind()) && !s.controller_owned();
  if (op != Operation::Create && op != Operation::Update) return false;
  return (is_replicated_kind(s.kind()) || s.kind() == WorkloadKind::HorizontalPodAutoscaler) && !s.controller_owned();
}

void run_replicas(RuleRun& run, const ReplicaRule& rule) {
  Subject& s = run.subject;
  const Json& object = s.object();
  if (s.is_scale()) {
    check_replica_bounds(run, rule, s.view().replicas.value_or(0), "spec.replicas");
  } else if (s.kind() == WorkloadKind::HorizontalPodAutoscaler) {
    const Json& spec = object.value("spec", Json::object());
    const Json& min_replicas = spec.value("minReplicas", Json(1));  // the apiserver's default
    const Json& max_replicas = spec.value("maxReplicas", Json());
    if (min_replicas.is_number_integer()) {
      check_replica_bounds(run, rule, min_replicas.get<int64_t>(), "spec.minReplicas");
    }
    if (max_replicas.is_number_integer()) {
      check_replica_bounds(run, rule, max_replicas.get<int64_t>(), "spec.maxReplicas");
    }
  } else if (auto value = s.view().replicas) {
    check_replica_bounds(run, rule, *value, "spec.replicas");
  }
}

// --- GPUs ----------------------------------------------------------------------------------

double container_gpus(const Json& container, const GpuRule& rule) {
  const Json& resources = container.value("resources", Json::object());
  double total = 0;
  for (const auto& gpu : rule.resources) {
    // Extended resources cannot be overcommitted: a limit implies an equal request.
    auto count = resource_quantity(resources, "limits", gpu.name);
    if (!count) count = resource_quantity(resources, "requests", gpu.name);
    if (count) total += count->as_double() * gpu.weight;
  }
  return total;
}

// The pod's GPU footprint as the scheduler sees it: init containers run one at a time
// before the app containers, native sidecars run alongside everything after them.
double pod_gpus(const Json& pod_object, WorkloadKind kind, const GpuRule& rule) {
  double running = 0, peak_init = 0, sidecars = 0;
  for (const auto& c : containers(pod_object, kind)) {
    const double gpus = container_gpus(*c.node, rule);
    switch (c.type) {
      case ContainerType::Regular: running += gpus; break;
      case ContainerType::Sidecar: sidecars += gpus; break;
      case ContainerType::Init: peak_init = std::max(peak_init, sidecars + gpus); break;
      case ContainerType::Ephemeral: break;  // ephemeral containers cannot request resources
    }
  }
  return std::max(running + sidecars, peak_init);
}

std::optional<int64_t> workload_pods(const Json& object, WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::Pod: return 1;
    case WorkloadKind::CronJob: {
      const Json* p = json_at(object, "/spec/jobTemplate/spec/parallelism");
      return p && p->is_number_integer() ? p->get<int64_t>() : 1;
    }
    case WorkloadKind::DaemonSet: return std::nullopt;  // one per node: unknown here
    default: return replicas(object, kind);
  }
}

bool gpu_applies(Subject& s) {
  const Operation op = s.request().operation;
  if (s.is_scale()) return op == Operation::Update && has_pod_template(s.kind());
  if (s.kind() == WorkloadKind::Pod) return op == Operation::Create;
  return has_pod_template(s.kind()) && (op == Operation::Create || op == Operation::Update);
}

void run_gpu(RuleRun& run, const GpuRule& rule) {
  Subject& s = run.subject;
  const Json* pod_source = &s.object();
  if (s.is_scale()) {
    // A Scale carries only replicas: the pod template is the parent's.
    const auto& parent = s.scale_parent();
    if (auto* error = std::get_if<ClusterStateError>(&parent)) {
      run.state_error("gpu", ClusterStateError{"the scaled " + std::string(to_string(s.kind())) + ": " + error->message}, true);
      return;
    }
    pod_source = &std::get<Json>(parent);
  }
  const std::string spec_path = field_path(*pod_spec_pointer(s.kind()));

  if (rule.max_per_container) {
    for (const auto& c : containers(*pod_source, s.kind())) {
      if (c.type == ContainerType::Ephemeral) continue;
      const double gpus = container_gpus(*c.node, rule);
      if (gpus > *rule.max_per_container + kGpuEpsilon) {
        run.violation("gpu", "GPUQuotaExceeded",
                      std::string(to_string(c.type)) + " " + c.name + " asks " + format_count(gpus) +
                          " GPUs, above the maximum of " + format_count(*rule.max_per_container) + " per container",
                      field_path(c.pointer + "/resources"));
      }
    }
  }
  const double per_pod = pod_gpus(*pod_source, s.kind(), rule);
  if (per_pod <= 0) return;
  if (rule.max_per_pod && per_pod > *rule.max_per_pod + kGpuEpsilon) {
    run.violation("gpu", "GPUQuotaExceeded",
                  "each pod asks " + format_count(per_pod) + " GPUs, above the maximum of " +
                      format_count(*rule.max_per_pod) + " per pod",
                  spec_path);
  }
  if (rule.max_per_workload && s.kind() != WorkloadKind::Pod) {
    const auto pods = s.is_scale() ? replicas(s.object(), WorkloadKind::Scale) : workload_pods(s.object(), s.kind());
    if (pods) {
      const double total = per_pod * static_cast<double>(*pods);
      if (total > *rule.max_per_workload + kGpuEpsilon) {
        run.violation("gpu", "GPUQuotaExceeded",
                      std::to_string(*pods) + " pods x " + format_count(per_pod) + " GPUs = " +
                          format_count(total) + " GPUs, above the maximum of " +
                          format_count(*rule.max_per_workload) + " per workload",
                      s.is_scale() || s.kind() != WorkloadKind::Job ? "spec.replicas" : "spec.parallelism");
      }
    }
  }
  if (rule.namespace_total && s.kind() == WorkloadKind::Pod) {
    auto pods = s.active_pods();
    if (auto* error = std::get_if<ClusterStateError>(&pods)) {
      run.state_error("gpu", ClusterStateError{"pods in namespace " + s.request().namespace_ + ": " + error->message}, true);
      return;
    }
    // Pods admitted but not created yet are not among the pods: the webhook reserves
    // each admitted pod's GPUs (gpu_reservations.h).
    GpuCharge charge;
    charge.policy = run.policy.name;
    charge.namespace_ = s.request().namespace_;
    charge.pod = s.object().value("/metadata/name"_json_pointer, std::string());
    charge.gpus = per_pod;
    charge.limit = *rule.namespace_total;
    charge.rule = rule;
    charge.deny_on_state_error = run.policy.on_cluster_state_error.value_or(OnStateError::Deny) == OnStateError::Deny;
    if (charge.pod.empty()) charge.pod = s.request().name;
    if (charge.pod.empty()) {  // the apiserver generates the name after admission
      charge.pod = s.object().value("/metadata/generateName"_json_pointer, std::string());
      charge.generated = true;
    }
    double in_use = 0;
    for (const auto& pod : std::get<std::vector<Json>>(pods)) in_use += pod_gpus(pod, WorkloadKind::Pod, rule);
    const bool over = in_use + per_pod > *rule.namespace_total + kGpuEpsilon;
    charge.over_limit = over;
    run.decision.gpu_charges.push_back(std::move(charge));
    if (over) {
      run.violation("gpu", "GPUQuotaExceeded",
                    "namespace " + s.request().namespace_ + ": " + format_count(in_use) + " of " +
                        format_count(*rule.namespace_total) + " GPUs in use, this pod asks " + format_count(per_pod),
                    spec_path);
    }
  }
}

// --- resource requirements ----------------------------------------------------------------

bool resources_apply(Subject& s) {
  const Operation op = s.request().operation;
  if (s.is_scale()) return false;
  if (s.kind() == WorkloadKind::Pod) return op == Operation::Create;  // pod resources are immutable
  // An owned workload's template is its owner's (a Deployment's ReplicaSet, a CronJob's
  // Job), judged there; Pods are judged even when a controller makes them.
  return has_pod_template(s.kind()) && (op == Operation::Create || op == Operation::Update) && !s.controller_owned();
}


void run_resources(RuleRun& run, const ResourceRule& rule) {
  Subject& s = run.subject;
  for (const auto& c : s.view().containers) {
    if (c.type == ContainerType::Ephemeral) continue;
    const Json& resources = c.node->value("resources", Json::object());
    const std::string where = std::string(to_string(c.type)) + " " + c.name;
    const std::string base = c.pointer + "/resources";
    auto request_of = [&](const std::string& name) {
      // The apiserver defaults a missing request to the limit, so a limit alone counts.
      auto request = resource_quantity(resources, "requests", name);
      return request ? request : resource_quantity(resources, "limits", name);
    };
    for (const auto& name : rule.required_requests) {
      if (!request_of(name)) {
        run.violation("resources", "MissingRequest", where + " has no " + name + " request",
                      field_path(base + "/requests/" + escape_pointer_token(name)));
      }
    }
    for (const auto& name : rule.required_limits) {
      if (!resource_quantity(resources, "limits", name)) {
        run.violation("resources", "MissingLimit", where + " has no " + name + " limit",
                      field_path(base + "/limits/" + escape_pointer_token(name)));
      }
    }
    for (const auto& [name, ratio] : rule.max_limit_request_ratio) {
      auto request = resource_quantity(resources, "requests", name);
      auto limit = resource_quantity(resources, "limits", name);
      if (!request || !limit) continue;
      const bool exceeded = request->is_zero() ? !limit->is_zero()
                                               : limit->ratio_to(*request) > ratio * (1 + 1e-12);
      if (exceeded) {
        run.violation("resources", "LimitRatioExceeded",
                      where + ": " + name + " limit " + limit->to_string() + " is more than " + format_count(ratio) +
                          " x its request " + request->to_string(),
                      field_path(base + "/limits/" + escape_pointer_token(name)));
      }
    }
    for (const char* field : {"requests", "limits"}) {
      const std::string kind = field == std::string("requests") ? "request" : "limit";
      for (const auto& [name, minimum] : rule.min) {
        auto value = resource_quantity(resources, field, name);
        if (value && *value < minimum) {
          run.violation("resources", "ResourceBelowMin",
                        where + ": " + name + " " + kind + " " + value->to_string() + " is below the minimum of " +
                            minimum.to_string(),
                        field_path(base + "/" + field + "/" + escape_pointer_token(name)));
        }
      }
      for (const auto& [name, maximum] : rule.max) {
        auto value = resource_quantity(resources, field, name);
        if (value && *value > maximum) {
          run.violation("resources", "ResourceAboveMax",
                        where + ": " + name + " " + kind + " " + value->to_string() + " is above the maximum of " +
                            maximum.to_string(),
                        field_path(base + "/" + field + "/" + escape_pointer_token(name)));
        }
      }
    }
  }
}

// match minus exclude.
MatchResult policy_matches(const Policy& policy, Subject& subject) {
  MatchResult matched = matches(policy.match, subject);
  if (std::holds_alternative<bool>(matched) && std::get<bool>(matched) && policy.exclude) {
    MatchResult excluded = matches(*policy.exclude, subject);
    if (auto* error = std::get_if<ClusterStateError>(&excluded)) return *error;
    if (std::get<bool>(excluded)) return false;
  }
  return matched;
}

Mode effective_mode(const Policy& policy, Subject& subject, const EvaluationOptions& options, Decision& decision) {
  Mode mode = policy.mode.value_or(options.default_mode);
  const auto& labels = subject.namespace_labels();
  if (auto* error = std::get_if<ClusterStateError>(&labels)) {
    const std::string note = "namespace labels unavailable, so the " + std::string(kModeLabel) +
                             " label was not applied: " + error->message;
    if (std::find(decision.notes.begin(), decision.notes.end(), note) == decision.notes.end()) {
      decision.notes.push_back(note);
    }
    return mode;
  }
  const Json& value = std::get<Json>(labels).value(kModeLabel, Json());
  if (value.is_string()) {
    if (auto label_mode = mode_from(value.get<std::string>())) return *label_mode;
    const std::string note = "namespace " + subject.request().namespace_ + " has an invalid " + kModeLabel +
                             " label \"" + value.get<std::string>() + "\" (expected enforce, warn or audit); ignored";
    if (std::find(decision.notes.begin(), decision.notes.end(), note) == decision.notes.end()) {
      decision.notes.push_back(note);
    }
  }
  return mode;
}

}  // namespace

double rules::pod_gpu_count(const Json& pod, const GpuRule& rule) { return pod_gpus(pod, WorkloadKind::Pod, rule); }

StatusCause state_unavailable_cause(const std::string& subject, const std::string& detail, bool deny) {
  return {"ClusterStateUnavailable",
          subject + ": cluster state unavailable (" + detail + ")" + (deny ? "; onClusterStateError: deny" : ""), ""};
}

bool Decision::allowed() const {
  return std::none_of(findings.begin(), findings.end(), [](const Finding& f) { return f.denies; });
}

std::variant<bool, ClusterStateError> policy_applies(const Policy& policy, const AdmissionRequest& request,
                                                     const WorkloadView& view, ClusterState& state) {
  if (request.operation == Operation::Connect || request.subject().is_null()) return false;
  Subject subject(request, view, state);
  return policy_matches(policy, subject);
}

Decision evaluate_policies(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state,
                           const EvaluationOptions& options) {
  return evaluate_policies(request, workload_view(request), policies, state, options);
}

Decision evaluate_policies(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                           ClusterState& state, const EvaluationOptions& options) {
  Decision decision;
  if (request.operation == Operation::Connect || request.subject().is_null()) return decision;
  Subject subject(request, view, state);

  for (const Policy& policy : policies.policies) {
    MatchResult matched = policy_matches(policy, subject);
    if (std::holds_alternative<bool>(matched) && !std::get<bool>(matched)) continue;

    struct Rule {
      const char* name;
      bool present;
      bool applies;
      bool quota;
      std::function<void(RuleRun&)> run;
    };
    const Rule rules[] = {
        {"replicas", policy.replicas.has_value(), policy.replicas && replicas_apply(subject), false,
         [&](RuleRun& r) { run_replicas(r, *policy.replicas); }},
        {"gpu", policy.gpu.has_value(), gpu_applies(subject), true, [&](RuleRun& r) { run_gpu(r, *policy.gpu); }},
        {"resources", policy.resources.has_value(), policy.resources && resources_apply(subject), false,
         [&](RuleRun& r) { run_resources(r, *policy.resources); }},
        {"automation", policy.automation.has_value(), policy.automation && automation_applies(subject), false,
         [&](RuleRun& r) { run_automation(r, *policy.automation, options); }},
    };
    bool any_rule = false;
    for (const auto& rule : rules) any_rule = any_rule || (rule.present && rule.applies);
    if (!any_rule) continue;

    const Mode provisional = policy.mode.value_or(options.default_mode);
    RuleRun run(policy, subject, decision, provisional);
    auto* match_error = std::get_if<ClusterStateError>(&matched);
    for (const auto& rule : rules) {
      if (!rule.present || !rule.applies) continue;
      const size_t before = decision.findings.size();
      // Unknown whether the policy applies: report each rule that would have run.
      if (match_error) run.state_error(rule.name, *match_error, rule.quota);
      else rule.run(run);
      run.record_rule(rule.name, before);
    }
    const bool charges = std::any_of(decision.budget_charges.begin(), decision.budget_charges.end(),
                                     [&](const BudgetCharge& c) { return c.policy == policy.name; }) ||
                         std::any_of(decision.reason_claims.begin(), decision.reason_claims.end(),
                                     [&](const ReasonClaim& c) { return c.policy == policy.name; }) ||
                         std::any_of(decision.gpu_charges.begin(), decision.gpu_charges.end(),
                                     [&](const GpuCharge& c) { return c.policy == policy.name; });
    run.settle(run.deny_if_enforced.empty() && !charges ? provisional
                                                        : effective_mode(policy, subject, options, decision));
    for (auto& charge : decision.budget_charges) {
      if (charge.policy == policy.name) charge.mode = run.mode;
    }
    for (auto& claim : decision.reason_claims) {
      if (claim.policy == policy.name) claim.mode = run.mode;
    }
    for (auto& charge : decision.gpu_charges) {
      if (charge.policy == policy.name) charge.mode = run.mode;
    }
  }
  return decision;
}

}  // namespace sizeguard
