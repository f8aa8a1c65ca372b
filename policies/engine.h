// Policy evaluation: a pure function of the request, the policy set, cluster state and
// the global default mode. It says which rules of which policies applied, what each
// found, and in which effective mode; the webhook turns that into an answer.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "policies/cluster_state.h"
#include "policies/gpu_charge.h"
#include "policies/policy.h"
#include "kube/review.h"
#include "kube/workload.h"

namespace sizeguard {

// The namespace label that overrides every policy's mode in that namespace.
inline constexpr const char* kModeLabel = "sizeguard.io/mode";

// The annotations automation rules read on the object.
inline constexpr const char* kBreakGlassAnnotation = "sizeguard.io/break-glass";

struct EvaluationOptions {
  Mode default_mode = Mode::Enforce;  // --mode; a policy's spec.mode and the label override it
  std::chrono::system_clock::time_point now;  // freeze windows and budgets; injected, never read here
};

// One rule of one policy that did not pass: a violation, or a rule that could not be
// evaluated because cluster state was unavailable.
struct Finding {
  std::string policy;
  std::string rule;      // "replicas", "gpu", "resources", "match"
  Mode mode = Mode::Enforce;
  StatusCause cause;     // reason code, message (naming the policy), field path
  bool denies = false;   // enforce-mode violations, and state errors with onClusterStateError: deny
};

// Every (policy, rule) that applied to the request, for metrics and audit.
// result: "pass", "deny", "warn", "audit" or "error" (not evaluated, allowed).
struct RuleOutcome {
  std::string policy;
  std::string rule;
  Mode mode = Mode::Enforce;
  std::string result;
};

// A change an automation agent makes counts against a budget; the webhook spends it
// (in the Kubernetes API) only if the whole decision allows the change and it is not a
// dry run.
struct BudgetCharge {
  std::string policy;
  Mode mode = Mode::Enforce;
  std::string scope;  // "workload" or "actor"
  std::string key;    // "team-a/Deployment/web" or the username
  BudgetLimit limit;
  bool deny_on_state_error = true;  // the policy's onClusterStateError (default deny)
};

// A change reason an agent gave (requireChangeReason): it justifies one change only. The
// webhook checks that this reason was not used for an earlier change of the workload and
// records it as used (in the Kubernetes API, beside the budgets) if the whole decision
// allows the change and it is not a dry run.
struct ReasonClaim {
  std::string policy;
  Mode mode = Mode::Enforce;
  std::string key;         // the workload, as in BudgetCharge: "team-a/Deployment/web"
  std::string id;          // hash of the workload's uid and the reason text
  std::string annotation;  // where the reason is: "sizeguard.io/change-reason"
  std::string where;       // the object it was read from, for messages: "Deployment team-a/web"
  std::string stale;       // a hint for the message when that object may be outdated, else empty
  bool deny_on_state_error = true;
};

struct Decision {
  std::vector<Finding> findings;
  std::vector<RuleOutcome> outcomes;
  std::vector<std::string> notes;  // things worth a warning that are not findings
  std::vector<BudgetCharge> budget_charges;
  std::vector<ReasonClaim> reason_claims;
  std::vector<GpuCharge> gpu_charges;  // reserved by the webhook (gpu_reservations.h)
  std::map<std::string, std::string> audit_fields;  // e.g. changeReason, breakGlass
  bool allowed() const;
};

// The cause of a check that could not reach the cluster: "<subject>: cluster state
// unavailable (<detail>)", saying when the policy's onClusterStateError makes it deny.
StatusCause state_unavailable_cause(const std::string& subject, const std::string& detail, bool deny);

// `view` is workload_view(request) (kube/workload.h); the overload without it builds one.
Decision evaluate_policies(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                           ClusterState& state, const EvaluationOptions& options);
Decision evaluate_policies(const AdmissionRequest& request, const PolicySet& policies,
                           ClusterState& state, const EvaluationOptions& options);

// Whether the policy's match (minus its exclude) covers the request; the error when it
// needed cluster state that could not be read. For rules evaluated outside this engine
// (right-sizing at /mutate).
std::variant<bool, ClusterStateError> policy_applies(const Policy& policy, const AdmissionRequest& request,
                                                     const WorkloadView& view, ClusterState& state);

// Cluster state for offline use with no cluster: every lookup fails with `reason`, so
// rules that need state are reported as not evaluated instead of silently passing.
class UnavailableClusterState : public ClusterState {
 public:
  explicit UnavailableClusterState(std::string reason) : reason_(std::move(reason)) {}
  StateResult<Json> namespace_labels(std::string_view) override { return ClusterStateError{reason_}; }
  StateResult<Json> get_object(std::string_view, std::string_view, std::string_view, std::string_view,
                               std::string_view) override {
    return ClusterStateError{reason_};
  }
  StateResult<std::vector<Json>> active_pods(std::string_view) override { return ClusterStateError{reason_}; }

 private:
  std::string reason_;
};

}  // namespace sizeguard
