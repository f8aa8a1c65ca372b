// Baseline recommenders, written from their documented behaviour (no code copied):
//
// VPA (Kubernetes Vertical Pod Autoscaler, recommender component):
//   - decaying histograms, half-life 24 h: a sample at time s weighs 2^((s - ref) / 24h);
//   - exponential buckets: bucket i starts at first * (1.05^i - 1) / 0.05, first = 0.01 core
//     (CPU) or 1e7 bytes (memory); a percentile returns the END of the bucket where the
//     cumulative weight reaches the threshold (the start of the last, open, bucket);
//   - CPU: every usage sample, weight 1 (VPA weighs by the CPU request; constant here);
//   - memory: the peak of each 24-h aggregation interval (UTC days), last 8 intervals;
//   - target = p90 * 1.15, at least 25m CPU / 250Mi memory;
//   - confidence = days of history; upper = target * (1 + 1/confidence),
//     lower = target * (1 + 0.001/confidence)^-2 (as the brief states; VPA itself starts the
//     bounds from p95 / p50 before applying these factors).
// Pooled recent CPU (ours, no baseline project's): per series, a level on its own samples of the last
// day, chosen across the whole fleet so that the pooled share of those samples above their level is
// the CPU risk target and the levels add up to the least (see pooled_recent_cpu).
// KRR "simple" strategy: CPU = p95 of the last 14 days; memory = max of the last 14 days * 1.15;
// at least KRR's defaults cpu_min_value = 10 (millicores) and memory_min_value = 100 (MB, which
// KRR turns into bytes with 1024^2).
#pragma once

#include <cstdint>
#include <vector>

#include "recommender/usage.h"

namespace sizeguard {

class DecayingHistogram {
 public:
  DecayingHistogram(double first_bucket, double ratio = 1.05, double max_value = 1e13,
                    double half_life_seconds = 86400);
  void add(double value, double weight, int64_t timestamp);
  // Percentile in [0, 1]; 0 when empty.
  double percentile(double p) const;
  bool empty() const { return total_ <= 0; }
  double total_weight() const { return total_; }
  size_t bucket_of(double value) const;
  double bucket_start(size_t bucket) const;
  size_t bucket_count() const { return weights_.size(); }

 private:
  double first_, ratio_, half_life_;
  std::vector<double> weights_;
  double total_ = 0;
  int64_t reference_ = 0;
  bool has_reference_ = false;
};

struct BaselineRecommendation {
  double cpu_cores = 0;
  double memory_bytes = 0;
  double cpu_lower = 0, cpu_upper = 0, memory_lower = 0, memory_upper = 0;  // VPA only
  double confidence = 0;                                                   // VPA: history days
  bool has_history = false;
};

struct VpaOptions {
  double half_life_seconds = 86400;
  double cpu_percentile = 0.9;
  double memory_percentile = 0.9;
  double margin = 0.15;
  double min_cpu_cores = 0.025;
  double min_memory_bytes = 250.0 * 1048576;
  int memory_intervals = 8;  // 24-h peaks kept
};

// Incremental VPA model of one container: feed samples in time order, ask at any time.
class VpaEstimator {
 public:
  explicit VpaEstimator(VpaOptions options = {});
  void add(const UsageSample& sample);
  BaselineRecommendation recommend(int64_t now) const;

 private:
  VpaOptions options_;
  DecayingHistogram cpu_;
  struct Peak { int64_t day; int64_t timestamp; double value; };
  std::vector<Peak> peaks_;  // one per UTC day, ascending
  int64_t first_ = 0;
  bool any_ = false;
};

// VPA from the samples of `series` strictly before `now`.
BaselineRecommendation vpa_recommend(const UsageSeries& series, int64_t now, const VpaOptions& options = {});
inline constexpr double kKrrMinCpuCores = 0.01;
inline constexpr double kKrrMinMemoryBytes = 100.0 * 1048576;
// KRR simple from the samples in [now - 14 days, now), with KRR's minimums.
BaselineRecommendation krr_recommend(const UsageSeries& series, int64_t now,
                                     int64_t history_seconds = 14 * 86400,
                                     double cpu_percentile = 0.95, double memory_buffer = 0.15);

// Per series, the CPU level that spends a pooled risk budget on the samples of [now - history, now):
// `risk` of all those samples (pooled over the series) lie above their series' level and the sum of
// the levels is least. A series whose top samples are a thin spike gives them up cheaply (its level
// is below its own p95); a flat one keeps all of them under. Each series takes the point of the
// lower convex hull of its exceedance curve (share of samples above, level) whose slope is the one
// price per unit of risk found by bisection. NaN for a series without samples in the window.
std::vector<double> pooled_recent_cpu(const std::vector<UsageSeries>& series, int64_t now, double risk,
                                      int64_t history_seconds = 86400);

// The same spending on forecasts: per series a few points of its forecast distribution for the
// next day (share of its samples expected above, level; e.g. the model's median and tail quantile
// forecasts), each series weighing alike. Returns per series the hull point at the one price whose
// pooled expected share is within `risk`; NaN for a series without points.
struct ExceedancePoint {
  double share = 0, level = 0;
};
std::vector<double> pooled_forecast_levels(const std::vector<std::vector<ExceedancePoint>>& forecasts, double risk);

}  // namespace sizeguard
