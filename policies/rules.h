// Internal to policies/: what the rule implementations share (engine.cpp, automation.cpp).
// Not part of the public interface (that is engine.h).
#pragma once

#include <algorithm>
#include <cstdio>
#include <optional>
#include <variant>
#include <string>
#include <vector>

#include "policies/engine.h"
#include "kube/workload.h"

namespace sizeguard::rules {

inline bool is_replicated_kind(WorkloadKind kind) {
  return kind == WorkloadKind::Deployment || kind == WorkloadKind::StatefulSet ||
         kind == WorkloadKind::ReplicaSet || kind == WorkloadKind::ReplicationController;
}

inline bool has_pod_template(WorkloadKind kind) {
  return pod_spec_pointer(kind).has_value() && kind != WorkloadKind::Pod;
}

// GPU counts are small and weights are fractions such as 1/7: compare with a tolerance
// far below any meaningful difference.
constexpr double kGpuEpsilon = 1e-9;

inline std::string format_count(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3f", value);
  std::string text = buffer;
  text.erase(text.find_last_not_of('0') + 1);
  if (text.back() == '.') text.pop_back();
  return text;
}

// Everything rules read about the request: its typed view (kube/workload.h, computed once
// per request), with cluster lookups done at most once and only when a rule needs them.
class Subject {
 public:
  Subject(const AdmissionRequest& request, const WorkloadView& view, ClusterState& state)
      : request_(request), view_(view), state_(state) {}

  const AdmissionRequest& request() const { return request_; }
  const WorkloadView& view() const { return view_; }
  const Json& object() const { return request_.subject(); }
  WorkloadKind kind() const { return view_.kind; }
  bool is_scale() const { return view_.is_scale; }
  // The kind policies match: a Scale request reports the kind it scales.
  const std::string& kind_name() const { return view_.kind_name; }

  bool kind_matches(const std::vector<std::string>& kinds) const {
    if (kinds.empty()) return true;
    auto listed = [&](const std::string& k) { return std::find(kinds.begin(), kinds.end(), k) != kinds.end(); };
    return listed(view_.kind_name) || (!view_.hpa_target_kind.empty() && listed(view_.hpa_target_kind));
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
    if (!view_.is_scale) return labels_of(object());
    const auto& parent = scale_parent();
    if (auto* error = std::get_if<ClusterStateError>(&parent)) {
      return ClusterStateError{"labels of the scaled " + view_.kind_name + ": " + error->message};
    }
    return labels_of(std::get<Json>(parent));
  }

  StateResult<std::vector<Json>> active_pods() { return state_.active_pods(request_.namespace_); }

  // Whether a controller owns the object (an ownerReference with controller: true), judged
  // on the object as it will be (on DELETE, as it is); for a Scale, on the scaled object.
  // Its controller rewrites it all the time (a rollout creates a ReplicaSet with 1 replica
  // and scales the old one to 0), so rules about what people and agents manage judge the
  // owner. A Scale whose parent cannot be read counts as not owned: it is judged.
  bool controller_owned() {
    if (!view_.is_scale) return view_.controller_owned;
    if (!controller_owned_) {
      const auto& parent = scale_parent();
      controller_owned_ = std::holds_alternative<Json>(parent) && has_controller_owner(std::get<Json>(parent));
    }
    return *controller_owned_;
  }

 private:
  const AdmissionRequest& request_;
  const WorkloadView& view_;
  ClusterState& state_;
  std::optional<StateResult<Json>> namespace_labels_;
  std::optional<StateResult<Json>> scale_parent_;
  std::optional<bool> controller_owned_;
};

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
    f.cause = state_unavailable_cause("rule " + rule + " of policy " + policy.name + " was not evaluated", error.message,
                                      on_error == OnStateError::Deny);
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

// A pod's GPUs as the scheduler counts them, weighted by the rule's resources (engine.cpp).
double pod_gpu_count(const Json& pod, const GpuRule& rule);

// spec.automation of one policy (automation.cpp).
void run_automation(RuleRun& run, const AutomationRule& rule, const EvaluationOptions& options);
// Whether the automation rules apply to this request at all (kind and operation).
bool automation_applies(Subject& subject);

}  // namespace sizeguard::rules
