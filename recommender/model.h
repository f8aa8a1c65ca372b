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
// How its forecasts become recommendations: recommendation.h.
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

// Threads for XGBoost and the recommender's own loops: `requested` when > 0, else every core.
int hardware_threads(int requested);

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

}  // namespace sizeguard
