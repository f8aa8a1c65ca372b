// What the recommender CronJob predicts with, chosen from the cluster's own history on every
// run: enough history -> train a model on it, gate it against the VPA-style baseline
// (calibrate_and_gate) and keep it as the last good model; a new model that loses to the
// baseline on every resource, or fails to train, is not kept (the last good model, else the
// bundled default, is used); less history -> the bundled default; very little -> the baseline.
// A model not trained on this run (last good, bundled default) is gated again on the
// cluster's own last days (up to 4) when there are at least 2 whole days: what ships is never
// the model where the baseline did better on the cluster's recent data.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "recommender/recommendation.h"
#include "recommender/usage.h"

namespace sizeguard {

struct ModelChoiceOptions {
  std::filesystem::path store;          // the last good model lives in store/current
  std::filesystem::path default_model;  // the bundled default
  double min_train_days = 8;            // train on the cluster's history from this many days
  double min_default_days = 1;          // below this: the baseline for every resource
  TrainOptions train;                   // train_begin/end are set to the whole history
};

enum class ModelSource { trained, last_good, bundled_default, baseline };
const char* to_string(ModelSource source);

struct ModelChoice {
  ModelSource source = ModelSource::bundled_default;
  QuantileModel model;           // always loaded (baseline: the default, for the API; unused)
  RecommendationPolicy policy;   // shipped_policy(model), or baseline for every resource
  double history_days = 0;
  std::string reason;            // one line for the log
};

// Days between the earliest and the latest sample of any series.
double history_days(const std::vector<UsageSeries>& series);

// Throws ModelError when the bundled default cannot be loaded and is needed.
ModelChoice choose_model(const std::vector<UsageSeries>& series, const ModelChoiceOptions& options);

}  // namespace sizeguard
