#include "recommender/model_choice.h"

#include <algorithm>
#include <limits>
#include <sstream>
#include <unistd.h>

#include "recommender/evaluate.h"
#include "recommender/features.h"

namespace sizeguard {
namespace {

std::string fixed1(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << v;
  return s.str();
}

// Replaces store/current with `dir`; the previous model stays in store/previous.
void promote(const std::filesystem::path& dir, const std::filesystem::path& store) {
  namespace fs = std::filesystem;
  const fs::path current = store / "current", previous = store / "previous";
  fs::remove_all(previous);
  if (fs::exists(current)) fs::rename(current, previous);
  fs::rename(dir, current);
}

std::optional<QuantileModel> load_if_present(const std::filesystem::path& dir) {
  if (!std::filesystem::is_regular_file(dir / "model.json")) return std::nullopt;
  try {
    return QuantileModel::load(dir, 1);
  } catch (const ModelError&) {
    return std::nullopt;  // e.g. trained by an older build with other features
  }
}

// Gates (and calibrates) a model that was not trained here on the cluster's own last days
// (gate_on_recent_days). Returns a note for the log.
std::string gate_on_recent_days(QuantileModel& model, const std::vector<UsageSeries>& series) {
  ModelMetadata meta = model.metadata();
  const RecentGate g = sizeguard::gate_on_recent_days(model, meta, series);
  if (g.regated) {
    model.set_calibration(meta.calibrated_cpu_margin, meta.calibrated_memory_margin);
    model.set_gate(meta.cpu_gate, meta.memory_gate, g.first_day, g.last_day);
  }
  return "; " + g.note;
}

}  // namespace

const char* to_string(ModelSource source) {
  switch (source) {
    case ModelSource::trained: return "trained";
    case ModelSource::last_good: return "last-good";
    case ModelSource::bundled_default: return "bundled-default";
    case ModelSource::baseline: return "baseline";
  }
  return "?";
}

double history_days(const std::vector<UsageSeries>& series) {
  int64_t first = std::numeric_limits<int64_t>::max(), last = std::numeric_limits<int64_t>::min();
  for (const auto& s : series) {
    if (s.samples.empty()) continue;
    first = std::min(first, s.samples.front().timestamp);
    last = std::max(last, s.samples.back().timestamp);
  }
  return last > first ? static_cast<double>(last - first) / kSecondsPerDay : 0.0;
}

ModelChoice choose_model(const std::vector<UsageSeries>& series, const ModelChoiceOptions& o) {
  ModelChoice c;
  c.history_days = history_days(series);
  const std::string days = fixed1(c.history_days) + " days of history";
  auto use_default = [&](ModelSource source, std::string why) {
    c.model = QuantileModel::load(o.default_model, 1);
    c.source = source;
    if (source != ModelSource::baseline) why += gate_on_recent_days(c.model, series);
    c.policy = shipped_policy(c.model.metadata());
    if (source == ModelSource::baseline) c.policy.cpu_from_model = c.policy.memory_from_model = false;
    c.reason = std::move(why);
    return std::move(c);
  };
  if (c.history_days < o.min_default_days)
    return use_default(ModelSource::baseline, days + " < " + fixed1(o.min_default_days) + ": the baseline (vpa) for every resource");
  if (c.history_days < o.min_train_days)
    return use_default(ModelSource::bundled_default,
                       days + " < " + fixed1(o.min_train_days) + " to train on: the bundled default model");

  std::string why;
  try {
    TrainOptions t = o.train;
    t.train_begin = t.train_end = 0;  // the whole history
    QuantileModel model = QuantileModel::train(series, t);
    const int64_t day1 = day_one(series);
    const int last_day = static_cast<int>((model.metadata().train_end - day1) / kSecondsPerDay);
    calibrate_and_gate(model, series, std::max(1, last_day - t.validation_days + 1), last_day);
    const auto& m = model.metadata();
    if (m.cpu_gate.use_model || m.memory_gate.use_model) {
      const auto staging = o.store / (".new-" + std::to_string(::getpid()));
      std::filesystem::remove_all(staging);
      model.save(staging);
      promote(staging, o.store);
      c.source = ModelSource::trained;
      c.policy = shipped_policy(m);
      c.reason = days + ": trained on them; gate cpu " + gate_name(m.cpu_gate) + ", memory " + gate_name(m.memory_gate) +
                 "; kept as the last good model";
      c.model = std::move(model);
      return c;
    }
    why = "the new model lost to the baseline on both resources (not kept)";
  } catch (const std::exception& e) {  // ModelError, filesystem_error
    why = std::string("training failed: ") + e.what();
  }
  if (auto last = load_if_present(o.store / "current")) {
    c.model = std::move(*last);
    c.source = ModelSource::last_good;
    c.reason = days + ": " + why + "; the last good model" + gate_on_recent_days(c.model, series);
    c.policy = shipped_policy(c.model.metadata());
    return c;
  }
  return use_default(ModelSource::bundled_default, days + ": " + why + "; no last good model: the bundled default");
}

}  // namespace sizeguard
