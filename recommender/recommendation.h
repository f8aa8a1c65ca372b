// How the model's forecasts become one container's recommendation: the policy (margins, the
// gate's choice of model, blend or the VPA-style baseline per resource), the distribution guard,
// the risk budget, the blends with VPA and the pooled levels, the memory request floor, cold start,
// and rounding to Kubernetes steps. What `recommend` writes and what `evaluate` scores.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "recommender/features.h"
#include "recommender/model.h"
#include "recommender/usage.h"

namespace sizeguard {

struct RecommendationPolicy {
  double margin = 1.1;
  double memory_margin = 0;  // 0: the same as `margin`
  // Per resource: the model's prediction, or the VPA-style baseline (vpa_recommend) x its
  // margin. shipped_policy() sets these from the model's gate.
  bool cpu_from_model = true, memory_from_model = true;
  double baseline_cpu_margin = 1, baseline_memory_margin = 1;
  // With the model: the blend (blend_cpu, blend_memory) x blend margin instead of prediction x margin.
  bool cpu_blend = false, memory_blend = false;
  double blend_cpu_margin = 1, blend_memory_margin = 1;
  // The CPU blend's third part: the pooled recent CPU level (pooled_recent_cpu) of the last
  // `recent_cpu_days` at `recent_cpu_risk`. 0 days: the CPU blend is sqrt(prediction x VPA).
  double recent_cpu_days = 1, recent_cpu_risk = 0.05;
  // The CPU blend's model part: the pooled forecast level (pooled_forecast_cpu) at this risk, for
  // a model with tail forecasts; 0: the raw prediction.
  double forecast_cpu_risk = 0.05;
  // Series whose features lie far outside the training data get the baseline (out_of_distribution).
  bool distribution_guard = true;
  // A container with less history than this, or none in this long before now (new, or back
  // after a pause), has not shown its daily peak: its memory is never recommended below its
  // request (else limit) in force (memory_request_floor). 0: off.
  double memory_request_floor_days = 1;
  // Spend the model's risk budget (ModelMetadata::budget_*) on the raw predictions; false: the
  // bare predictions (for comparisons).
  bool risk_budget = true;
  double cpu_min = 0.01, cpu_max = 1024;                                 // cores
  double memory_min = 16.0 * 1048576, memory_max = 1024.0 * 1073741824;  // bytes
  double cpu_step = 0.005;                                               // 5m
  double memory_step = 1048576;                                          // 1Mi
};

// What `recommend` ships by default: the calibrated margins (else 1.1) and the gate's choice
// of model or baseline per resource.
RecommendationPolicy shipped_policy(const ModelMetadata& metadata);

// Which resources of a feature row lie far outside the training distribution: no sample in
// the last 7 days (r_p95_7d missing: the level is then the floor, which training never saw),
// its level (r_level) more than a factor 2 outside the training [p0.5, p99.5] range, or more
// than a quarter of its other features outside that range widened by 0.5 (log units). Never
// true for a model without recorded ranges.
struct DistributionCheck {
  bool cpu = false, memory = false;
};
DistributionCheck out_of_distribution(const ModelMetadata& metadata, const FeatureRow& row);

// Per-series risk budgeting. One margin on every series' forecast spends the pooled risk (share
// of all 5-minute windows above the recommendation) evenly; but a window is a window whatever
// the series' size, while slack counts cores and bytes. So each series' level is moved along a
// log-normal model of its next day (centre: the prediction; spread: (p95 - p50) / 1.645 of its
// last 7 days, the features cpu/mem_p50_7d and _p95_7d) to where one more unit of resource
// buys the same drop in risk for every series, with the multiplier chosen so the model's mean
// risk over the batch is `cpu_risk` / `memory_risk` (0: left alone). Large or bursty series
// take more risk, small or smooth ones less. The calibrated margin still sets the final risk.
void spend_risk_budget(const std::vector<FeatureRow>& rows, std::vector<Prediction>& predictions, double cpu_risk,
                       double memory_risk);

// The memory a series' recommendation at `now` must not go below: its request (else limit) in
// force when its first sample, or its last before `now`, is not `days` apart from `now` (less
// history than that, or a gap that long up to now); else 0. An OOM kill costs more than the
// slack of one more day at the request; CPU, only throttled, gets no floor.
double memory_request_floor(const UsageSeries& series, int64_t now, double days);

// The blend the gate can choose: CPU (prediction x VPA)^(1/4) x recent^(1/2), recent = the series'
// pooled recent level (pooled_recent_cpu), else sqrt(prediction x VPA) when it has none; memory
// sqrt(prediction x VPA). The model corrects VPA's level; the fleet's last day says how each
// series' tail is best traded against the others'.
double blend_cpu(double prediction, double vpa, double recent);
// Per prediction, the CPU level its forecast distribution (the main CPU quantile and the tail
// forecasts) bears when the batch spends one pooled `risk` (pooled_forecast_levels): a series whose
// tail forecasts lie far above its median takes its median, a tight one its 99th percentile. The
// blend's model part when present (Recommendation::forecast_cpu). All NaN for a model without tails.
std::vector<double> pooled_forecast_cpu(const std::vector<Prediction>& predictions, const ModelMetadata& metadata,
                                        double risk);
double blend_memory(double prediction, double vpa);

// Clamp to [min, max], then round up to a multiple of step (down if that passes max).
double round_up_clamped(double value, double min, double max, double step);

struct Recommendation {
  double cpu_cores = 0, memory_bytes = 0;
  double confidence = 0;  // [0, 1]: min(1, history days / 7) / (1 + 0.25 * log(p99/p50) 7d)
  bool cold_start = false;
  std::vector<Contribution> explanation;
  // How it was made: the model's raw prediction (no margin; 0 without history) and, per
  // resource, whether the model or the baseline was used (and why not the model).
  Prediction raw;
  bool cpu_from_model = false, memory_from_model = false;
  bool cpu_blended = false, memory_blended = false;  // from the model blended with the baseline
  bool out_of_distribution = false;
  bool memory_at_request = false;  // raised to the request: new or back after a pause (memory_request_floor)
  double recent_cpu = std::numeric_limits<double>::quiet_NaN();  // pooled_recent_cpu, >= cpu_min; NaN: none or off
  double forecast_cpu = std::numeric_limits<double>::quiet_NaN();  // pooled_forecast_cpu; NaN: no tails
};

// The CPU blend of a recommendation with the VPA baseline's CPU `vpa`: blend_cpu of its pooled
// forecast (else its raw prediction) and its recent level. What `recommend` and `evaluate` blend.
double blend_cpu_of(const Recommendation& r, double vpa);

// From history before `now`; falls back to cold_start_recommendation() with no history.
// Per resource: model prediction x margin, or (policy/gate, out of distribution) the VPA
// baseline x its margin; then clamped and rounded up to the policy's steps. This is what
// `recommend` writes and what `evaluate` scores. `threads` computes features in parallel.
Recommendation recommend(const QuantileModel& model, const UsageSeries& series, int64_t now,
                         const RecommendationPolicy& policy, size_t top_features = 3);
std::vector<Recommendation> recommend_batch(const QuantileModel& model, const std::vector<UsageSeries>& series,
                                            int64_t now, const RecommendationPolicy& policy,
                                            size_t top_features = 3, int threads = 1);
// Spec-only estimate: request (or limit) x the training ratio, else a per-kind default. The
// spec is the one in force at `now` (spec_at), else the latest known.
Recommendation cold_start_recommendation(const UsageSeries& series, const ModelMetadata* metadata,
                                         const RecommendationPolicy& policy, std::optional<int64_t> now = std::nullopt);

}  // namespace sizeguard
