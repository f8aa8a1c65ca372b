// The usage-forecast model: one XGBoost booster over stacked rows (one CPU row and one
// memory row per series and origin, told apart by the last input `target_is_memory`), trained
// with a custom pinball (quantile) objective, in log space relative to the recent level
// (features.h), passed each round through XGBoosterBoostOneIter:
//   CPU row:    labels = every sample of the next horizon, log(cpu / cpu_level); the mean
//               pinball loss over them at q (default 0.95) is minimised by the horizon's
//               CPU q-quantile, so the output is "the level a 5-minute sample of the next
//               24 h exceeds with probability 1 - q" (the backtest's risk definition);
//   memory row: label = log(next-horizon memory peak / mem_level), pinball at
//               memory_quantile (default 0.5: the median next-day peak; the margin on top
//               covers the rest; chosen on a validation backtest inside the training days).
// The pinball hessian is zero almost everywhere; we use a constant 1 (times the row weight),
// so each tree is a gradient step toward the quantile. Rows are weighted by
// (level / floor)^size_weight_power. Early stopping on the validation pinball loss (the
// latest days of the training period).
// CPU tail boosters (TrainOptions::cpu_tail_quantiles), trained the same way at higher quantiles,
// forecast the rest of each series' next day for pooled_forecast_cpu.
// Saved as <dir>/model.json (XGBoost JSON), <dir>/cpu-tail-<i>.json + <dir>/metadata.json; load()
// refuses metadata that does not match this build (feature names/order, objective, schema).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "recommender/features.h"
#include "recommender/usage.h"

namespace sizeguard {

class ModelError : public std::runtime_error {
 public:
  ModelError(const std::string& what, bool bad_input) : std::runtime_error(what), bad_input_(bad_input) {}
  bool bad_input() const { return bad_input_; }  // missing/mismatched files (vs XGBoost failure)
 private:
  bool bad_input_;
};

// Pinball loss and its (sub)gradient w.r.t. the prediction f for label y at quantile q:
// loss = q (y - f) if y >= f else (1 - q)(f - y); grad = 1 - q if f > y, -q if f < y, 0 if equal;
// hess = 1.
double pinball_loss(double prediction, double label, double q);
void pinball_gradient(const float* prediction, const float* label, const float* q, size_t n,
                      float* grad, float* hess);
// Mean pinball gradient of one prediction over n sorted labels (a row whose target is a whole
// window of samples): ((1 - q) * #labels below - q * #labels above) / n.
float pinball_gradient_sorted(float prediction, const float* labels, size_t n, float q);

struct TrainProgress {
  int round = 0, max_rounds = 0, best_round = 0;
  double train_loss = 0, valid_loss = 0;  // mean pinball (log space), CPU and memory rows
};

struct TrainOptions {
  int64_t horizon_seconds = kSecondsPerDay;
  double cpu_quantile = 0.95;
  double memory_quantile = 0.5;
  // Training origins t every stride_seconds (UTC-aligned) with [t, t + horizon) inside
  // [train_begin, train_end); the origins whose target window ends in the last
  // validation_days of that period form the validation set (time-based split).
  int64_t train_begin = 0, train_end = 0;  // 0/0: the whole data range
  int validation_days = 4;
  int64_t stride_seconds = 6 * kSecondsPerHour;
  // Row weight (level / floor)^power, normalised to mean 1 per resource: 0 weighs every
  // workload alike in log space; 1 weighs by size, as the slack of a fleet (sum of
  // over-provisioned cores) does.
  double size_weight_power = 0.5;
  int min_history_samples = 12;
  double min_target_coverage = 0.8;  // share of the horizon's expected samples
  int max_rounds = 300;
  int early_stopping_rounds = 25;
  int max_depth = 5;
  double eta = 0.1;
  double subsample = 0.8, colsample = 0.8, min_child_weight = 20, lambda = 1;
  int nthread = 0;  // 0: std::thread::hardware_concurrency()
  uint64_t seed = 7;
  // Learn a correction to the VPA-style baseline instead of a level from scratch: each row
  // starts from base_margin = log(vpa / level) (vpa_recommend at the origin), so the trees
  // fit log(target / vpa) and a tree-less model is VPA itself.
  bool vpa_base = false;
  // Pooled risk the raw predictions spend per batch (spend_risk_budget; 0 = off), recorded in
  // the model's metadata. Memory on: chosen on July 2013 days 17-20. CPU off by default: 0.1
  // (the best on those days) helped July and Azure but cost Google 3 points (docs/recommender.md).
  double budget_cpu_risk = 0, budget_memory_risk = 0.01;
  // CPU tail forecasts: one more booster per quantile (at most kMaxCpuTails), trained like the
  // main one at that quantile (CPU and memory rows, early stopping of its own), that only predicts
  // CPU rows. With the main CPU quantile they describe each series' next day for
  // pooled_forecast_cpu. Empty: none.
  std::vector<double> cpu_tail_quantiles{0.8, 0.95, 0.99};
  // The fleet of each series (train --also: 0 = this cluster's data, k = the k-th other fleet);
  // empty: one fleet. Row weights are normalised per fleet and resource, so a fleet counts by its
  // rows, not by its scale (96-core hosts would otherwise outweigh a fleet of small VMs).
  std::vector<int> fleet_of_series;
  std::function<void(const TrainProgress&)> progress;  // after each round
};

struct ModelMetadata {
  int schema = 1;
  std::vector<std::string> inputs;  // feature_names() + "target_is_memory"
  std::string objective = "pinball";
  double cpu_quantile = 0.95, memory_quantile = 0.5;
  int64_t horizon_seconds = kSecondsPerDay;
  std::string cpu_target = "cpu_quantile_of_next_horizon_samples", memory_target = "memory_peak_next_horizon";
  std::string transform = "log(target / level)";
  // "level": the prediction is level x exp(trees); "vpa": vpa x exp(trees), a learned
  // correction of the VPA-style baseline (TrainOptions::vpa_base).
  std::string base = "level";
  double size_weight_power = 0;
  int rounds = 0;
  double valid_loss_cpu = 0, valid_loss_memory = 0;
  size_t series = 0, samples = 0, rows_train = 0, rows_valid = 0;
  int64_t data_start = 0, data_end = 0, train_begin = 0, train_end = 0, valid_begin = 0;
  // Cold start: p90 over training rows of (next-horizon target / request), per resource.
  double cold_cpu_request_ratio = 1.0, cold_memory_request_ratio = 1.0;
  // Margins that met the target risks (5% of CPU windows, 1% of memory windows above the
  // recommendation) in a backtest on the validation days; 0 = not calibrated. `recommend`
  // uses them unless --margin is given.
  double calibrated_cpu_margin = 0, calibrated_memory_margin = 0;
  // Champion/challenger gate per resource, from `train`'s backtest on its validation days:
  // slack at matched risk of the model (raw prediction x calibrated margin) and of the
  // VPA-style baseline (x its own matched margin, baseline_margin). `recommend` uses the
  // model for a resource only where it won (use_model). Absent (decided = false) in older
  // models: the model is used.
  // A third candidate, "blend": blend_cpu / blend_memory (the raw prediction, the baseline and for
  // CPU the pooled recent level) x blend_margin, a correction of VPA by the model; use_blend
  // implies use_model.
  struct Gate {
    bool decided = false, use_model = true, use_blend = false;
    double model_slack = 0, baseline_slack = 0, baseline_margin = 1;
    double blend_slack = 0, blend_margin = 1;
  };
  Gate cpu_gate, memory_gate;
  int gate_first_day = 0, gate_last_day = 0;  // days of the training data the gate was scored on
  // Out-of-distribution guard: per input (feature_names() order) the 0.5% and 99.5% quantiles
  // over the training rows; empty in older models (no guard).
  std::vector<double> input_low, input_high;
  // Risk budget (spend_risk_budget): the pooled share of windows the raw predictions may leave
  // above them, spent across the series of a batch where it saves the most; 0 = off (older
  // models: the bare prediction).
  double budget_cpu_risk = 0, budget_memory_risk = 0;
  // CPU tail forecasts (TrainOptions::cpu_tail_quantiles): quantile and rounds of each booster,
  // saved as cpu-tail-<i>.json beside model.json; empty in older models.
  std::vector<double> cpu_tail_quantiles;
  std::vector<int> cpu_tail_rounds;
  std::string xgboost_version, created_at;
};

std::vector<std::string> model_inputs();  // feature_names() + "target_is_memory"

inline constexpr size_t kMaxCpuTails = 4;

struct Prediction {
  double cpu_cores = 0;
  double memory_bytes = 0;
  // The CPU tail forecasts, in metadata().cpu_tail_quantiles order (0 past its size).
  std::array<double, kMaxCpuTails> cpu_tail{};
};

struct Contribution {
  std::string feature;
  double contribution = 0;  // to log(prediction); the top ones by magnitude
};

class QuantileModel {
 public:
  QuantileModel();
  ~QuantileModel();
  QuantileModel(QuantileModel&&) noexcept;
  QuantileModel& operator=(QuantileModel&&) noexcept;

  // Throws ModelError (bad_input when there are no usable rows).
  static QuantileModel train(const std::vector<UsageSeries>& series, const TrainOptions& options);
  // `threads`: XGBoost threads for large batches (0 = all cores).
  static QuantileModel load(const std::filesystem::path& dir, int threads = 0);
  void save(const std::filesystem::path& dir) const;

  const ModelMetadata& metadata() const;
  void set_calibration(double cpu_margin, double memory_margin);  // before save()
  void set_risk_budget(double cpu_risk, double memory_risk);      // 0 = off
  void set_gate(const ModelMetadata::Gate& cpu, const ModelMetadata::Gate& memory, int first_day, int last_day);
  // Records input_low/high from `series` at the origins of this model's training period (for
  // a model trained before the guard existed; train() records them itself).
  void record_input_ranges(const std::vector<UsageSeries>& series);
  // Takes `donor`'s CPU tail boosters (and their metadata) in place of this model's own: how a
  // model trained before the tails existed gets them (train --from-model) without new main trees.
  void adopt_cpu_tails(QuantileModel&& donor);
  std::string version() const;  // "xgb-" + hash of the boosters' JSON (main, then tails)
  bool loaded() const;

  // Batch prediction (one in-place XGBoost call for all rows). A model with base "vpa" needs
  // each row's VPA recommendation (`base`, vpa_recommend at the row's origin; ModelError
  // without it) and returns base x exp(trees).
  bool needs_baseline() const;
  void predict(const std::vector<FeatureRow>& rows, std::vector<Prediction>& out,
               const std::vector<Prediction>* base = nullptr) const;
  Prediction predict(const FeatureRow& row, const Prediction* base = nullptr) const;
  // Raw margins for n rows of model_inputs().size() floats each (for benchmarks and tests).
  void predict_raw(const float* inputs, size_t n, std::vector<float>& out) const;
  // SHAP contributions, top `top` by |value| (target_is_memory and the bias left out).
  std::vector<Contribution> explain(const FeatureRow& row, bool memory, size_t top) const;
  std::vector<std::vector<Contribution>> explain(const std::vector<FeatureRow>& rows, bool memory, size_t top) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How predictions become recommendations.
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
