// The XGBoost quantile model: pinball objective, training on synthetic data with a known
// quantile, save/load round trip, tail forecasts, the distribution guard's ranges, metadata checks.
#include "recommender/model.h"
#include "recommender/recommendation.h"
#include "recommender/baselines.h"
#include "trained_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace sizeguard {
namespace {

using namespace test_model;

TEST(Pinball, LossAndGradient) {
  EXPECT_DOUBLE_EQ(pinball_loss(1.0, 3.0, 0.9), 0.9 * 2);
  EXPECT_DOUBLE_EQ(pinball_loss(3.0, 1.0, 0.9), 0.1 * 2);
  EXPECT_DOUBLE_EQ(pinball_loss(2.0, 2.0, 0.9), 0.0);
  const float pred[] = {1, 3, 2}, label[] = {3, 1, 2}, q[] = {0.95f, 0.95f, 0.5f};
  float grad[3], hess[3];
  pinball_gradient(pred, label, q, 3, grad, hess);
  EXPECT_FLOAT_EQ(grad[0], -0.95f);  // under-predicting: push up (negative gradient)
  EXPECT_FLOAT_EQ(grad[1], 0.05f);   // over-predicting: push down, gently
  EXPECT_FLOAT_EQ(grad[2], 0.0f);
  for (float h : hess) EXPECT_FLOAT_EQ(h, 1.0f);
}

TEST(Model, LearnsAKnownQuantile) {
  const auto& model = trained();
  const auto& meta = model.metadata();
  EXPECT_GT(meta.rows_train, 0u);
  EXPECT_GT(meta.rows_valid, 0u);
  EXPECT_GT(meta.rounds, 0);
  EXPECT_LE(meta.rounds, 120);
  EXPECT_EQ(meta.inputs, model_inputs());
  // Fresh series from the same process, predicted at day 12 from 12 days of history.
  auto test = synthetic(30, 12, 99);
  const double truth_factor = std::exp(0.4 * 1.6448536);
  double worst = 0;
  for (const auto& s : test) {
    const FeatureRow row = compute_features(s, kStart + 12 * kSecondsPerDay);
    const Prediction p = model.predict(row);
    const double level = s.spec.cpu_request.value() / 4;
    const double err = std::abs(p.cpu_cores / (level * truth_factor) - 1);
    worst = std::max(worst, err);
    // Memory peak of level * U(1, 1.1): predicted near the top.
    const double mem = s.spec.memory_request.value() / 2;
    EXPECT_GT(p.memory_bytes, mem * 0.95) << s.key.name;
    EXPECT_LT(p.memory_bytes, mem * 1.25) << s.key.name;
  }
  EXPECT_LT(worst, 0.2);
}

TEST(Model, SaveLoadRoundTripAndBatch) {
  const QuantileModel shipped = QuantileModel::load(std::filesystem::path(SIZEGUARD_SOURCE_DIR) / "recommender/models/default");
  EXPECT_GT(shipped.metadata().calibrated_cpu_margin, 0) << "the default model ships calibrated margins";
  const auto& model = trained();
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-model-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  model.save(dir);
  {  // calibration survives save/load
    QuantileModel copy = QuantileModel::load(dir);
    copy.set_calibration(2.5, 1.25);
    copy.save(dir / "calibrated");
    const QuantileModel again = QuantileModel::load(dir / "calibrated");
    EXPECT_DOUBLE_EQ(again.metadata().calibrated_cpu_margin, 2.5);
    EXPECT_DOUBLE_EQ(again.metadata().calibrated_memory_margin, 1.25);
    EXPECT_EQ(again.version(), model.version());
    // The gate and the training feature ranges survive too.
    ModelMetadata::Gate cpu{true, false, false, 0.5, 0.4, 1.3}, memory{true, true, false, 0.2, 0.3, 1.1};
    copy.set_gate(cpu, memory, 17, 20);
    copy.save(dir / "gated");
    const QuantileModel gated = QuantileModel::load(dir / "gated");
    const auto& g = gated.metadata();
    EXPECT_TRUE(g.cpu_gate.decided);
    EXPECT_FALSE(g.cpu_gate.use_model);
    EXPECT_DOUBLE_EQ(g.cpu_gate.baseline_margin, 1.3);
    EXPECT_TRUE(g.memory_gate.use_model);
    EXPECT_DOUBLE_EQ(g.memory_gate.baseline_slack, 0.3);
    EXPECT_EQ(g.gate_last_day, 20);
    ModelMetadata::Gate mix{true, true, true, 0.5, 0.4, 1.0, 0.3, 1.25};
    copy.set_gate(mix, memory, 17, 20);
    copy.save(dir / "blend");
    const QuantileModel blend = QuantileModel::load(dir / "blend");
    EXPECT_TRUE(blend.metadata().cpu_gate.use_blend);
    EXPECT_TRUE(blend.metadata().cpu_gate.use_model);
    EXPECT_DOUBLE_EQ(blend.metadata().cpu_gate.blend_margin, 1.25);
    EXPECT_EQ(g.input_low, model.metadata().input_low);
    EXPECT_EQ(g.input_low.size(), feature_count());
  }
  EXPECT_TRUE(std::filesystem::exists(dir / "model.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "metadata.json"));
  const QuantileModel loaded = QuantileModel::load(dir);
  EXPECT_EQ(loaded.version(), model.version());
  EXPECT_EQ(loaded.metadata().rounds, model.metadata().rounds);
  EXPECT_EQ(loaded.metadata().xgboost_version, model.metadata().xgboost_version);
  auto test = synthetic(8, 4, 5);
  std::vector<FeatureRow> rows;
  for (const auto& s : test) rows.push_back(compute_features(s, kStart + 3 * kSecondsPerDay + 3600));
  std::vector<Prediction> a, b;
  model.predict(rows, a);
  loaded.predict(rows, b);
  ASSERT_EQ(a.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(a[i].cpu_cores, b[i].cpu_cores);
    EXPECT_EQ(a[i].memory_bytes, b[i].memory_bytes);
    EXPECT_EQ(a[i].cpu_tail, b[i].cpu_tail);
    const Prediction one = loaded.predict(rows[i]);  // single row == batch row
    EXPECT_EQ(one.cpu_cores, b[i].cpu_cores);
    EXPECT_EQ(one.cpu_tail, b[i].cpu_tail);
  }
  // The tail boosters are files of their own, listed in the metadata.
  EXPECT_EQ(loaded.metadata().cpu_tail_quantiles, model.metadata().cpu_tail_quantiles);
  EXPECT_EQ(loaded.metadata().cpu_tail_rounds, model.metadata().cpu_tail_rounds);
  std::filesystem::remove(dir / "cpu-tail-2.json");
  try {
    QuantileModel::load(dir);
    ADD_FAILURE() << "loaded a model with a tail booster missing";
  } catch (const ModelError& e) {
    EXPECT_TRUE(e.bad_input());
    EXPECT_NE(std::string(e.what()).find("cpu-tail-2.json: no such file"), std::string::npos) << e.what();
  }
  // Contributions: top 3, no indicator.
  const auto ex = loaded.explain(rows[0], false, 3);
  EXPECT_EQ(ex.size(), 3u);
  for (const auto& c : ex) EXPECT_NE(c.feature, "target_is_memory");
  std::filesystem::remove_all(dir);
}

TEST(Model, TailForecastsDescribeTheNextDayAndCanBeOff) {
  const auto& model = trained();
  const auto& m = model.metadata();
  ASSERT_EQ(m.cpu_tail_quantiles, (std::vector<double>{0.8, 0.95, 0.99}));
  ASSERT_EQ(m.cpu_tail_rounds.size(), 3u);
  for (int r : m.cpu_tail_rounds) EXPECT_GE(r, 1);
  // Over many series, a higher quantile forecasts a higher level (each booster learned its own).
  auto test = synthetic(16, 6, 21);
  std::vector<FeatureRow> rows;
  for (const auto& s : test) rows.push_back(compute_features(s, kStart + 5 * kSecondsPerDay));
  std::vector<Prediction> p;
  model.predict(rows, p);
  double spread[2] = {0, 0};  // log(q95 / q80), log(q99 / q95)
  for (const auto& x : p)
    for (size_t j = 0; j < 2; ++j) spread[j] += std::log(x.cpu_tail[j + 1] / x.cpu_tail[j]) / static_cast<double>(p.size());
  EXPECT_GT(spread[0], 0);
  EXPECT_GT(spread[1], 0);
  EXPECT_EQ(p[0].cpu_tail[3], 0) << "past the tails in use";
  // A batch of 16 predicts its tails on a second thread: the same numbers as one row at a time.
  for (size_t i = 0; i < rows.size(); ++i) {
    const Prediction one = model.predict(rows[i]);
    EXPECT_EQ(one.cpu_cores, p[i].cpu_cores);
    EXPECT_EQ(one.memory_bytes, p[i].memory_bytes);
    EXPECT_EQ(one.cpu_tail, p[i].cpu_tail);
  }
  // The pooled level of each series is one of its forecast points (the main quantile's and the
  // tails', each raised to those of lower quantiles where they cross).
  const auto levels = pooled_forecast_cpu(p, m, 0.05);
  ASSERT_EQ(levels.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    std::vector<std::pair<double, double>> points{{m.cpu_quantile, p[i].cpu_cores}};
    for (size_t j = 0; j < 3; ++j) points.push_back({m.cpu_tail_quantiles[j], p[i].cpu_tail[j]});
    std::sort(points.begin(), points.end());
    std::vector<double> allowed;
    double top = 0;
    for (const auto& [q, level] : points) allowed.push_back(top = std::max(top, level));
    EXPECT_TRUE(std::find(allowed.begin(), allowed.end(), levels[i]) != allowed.end()) << i << ": " << levels[i];
  }
  EXPECT_TRUE(std::isnan(pooled_forecast_cpu(p, m, 0).front())) << "risk 0: off";
  // Without tail boosters: no tail files, no pooled forecast, and the CPU blend uses the raw prediction.
  TrainOptions o = fast_options();
  o.cpu_tail_quantiles.clear();
  o.max_rounds = 20;
  const QuantileModel plain = QuantileModel::train(synthetic(8, 10, 11), o);
  EXPECT_TRUE(plain.metadata().cpu_tail_quantiles.empty());
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-plain-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  plain.save(dir);
  EXPECT_FALSE(std::filesystem::exists(dir / "cpu-tail-1.json"));
  EXPECT_TRUE(QuantileModel::load(dir).metadata().cpu_tail_quantiles.empty());
  std::vector<Prediction> q;
  plain.predict(rows, q);
  EXPECT_TRUE(std::isnan(pooled_forecast_cpu(q, plain.metadata(), 0.05).front()));
  Recommendation r;
  r.raw = q[0], r.recent_cpu = 0.5;
  EXPECT_DOUBLE_EQ(blend_cpu_of(r, 2.0), blend_cpu(q[0].cpu_cores, 2.0, 0.5));
  r.forecast_cpu = 3.0;
  EXPECT_DOUBLE_EQ(blend_cpu_of(r, 2.0), blend_cpu(3.0, 2.0, 0.5));
  // A tail quantile outside (0, 1), or too many tails, in the metadata is refused.
  for (const char* tails : {R"([{"quantile": 1.5, "rounds": 3}])", R"([{"quantile": 0.9, "rounds": 3}, {"quantile": 0.9, "rounds": 3}, {"quantile": 0.9, "rounds": 3}, {"quantile": 0.9, "rounds": 3}, {"quantile": 0.9, "rounds": 3}])"}) {
    std::ifstream in(dir / "metadata.json");
    auto meta = nlohmann::json::parse(in);
    in.close();
    meta["cpu_tails"] = nlohmann::json::parse(tails);
    std::ofstream(dir / "metadata.json") << meta.dump();
    EXPECT_THROW(QuantileModel::load(dir), ModelError) << tails;
  }
  std::filesystem::remove_all(dir);
}

TEST(Model, OutOfDistributionSeriesFallBackToTheBaseline) {
  const auto& model = trained();
  auto data = synthetic(3, 8, 21);
  const int64_t t = kStart + 8 * kSecondsPerDay;
  const FeatureRow usual = compute_features(data[1], t);
  EXPECT_FALSE(out_of_distribution(model.metadata(), usual).cpu);
  EXPECT_FALSE(out_of_distribution(model.metadata(), usual).memory);
  // A host 10^4 times larger than anything trained on (CPU only): CPU falls back, memory not.
  UsageSeries huge = data[1];
  for (auto& x : huge.samples) x.cpu_cores *= 1e4;
  const DistributionCheck far = out_of_distribution(model.metadata(), compute_features(huge, t));
  EXPECT_TRUE(far.cpu);
  EXPECT_FALSE(far.memory);
  RecommendationPolicy policy;
  policy.margin = 1.2;
  policy.baseline_cpu_margin = 1.1;
  policy.cpu_max = 1e9;
  const Recommendation r = recommend(model, huge, t, policy, 0);
  EXPECT_TRUE(r.out_of_distribution);
  EXPECT_FALSE(r.cpu_from_model);
  EXPECT_TRUE(r.memory_from_model);
  EXPECT_DOUBLE_EQ(r.cpu_cores, round_up_clamped(vpa_recommend(huge, t).cpu_cores * 1.1, 0.01, 1e9, 0.005));
  EXPECT_EQ(r.explanation.at(0).feature, "cpu:baseline:out_of_distribution");
  policy.distribution_guard = false;
  EXPECT_TRUE(recommend(model, huge, t, policy, 0).cpu_from_model);
  // History that stopped more than 7 days ago (a task not running): the level would be the
  // floor, which training never saw; both resources fall back.
  const DistributionCheck stale = out_of_distribution(model.metadata(), compute_features(data[1], t + 8 * kSecondsPerDay));
  EXPECT_TRUE(stale.cpu);
  EXPECT_TRUE(stale.memory);
}

TEST(Model, LoadRefusesMismatchedMetadata) {
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-model-bad-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  trained().save(dir);
  auto meta = nlohmann::json::parse(std::ifstream(dir / "metadata.json"));
  meta["inputs"][3] = "cpu_p98_1h";
  std::ofstream(dir / "metadata.json") << meta.dump();
  try {
    QuantileModel::load(dir);
    FAIL() << "mismatch accepted";
  } catch (const ModelError& e) {
    EXPECT_TRUE(e.bad_input());
    EXPECT_NE(std::string(e.what()).find("feature mismatch: input 3 is 'cpu_p98_1h' in the model but 'cpu_p99_1h' here"),
              std::string::npos)
        << e.what();
  }
  meta["inputs"].erase(meta["inputs"].size() - 1);
  std::ofstream(dir / "metadata.json") << meta.dump();
  EXPECT_THROW(QuantileModel::load(dir), ModelError);
  std::ofstream(dir / "metadata.json") << "{";
  try {
    QuantileModel::load(dir);
    FAIL();
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid metadata"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
  try {
    QuantileModel::load(dir);
    FAIL();
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos) << e.what();
  }
}

TEST(Model, TrainRejectsEmptyInput) {
  try {
    QuantileModel::train({}, fast_options());
    FAIL();
  } catch (const ModelError& e) {
    EXPECT_TRUE(e.bad_input());
  }
  auto tiny = synthetic(2, 1, 3);  // one day: no target window with history before validation
  EXPECT_THROW(QuantileModel::train(tiny, fast_options()), ModelError);
}

// train --also: a CPU-only fleet (Azure's VMs) trains the CPU rows beside this cluster's data; its
// memory, 0 because unknown, teaches nothing and widens nothing.
TEST(Model, AnotherFleetWithoutMemoryTrainsOnlyCpu) {
  TrainOptions o = fast_options();
  o.cpu_tail_quantiles.clear();
  o.max_rounds = 40;
  const auto own = synthetic(8, 8, 5);  // memory 0.1-10 GB
  auto mixed = own;
  for (auto s : synthetic(8, 8, 6)) {
    s.key.namespace_ = "azure";
    s.has_memory = false;
    for (auto& x : s.samples) x.memory_bytes = 0;
    mixed.push_back(std::move(s));
  }
  const QuantileModel alone = QuantileModel::train(own, o);
  o.fleet_of_series.assign(8, 0);
  o.fleet_of_series.resize(16, 1);
  const QuantileModel both = QuantileModel::train(mixed, o);
  const auto& names = feature_names();
  const size_t mem_level = static_cast<size_t>(std::find(names.begin(), names.end(), "mem_level") - names.begin());
  ASSERT_LT(mem_level, names.size());
  // The guard's memory ranges come from the series that measured memory (0 bytes would floor
  // at 1 MiB: log2^-10 GiB = -6.9).
  EXPECT_DOUBLE_EQ(both.metadata().input_low[mem_level], alone.metadata().input_low[mem_level]);
  EXPECT_DOUBLE_EQ(both.metadata().input_high[mem_level], alone.metadata().input_high[mem_level]);
  EXPECT_DOUBLE_EQ(both.metadata().cold_memory_request_ratio, alone.metadata().cold_memory_request_ratio);
  EXPECT_EQ(both.metadata().rows_train, 2 * alone.metadata().rows_train);  // its CPU rows did train
  // The memory forecasts of this cluster's series stay near their peaks (1.1 x the level).
  for (const auto& s : own) {
    const Prediction p = both.predict(compute_features(s, kStart + 7 * kSecondsPerDay));
    EXPECT_GT(p.memory_bytes, 0.5 * s.samples.back().memory_bytes) << s.key.to_string();
  }
  o.fleet_of_series.pop_back();
  try {
    QuantileModel::train(mixed, o);
    ADD_FAILURE() << "a fleet list of the wrong size was accepted";
  } catch (const ModelError& e) {
    EXPECT_TRUE(e.bad_input());
    EXPECT_NE(std::string(e.what()).find("one fleet per series"), std::string::npos) << e.what();
  }
}

TEST(Model, VpaBaseLearnsACorrectionOfTheBaseline) {
  auto data = synthetic(12, 10, 3);
  TrainOptions o = fast_options();
  o.max_rounds = 20;
  o.vpa_base = true;
  const QuantileModel model = QuantileModel::train(data, o);
  EXPECT_EQ(model.metadata().base, "vpa");
  EXPECT_TRUE(model.needs_baseline());
  const int64_t t = kStart + 9 * kSecondsPerDay;
  const FeatureRow row = compute_features(data[4], t);
  EXPECT_THROW(model.predict(row), ModelError) << "a correction needs its baseline";
  const BaselineRecommendation v = vpa_recommend(data[4], t);
  const Prediction base{v.cpu_cores, v.memory_bytes};
  const Prediction p = model.predict(row, &base);
  // prediction = VPA x exp(trees): the trees' raw output is the log ratio to VPA.
  std::vector<float> x(row.values.begin(), row.values.end()), out;
  x.push_back(0.0f);
  model.predict_raw(x.data(), 1, out);
  EXPECT_NEAR(std::log(p.cpu_cores / v.cpu_cores), out[0], 1e-5);
  // recommend supplies VPA itself.
  RecommendationPolicy policy;
  policy.margin = 1.0, policy.distribution_guard = false, policy.risk_budget = false;
  EXPECT_DOUBLE_EQ(recommend(model, data[4], t, policy, 0).raw.cpu_cores, p.cpu_cores);
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-model-vpa-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  model.save(dir);
  EXPECT_EQ(QuantileModel::load(dir).metadata().base, "vpa");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sizeguard
