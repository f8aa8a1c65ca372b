// Right-sizing at /mutate: the recommendation for each container (from the snapshot
// `sizeguard recommend` writes, or the model's cold-start estimate), steered and clamped by
// the policies (spec.rightsizing, and the resource rules validate will check), turned into
// a JSONPatch with an explanation, or, in audit mode, only into a report.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "policies/engine.h"
#include "policies/policy.h"
#include "recommender/model.h"
#include "recommender/recommend.h"
#include "kube/metrics.h"
#include "kube/review.h"
#include "kube/workload.h"

namespace sizeguard {

inline constexpr const char* kRightsizeAnnotation = "sizeguard.io/rightsize";     // off | audit | enforce
inline constexpr const char* kRightsizedAnnotation = "sizeguard.io/rightsized";   // the explanation we write

struct RightsizingInputs {
  std::shared_ptr<const RecommendationSnapshot> recommendations;  // may be null
  std::shared_ptr<const ModelMetadata> model;                     // for cold starts; may be null
  std::string model_version;
};

struct ResourceChange {
  std::string container;
  std::string resource;  // cpu | memory
  std::string field;     // request | limit
  std::optional<Quantity> before, after;  // nullopt: absent / removed
};

struct RightsizingResult {
  bool applies = false;          // a policy with spec.rightsizing covered the request
  std::string policy;
  Mode mode = Mode::Enforce;     // enforce: patch; warn/audit: report only
  std::string workload;          // the key recommendations were looked up under
  Json patch = Json::array();    // what enforce mode applies (or audit mode would)
  std::vector<ResourceChange> changes;
  std::vector<std::string> warnings;  // "sizeguard: container web: cpu request 2 -> 350m (...)"
  std::vector<std::string> notes;     // why something was skipped or clamped
  // Per-pod totals before and after, for the report (cores, bytes).
  double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
  int64_t replicas = 1;
  bool cold_start = false;
};

// `view` is workload_view(request) (kube/workload.h), built once per request by the
// handlers; the overload without it builds one.
RightsizingResult rightsize(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                            ClusterState& state, const RightsizingInputs& inputs, const EvaluationOptions& options);
RightsizingResult rightsize(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state,
                            const RightsizingInputs& inputs, const EvaluationOptions& options);

// The latest current-vs-recommended numbers per workload, for the
// sizeguard_recommendation_* gauges (per-namespace totals) and GET /recommendations.
class RecommendationReport {
 public:
  explicit RecommendationReport(Metrics& metrics);
  void record(const AdmissionRequest& request, const RightsizingResult& result);
  // The validating webhook's answer for the object: if it denied it, what record() counted
  // never existed, so the workload's previous numbers (or none) are back in force.
  void validated(const AdmissionRequest& request, bool allowed);
  Json table() const;  // {"workloads": [...], "namespaces": {...}}

 private:
  struct Row {
    std::string ns, kind, name, mode;
    int64_t replicas = 1;
    double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
    bool cold_start = false;
  };
  struct Totals {
    double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
    std::map<std::string, int> modes;
    bool operator==(const Totals&) const = default;
  };
  // Recomputes one namespace's gauges (with mutex_ held): a review touches one row, and
  // re-exporting every namespace's rows per review would cost O(workloads) on the request path.
  void export_metrics(const std::string& ns);
  Metrics& metrics_;
  std::map<std::string, Totals> totals_;  // per namespace, as exported
  mutable std::mutex mutex_;
  std::map<std::string, Row> rows_;
  std::map<std::string, std::optional<Row>> replaced_;  // key -> the row record() last replaced
};

}  // namespace sizeguard
