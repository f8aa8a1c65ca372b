#include "policies/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>

#include "webhook/jsonpatch.h"
#include "webhook/workload.h"

namespace sizeguard {
namespace {

bool is_replicated_kind(WorkloadKind kind) {
  return kind == WorkloadKind::Deployment || kind == WorkloadKind::StatefulSet ||
         kind == WorkloadKind::ReplicaSet || kind == WorkloadKind::ReplicationController;
}

bool has_pod_template(WorkloadKind kind) {
  return pod_spec_pointer(kind).has_value() && kind != WorkloadKind::Pod;
}

// GPU counts are small and weights are fractions such as 1/7: compare with a tolerance
// far below any meaningful difference.
constexpr double kGpuEpsilon = 1e-9;

std::string format_count(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3f", value);
  std::string text = buffer;
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text;
}

// Everything rules read about the request, with cluster lookups done at most once and
// only when a rule needs them.
class Subject {
 public:
  Subject(const AdmissionRequest& request, ClusterState& state) : request_(request), state_(state) {
    is_scale_ = request.sub_resource == "scale";
    kind_ = is_scale_ ? workload_kind_from_resource(request.resource.resource)
                      : workload_kind_from(request.kind.kind);
    kind_name_ = is_scale_ ? std::string(to_string(kind_)) : request.kind.kind;
    if (kind_ == WorkloadKind::HorizontalPodAutoscaler) {
      const Json& target = object().value("/spec/scaleTargetRef/kind"_json_pointer, Json());
      if (target.is_string()) hpa_target_kind_ = target.get<std::string>();
    }
  }

  const AdmissionRequest& request() const { return request_; }
  const Json& object() const { return request_.subject(); }
  WorkloadKind kind() const { return kind_; }
  bool is_scale() const { return is_scale_; }

  bool kind_matches(const std::vector<std::string>& kinds) const {
    if (kinds.empty()) return true;
    auto listed = [&](const std::string& k) { return std::find(kinds.begin(), kinds.end(), k) != kinds.end(); };
    return listed(kind_name_) || (!hpa_target_kind_.empty() && listed(hpa_target_kind_));
  }

  const StateResult<Json>& namespace_labels() {
    if (!namespace_labels_) {
      namespace_labels_ = request_.namespace_.empty() ? StateResult<Json>(Json::object())
                                                      : state_.namespace_labels(request_.namespace_);
    }
    return *namespace_labels_;
  }

  // The object a Scale request scales: its labels and pod template live there.
  const StateResult<Json>& scale_parent() {
    if (!scale_parent_) {
      const auto& r = request_.resource;
      scale_parent_ = state_.get_object(r.group, r.version, r.resource, request_.namespace_, request_.name);
    }
    return *scale_parent_;
  }

  StateResult<Json> object_labels() {
    if (!is_scale_) return labels_of(object());
    const auto& parent = scale_parent();
    if (auto* error = std::get_if<ClusterStateError>(&parent)) {
      return ClusterStateError{"labels of the scaled " + kind_name_ + ": " + error->message};
    }
    return labels_of(std::get<Json>(parent));
  }

  StateResult<std::vector<Json>> active_pods() { return state_.active_pods(request_.namespace_); }

 private:
  const AdmissionRequest& request_;
  ClusterState& state_;
  bool is_scale_ = false;
  WorkloadKind kind_ = WorkloadKind::Other;
  std::string kind_name_;
  std::string hpa_target_kind_;
  std::optional<StateResult<Json>> namespace_labels_;
  std::optional<StateResult<Json>> scale_parent_;
};

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
    const bool any = std::any_of(m.namespaces.begin(), m.namespaces.end(),
                                 [&](const std::string& glob) { return glob_match(glob, request.namespace_); });
    if (!any) return false;
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

// Collects what one policy's rules find, then settles modes and outcomes.
struct RuleRun {
  RuleRun(const Policy& p, Subject& s, Decision& d, Mode m)
      : policy(p), subject(s), decision(d), mode(m), first_finding(d.findings.size()) {}

  const Policy& policy;
  Subject& subject;
  Decision& decision;
  Mode mode;

  void violation(const std::string& rule, std::string reason, const std::string& message, std::string field) {
    Finding f;
    f.policy = policy.name;
    f.rule = rule;
    f.mode = mode;
    f.cause = {std::move(reason), message + " (policy " + policy.name + ")", std::move(field)};
    deny_if_enforced.push_back(true);
    decision.findings.push_back(std::move(f));
  }

  // A rule that needed cluster state it could not get. Quota rules deny by default in
  // enforce mode: an unknown total must not let a namespace exceed its quota.
  void state_error(const std::string& rule, const ClusterStateError& error, bool quota_rule) {
    const OnStateError on_error = policy.on_cluster_state_error.value_or(
        quota_rule ? OnStateError::Deny : OnStateError::Allow);
    Finding f;
    f.policy = policy.name;
    f.rule = rule;
    f.cause = {"ClusterStateUnavailable",
               "rule " + rule + " of policy " + policy.name + " was not evaluated: cluster state unavailable (" +
                   error.message + ")" + (on_error == OnStateError::Deny ? "; onClusterStateError: deny" : ""),
               ""};
    deny_if_enforced.push_back(on_error == OnStateError::Deny);
    decision.findings.push_back(std::move(f));
  }

  // Settles the mode of this policy's findings; only then are namespace labels needed.
  void settle(Mode effective) {
    mode = effective;
    for (size_t i = 0; i < deny_if_enforced.size(); ++i) {
      Finding& f = decision.findings[first_finding + i];
      f.mode = mode;
      f.denies = mode == Mode::Enforce && deny_if_enforced[i];
    }
    for (const auto& [rule, count] : rule_findings) {
      std::string result = "pass";
      for (size_t i = count.first; i < count.second; ++i) {
        const Finding& f = decision.findings[first_finding + i];
        if (f.denies) {
          result = "deny";
          break;
        }
        result = f.cause.reason == "ClusterStateUnavailable" ? "error" : std::string(to_string(mode));
      }
      decision.outcomes.push_back({policy.name, rule, mode, result});
    }
  }

  void record_rule(const std::string& rule, size_t findings_before) {
    rule_findings.push_back({rule, {findings_before - first_finding, decision.findings.size() - first_finding}});
  }

  std::vector<bool> deny_if_enforced;  // parallel to this policy's findings
  size_t first_finding;
  std::vector<std::pair<std::string, std::pair<size_t, size_t>>> rule_findings;
};

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

bool replicas_apply(Subject& s) {
  const Operation op = s.request().operation;
  if (s.is_scale()) return op == Operation::Update && is_replicated_kind(s.kind());
  if (op != Operation::Create && op != Operation::Update) return false;
  return is_replicated_kind(s.kind()) || s.kind() == WorkloadKind::HorizontalPodAutoscaler;
}

void run_replicas(RuleRun& run, const ReplicaRule& rule) {
  Subject& s = run.subject;
  const Json& object = s.object();
  if (s.is_scale()) {
    check_replica_bounds(run, rule, replicas(object, WorkloadKind::Scale).value_or(0), "spec.replicas");
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
  } else if (auto value = replicas(object, s.kind())) {
    check_replica_bounds(run, rule, *value, "spec.replicas");
  }
}

// --- GPUs ----------------------------------------------------------------------------------

double container_gpus(const Json& container, const GpuRule& rule) {
  const Json& resources = container.value("resources", Json::object());
  double total = 0;
  for (const auto& gpu : rule.resources) {
    // Extended resources cannot be overcommitted: a limit implies an equal request.
    for (const char* field : {"limits", "requests"}) {
      const Json& values = resources.value(field, Json::object());
      auto it = values.is_object() ? values.find(gpu.name) : values.end();
      if (it == values.end()) continue;
      std::optional<Quantity> q;
      if (it->is_string()) q = Quantity::parse(it->get<std::string>());
      else if (it->is_number()) q = Quantity::parse(it->dump());
      if (q) total += q->as_double() * gpu.weight;
      break;
    }
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
      const Json& p = object.value("/spec/jobTemplate/spec/parallelism"_json_pointer, Json(1));
      return p.is_number_integer() ? p.get<int64_t>() : 1;
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
    double in_use = 0;
    for (const auto& pod : std::get<std::vector<Json>>(pods)) in_use += pod_gpus(pod, WorkloadKind::Pod, rule);
    if (in_use + per_pod > *rule.namespace_total + kGpuEpsilon) {
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
  return has_pod_template(s.kind()) && (op == Operation::Create || op == Operation::Update);
}

std::optional<Quantity> quantity_at(const Json& resources, const char* field, const std::string& name) {
  const Json& values = resources.value(field, Json::object());
  if (!values.is_object()) return std::nullopt;
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  if (it->is_string()) return Quantity::parse(it->get<std::string>());
  if (it->is_number()) return Quantity::parse(it->dump());
  return std::nullopt;
}

void run_resources(RuleRun& run, const ResourceRule& rule) {
  Subject& s = run.subject;
  for (const auto& c : containers(s.object(), s.kind())) {
    if (c.type == ContainerType::Ephemeral) continue;
    const Json& resources = c.node->value("resources", Json::object());
    const std::string where = std::string(to_string(c.type)) + " " + c.name;
    const std::string base = c.pointer + "/resources";
    auto request_of = [&](const std::string& name) {
      // The apiserver defaults a missing request to the limit, so a limit alone counts.
      auto request = quantity_at(resources, "requests", name);
      return request ? request : quantity_at(resources, "limits", name);
    };
    for (const auto& name : rule.required_requests) {
      if (!request_of(name)) {
        run.violation("resources", "MissingRequest", where + " has no " + name + " request",
                      field_path(base + "/requests/" + escape_pointer_token(name)));
      }
    }
    for (const auto& name : rule.required_limits) {
      if (!quantity_at(resources, "limits", name)) {
        run.violation("resources", "MissingLimit", where + " has no " + name + " limit",
                      field_path(base + "/limits/" + escape_pointer_token(name)));
      }
    }
    for (const auto& [name, ratio] : rule.max_limit_request_ratio) {
      auto request = quantity_at(resources, "requests", name);
      auto limit = quantity_at(resources, "limits", name);
      if (!request || !limit) continue;
      const bool exceeded = request->is_zero() ? !limit->is_zero()
                                               : limit->as_double() > request->as_double() * ratio * (1 + 1e-12);
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
        auto value = quantity_at(resources, field, name);
        if (value && *value < minimum) {
          run.violation("resources", "ResourceBelowMin",
                        where + ": " + name + " " + kind + " " + value->to_string() + " is below the minimum of " +
                            minimum.to_string(),
                        field_path(base + "/" + field + "/" + escape_pointer_token(name)));
        }
      }
      for (const auto& [name, maximum] : rule.max) {
        auto value = quantity_at(resources, field, name);
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

bool Decision::allowed() const {
  return std::none_of(findings.begin(), findings.end(), [](const Finding& f) { return f.denies; });
}

Decision evaluate_policies(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state,
                           const EvaluationOptions& options) {
  Decision decision;
  if (request.operation == Operation::Connect || request.subject().is_null()) return decision;
  Subject subject(request, state);

  for (const Policy& policy : policies.policies) {
    MatchResult matched = matches(policy.match, subject);
    if (std::holds_alternative<bool>(matched) && std::get<bool>(matched) && policy.exclude) {
      MatchResult excluded = matches(*policy.exclude, subject);
      if (auto* error = std::get_if<ClusterStateError>(&excluded)) matched = *error;
      else if (std::get<bool>(excluded)) matched = false;
    }
    if (std::holds_alternative<bool>(matched) && !std::get<bool>(matched)) continue;

    struct Rule {
      const char* name;
      bool present;
      bool applies;
      bool quota;
      std::function<void(RuleRun&)> run;
    };
    const Rule rules[] = {
        {"replicas", policy.replicas.has_value(), replicas_apply(subject), false,
         [&](RuleRun& r) { run_replicas(r, *policy.replicas); }},
        {"gpu", policy.gpu.has_value(), gpu_applies(subject), true, [&](RuleRun& r) { run_gpu(r, *policy.gpu); }},
        {"resources", policy.resources.has_value(), resources_apply(subject), false,
         [&](RuleRun& r) { run_resources(r, *policy.resources); }},
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
    run.settle(run.deny_if_enforced.empty() ? provisional : effective_mode(policy, subject, options, decision));
  }
  return decision;
}

}  // namespace sizeguard
