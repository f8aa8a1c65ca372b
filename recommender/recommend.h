// The recommendations snapshot the webhook reads:
// {"modelVersion": "xgb-...", "generatedAt": "2013-07-21T00:00:00Z",
//  "recommendations": {"ns/kind/name/container": {"cpu": "250m", "memory": "512Mi",
//     "confidence": 0.8, "coldStart": false, "memoryPeak": "700Mi", "oomKilled": false,
//     "explanation": [{"feature": "cpu:cpu_p95_24h", "contribution": 0.12}, ...]}}}
// cpu/memory are canonical Kubernetes quantities (CPU in millicores, memory in Mi steps).
// memoryPeak (the highest working set of the last 7 days of history) and oomKilled (an
// OOM kill seen recently) are optional: snapshots without them still load, and the webhook
// then never lowers a memory limit and trusts the memory request as recommended.
// An optional top-level "decision" says what shipped per resource and why (SnapshotDecision).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "recommender/recommendation.h"

namespace sizeguard {

struct ContainerRecommendation {
  std::string cpu, memory;  // quantities as written ("250m", "512Mi")
  double cpu_cores = 0, memory_bytes = 0;
  double confidence = 0;
  bool cold_start = false;
  std::vector<Contribution> explanation;
  double memory_peak_bytes = 0;  // 0: unknown (older snapshots)
  bool oom_killed = false;       // OOM-killed recently: memory is never lowered
};

// The window memoryPeak covers, ending at the series' last sample.
inline constexpr int64_t kMemoryPeakWindowSeconds = 7 * 24 * 3600;

// Where one resource's recommendations came from: the champion/challenger gate's choice
// ("model", "blend" = blend_cpu / blend_memory, "baseline" = vpa), at which margin, and the slack
// each candidate left at matched risk on the days it was gated on.
struct ShippedSource {
  std::string source = "model";
  double margin = 1;
  bool gated = false;  // false: no gate decided this (an older model, or too little history)
  double model_slack = 0, blend_slack = 0, baseline_slack = 0;
  size_t baseline_series = 0;  // series given vpa anyway: out of distribution, or no recent sample
};

struct SnapshotDecision {
  std::string model;      // which model and why ("bundled-default: 3.2 days of history < 8 ...")
  std::string gate_days;  // UTC dates the gate was scored on ("2013-07-17..2013-07-20"), or ""
  ShippedSource cpu, memory;
  size_t cold_start = 0;
  size_t memory_at_request = 0;  // series whose memory was held at their request (new or resumed)
};

struct RecommendationSnapshot {
  std::string model_version;
  std::string generated_at;  // RFC3339 UTC
  std::map<std::string, ContainerRecommendation> recommendations;  // by WorkloadKey::to_string()
  std::optional<SnapshotDecision> decision;  // absent in snapshots of older builds
};

// Thrown by load_recommendations: "<path>: <what is wrong>" (e.g. "recommendations[\"a/b/c/d\"].cpu:
// bad quantity 'x'").
class SnapshotError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

ContainerRecommendation to_container_recommendation(const Recommendation& r);
RecommendationSnapshot make_snapshot(const std::vector<UsageSeries>& series, const std::vector<Recommendation>& recs,
                                     const std::string& model_version, int64_t generated_at);
// What `policy` (shipped_policy of `metadata`, possibly forced to the baseline) did to `recs`;
// `model_choice` says which model was used and why. `series` dates the gate days.
SnapshotDecision describe_decision(const ModelMetadata& metadata, const RecommendationPolicy& policy,
                                   const std::vector<Recommendation>& recs, const std::vector<UsageSeries>& series,
                                   std::string model_choice);
// Which snapshot is in force, for reports (`GET /recommendations`, `sizeguard report`):
// {"modelVersion", "generatedAt", "recommendations": count, "decision" (when recorded)}.
nlohmann::json snapshot_summary_json(const RecommendationSnapshot& snapshot);
// One line per resource for people: "cpu: blend x1.40 (gated on ...: slack at matched risk model
// 61.9%, blend 52.2%, vpa 60.5%); 3 series on vpa (out of distribution)".
std::vector<std::string> decision_summary(const SnapshotDecision& decision);
std::string snapshot_to_json(const RecommendationSnapshot& snapshot);  // pretty, stable order
void save_recommendations(const RecommendationSnapshot& snapshot, const std::filesystem::path& path);
RecommendationSnapshot parse_recommendations(const std::string& text, const std::string& source = "snapshot");
RecommendationSnapshot load_recommendations(const std::filesystem::path& path);

}  // namespace sizeguard
