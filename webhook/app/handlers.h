// The two admission decisions. Pure functions of the request and the context (policies,
// recommendations, cluster state, clock) so that `serve`, `review` and tests share them.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "policies/budget.h"
#include "policies/cluster_state.h"
#include "policies/engine.h"
#include "policies/gpu_reservations.h"
#include "policies/policy.h"
#include "rightsizing/rightsizing.h"
#include "webhook/audit.h"
#include "kube/metrics.h"
#include "kube/review.h"

namespace sizeguard {

// Everything a decision reads besides the request. Pointers may be null: no policies,
// no metrics, no audit log. Cluster state is required when there are policies.
struct AdmissionContext {
  std::function<std::shared_ptr<const PolicySet>()> policies;
  ClusterState* cluster_state = nullptr;
  BudgetStore* budgets = nullptr;  // null: change budgets are reported as not evaluated
  GpuReservationStore* gpu_reservations = nullptr;  // null: GPU namespace totals count visible pods only
  std::function<std::chrono::system_clock::time_point()> clock = [] { return std::chrono::system_clock::now(); };
  EvaluationOptions evaluation;
  // Right-sizing inputs (recommendations snapshot, model); null: /mutate changes nothing.
  std::function<RightsizingInputs()> rightsizing;
  RecommendationReport* report = nullptr;
  Metrics* metrics = nullptr;
  AuditLog* audit = nullptr;
  // serve: Pods a controller creates get no per-container right-sizing warnings (only the
  // controller would read them); `review` sets false, since a person reads its output.
  bool quiet_controller_pods = true;
};

// Declares the metric families the handlers record (call once per Metrics).
void describe_handler_metrics(Metrics& metrics);

AdmissionResponse mutate(const AdmissionRequest& request, AdmissionContext& context);
AdmissionResponse validate(const AdmissionRequest& request, AdmissionContext& context);

// How a policy decision reads as an admission answer: enforce findings deny with causes,
// warn findings and notes become "sizeguard: ..." warnings, audit findings become audit
// annotations.
AdmissionResponse to_admission_response(const AdmissionRequest& request, const Decision& decision);

}  // namespace sizeguard
