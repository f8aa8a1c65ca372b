// Features for the usage-forecast model, computed per series at an origin time t from the
// samples strictly before t only (no look-ahead), and the targets over [t, t + horizon).
//
// Scale: every usage feature is log(x / level), where level is the p95 of the resource over
// the 7 days before t (floored at 1m CPU / 1 MiB). The model predicts log(target / level), so
// one model serves a 5m-CPU sidecar and a 32-core database alike; the absolute level is
// itself a feature (log cores, log GiB) so the model can still tell tiny from huge.
// Missing values (empty window, no request) are NaN, which XGBoost treats as missing.
//
// Feature order (feature_names() returns exactly this; metadata.json stores it):
//   for r in {cpu, mem}:
//     r_{p50,p90,p95,p99,max}_{1h,6h,24h,7d}   window quantiles (linear interpolation)
//     r_trend_7d            slope per day of log(daily p95) over the last 7 24-h blocks
//     r_same_hour_1d        mean usage in [t-24h, t-23h): the same hour-of-day yesterday
//     r_same_hour_7d        mean of that hour over the last 7 days
//     r_p95_same_day_last_week  p95 of [t-7d, t-6d): the day a week before the target day
//     r_burst_24h, r_burst_7d   log(p99 / p50) over the window (with the floor)
//     r_request, r_limit    log(spec value / level); NaN when unset
//     r_level               log(level) in cores (cpu) or GiB (mem)
//   history_samples, history_days, hour_of_day (UTC), day_of_week (0 = Monday, UTC)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "recommender/usage.h"

namespace sizeguard {

inline constexpr int64_t kSecondsPerHour = 3600;
inline constexpr int64_t kSecondsPerDay = 86400;
inline constexpr double kCpuFloorCores = 0.001;          // 1m
inline constexpr double kMemoryFloorBytes = 1048576.0;   // 1 MiB

const std::vector<std::string>& feature_names();
size_t feature_count();

struct FeatureRow {
  std::vector<float> values;  // feature_count() values, in feature_names() order
  double cpu_level = kCpuFloorCores;       // cores; predictions are level * exp(output)
  double memory_level = kMemoryFloorBytes;  // bytes
  size_t history_samples = 0;               // samples before t
  double history_days = 0;                  // (t - first sample) / 1 day, 0 if none
};

// Features at origin t from the samples with timestamp < t. Samples must be sorted.
FeatureRow compute_features(const UsageSeries& series, int64_t t);

struct Targets {
  double cpu = 0;     // cpu_quantile of the CPU samples in [t, t + horizon)
  double memory = 0;  // max memory in [t, t + horizon)
  size_t samples = 0;
};
Targets compute_targets(const UsageSeries& series, int64_t t, int64_t horizon_seconds,
                        double cpu_quantile);

// q-quantile with linear interpolation between order statistics (R type 7); `sorted` must be
// ascending and non-empty.
double quantile_sorted(const std::vector<double>& sorted, double q);
// Median spacing of the timestamps (300 for 5-minute data); 300 when fewer than 2 samples.
int64_t typical_step(const UsageSeries& series);
// The UTC midnight at or before t.
int64_t utc_midnight(int64_t t);

}  // namespace sizeguard
