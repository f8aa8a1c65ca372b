// The XGBoost quantile model: pinball objective, training on synthetic data with a known
// quantile, save/load round trip, metadata checks, recommendation rounding and cold start.
#include "recommender/model.h"
#include "recommender/recommendation.h"
#include "recommender/baselines.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1372636800;  // 2013-07-01T00:00:00Z

// Series whose CPU is level * lognormal(0, 0.4) (true p95 = level * exp(0.4 * 1.645)) and
// memory level * (1 + 0.1 * uniform); levels span 3 orders of magnitude.
std::vector<UsageSeries> synthetic(int count, int days, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<double> noise(0, 0.4);
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<UsageSeries> out;
  for (int i = 0; i < count; ++i) {
    UsageSeries s;
    s.key = {"ns", "Deployment", "app" + std::to_string(i), "main"};
    const double level = 0.01 * std::pow(1000.0, static_cast<double>(i) / (count - 1));
    const double mem = 1e8 * std::pow(100.0, unit(rng));
    s.spec.cpu_request = level * 4;
    s.spec.memory_request = mem * 2;
    for (int64_t t = kStart; t < kStart + days * kSecondsPerDay; t += 300)
      s.samples.push_back({t, level * noise(rng), mem * (1 + 0.1 * unit(rng))});
    out.push_back(std::move(s));
  }
  return out;
}

TrainOptions fast_options() {
  TrainOptions o;
  o.max_rounds = 200;
  o.validation_days = 2;
  o.eta = 0.1;
  o.max_depth = 4;
  o.min_child_weight = 20;
  o.nthread = 2;
  o.budget_memory_risk = 0;  // the bare predictions; RiskBudget.* turn the budget on
  return o;
}

// Trained once; never destroyed, so no XGBoost handle is freed during static destruction
// (after the library's own globals may be gone).
const QuantileModel& trained() {
  static const QuantileModel* model = [] {
    auto data = synthetic(30, 10, 11);
    return new QuantileModel(QuantileModel::train(data, fast_options()));
  }();
  return *model;
}

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

TEST(Recommendation, RoundingAndClamping) {
  EXPECT_DOUBLE_EQ(round_up_clamped(0.2501, 0.01, 64, 0.005), 0.255);
  EXPECT_DOUBLE_EQ(round_up_clamped(0.25, 0.01, 64, 0.005), 0.25);
  EXPECT_DOUBLE_EQ(round_up_clamped(0.0001, 0.01, 64, 0.005), 0.01);
  EXPECT_DOUBLE_EQ(round_up_clamped(100, 0.01, 64, 0.005), 64);
  EXPECT_DOUBLE_EQ(round_up_clamped(10.0, 0.01, 10.003, 0.005), 10.0);  // not above max
  EXPECT_DOUBLE_EQ(round_up_clamped(NAN, 0.01, 64, 0.005), 64);
  EXPECT_DOUBLE_EQ(round_up_clamped(1048576.5, 0, 1e12, 1048576), 2097152);
}

TEST(Recommendation, FromModelAndColdStart) {
  const auto& model = trained();
  auto data = synthetic(3, 8, 21);
  RecommendationPolicy policy;
  policy.margin = 1.2;
  const auto rec = recommend(model, data[1], kStart + 8 * kSecondsPerDay, policy, 2);
  EXPECT_FALSE(rec.cold_start);
  const Prediction p = model.predict(compute_features(data[1], kStart + 8 * kSecondsPerDay));
  EXPECT_DOUBLE_EQ(rec.cpu_cores, round_up_clamped(p.cpu_cores * 1.2, 0.01, 64, 0.005));
  EXPECT_DOUBLE_EQ(rec.memory_bytes, round_up_clamped(p.memory_bytes * 1.2, policy.memory_min, policy.memory_max, 1048576));
  RecommendationPolicy split = policy;
  split.memory_margin = 2.0;  // calibrated margins differ per resource
  const auto rec2 = recommend(model, data[1], kStart + 8 * kSecondsPerDay, split, 2);
  EXPECT_DOUBLE_EQ(rec2.cpu_cores, rec.cpu_cores);
  EXPECT_DOUBLE_EQ(rec2.memory_bytes, round_up_clamped(p.memory_bytes * 2.0, policy.memory_min, policy.memory_max, 1048576));
  EXPECT_EQ(std::fmod(rec.memory_bytes, 1048576.0), 0.0);
  EXPECT_GT(rec.confidence, 0.5);
  EXPECT_LE(rec.confidence, 1.0);
  EXPECT_EQ(rec.explanation.size(), 4u);
  EXPECT_EQ(rec.explanation[0].feature.rfind("cpu:", 0), 0u);
  EXPECT_EQ(rec.explanation[2].feature.rfind("memory:", 0), 0u);

  // No history: spec-only estimate, flagged.
  UsageSeries fresh;
  fresh.key = {"ns", "Deployment", "new", "main"};
  fresh.spec.cpu_request = 1.0;
  fresh.spec.memory_limit = 1073741824.0;
  const auto cold = recommend(model, fresh, kStart, policy);
  EXPECT_TRUE(cold.cold_start);
  const auto& m = model.metadata();
  EXPECT_DOUBLE_EQ(cold.cpu_cores, round_up_clamped(1.0 * m.cold_cpu_request_ratio * 1.2, 0.01, 64, 0.005));
  EXPECT_DOUBLE_EQ(cold.memory_bytes,
                   round_up_clamped(1073741824.0 * m.cold_memory_request_ratio * 1.2, policy.memory_min,
                                    policy.memory_max, 1048576));
  UsageSeries bare;
  bare.key = {"kube-system", "DaemonSet", "agent", "main"};
  const auto def = cold_start_recommendation(bare, nullptr, RecommendationPolicy{.margin = 1.0});
  EXPECT_TRUE(def.cold_start);
  EXPECT_DOUBLE_EQ(def.cpu_cores, 0.05);
  EXPECT_DOUBLE_EQ(def.memory_bytes, 128.0 * 1048576);
}

TEST(Recommendation, ABigContainerIsNotCappedBelowItsUsage) {
  // A 96-core host or a large batch container: the old 64-core cap recommended less than it
  // used on every day (the Alibaba hosts' CPU).
  UsageSeries big;
  big.key = {"ns", "StatefulSet", "db", "main"};
  for (int64_t t = kStart; t < kStart + 3 * kSecondsPerDay; t += 300) big.samples.push_back({t, 80.0, 4e11});
  RecommendationPolicy vpa_only;
  vpa_only.cpu_from_model = vpa_only.memory_from_model = false;
  const auto r = recommend(trained(), big, kStart + 3 * kSecondsPerDay, vpa_only, 0);
  EXPECT_GE(r.cpu_cores, 80.0);
  EXPECT_GE(r.memory_bytes, 4e11);
}

TEST(Recommendation, MemoryOfANewOrResumedContainerIsNeverBelowItsRequest) {
  const auto& model = trained();
  const int64_t now = kStart + 8 * kSecondsPerDay;
  auto data = synthetic(3, 8, 21);  // memory requests: twice the usage level
  UsageSeries settled = data[1];
  UsageSeries fresh = settled;      // started 12 h ago
  std::erase_if(fresh.samples, [&](const UsageSample& x) { return x.timestamp < now - kSecondsPerDay / 2; });
  UsageSeries resumed = settled;    // ran for 6 days, then nothing for the last 2
  std::erase_if(resumed.samples, [&](const UsageSample& x) { return x.timestamp >= now - 2 * kSecondsPerDay; });
  const double request = *settled.spec.memory_request;

  EXPECT_EQ(memory_request_floor(settled, now, 1), 0);
  EXPECT_EQ(memory_request_floor(fresh, now, 1), request);
  EXPECT_EQ(memory_request_floor(resumed, now, 1), request);
  EXPECT_EQ(memory_request_floor(resumed, now, 1.5), request);  // away longer than that
  EXPECT_EQ(memory_request_floor(resumed, now, 3), 0);          // a 2-day pause is within 3 days
  EXPECT_EQ(memory_request_floor(resumed, now, 0), 0);        // off
  EXPECT_EQ(memory_request_floor(fresh, kStart, 1), 0);       // no history yet: cold start decides
  UsageSeries limit_only = fresh;
  limit_only.spec = {};
  limit_only.spec.memory_limit = 3e9;
  EXPECT_EQ(memory_request_floor(limit_only, now, 1), 3e9);
  limit_only.spec = {};
  EXPECT_EQ(memory_request_floor(limit_only, now, 1), 0);    // nothing to hold on to

  RecommendationPolicy policy;
  policy.margin = 1.0;
  auto has_floor_tag = [](const Recommendation& r) {
    return std::any_of(r.explanation.begin(), r.explanation.end(),
                       [](const Contribution& c) { return c.feature == "memory:request_floor:new_or_resumed"; });
  };
  const auto recs = recommend_batch(model, {settled, fresh, resumed}, now, policy, 0);
  EXPECT_LT(recs[0].memory_bytes, request);  // the model cuts a settled container's memory
  EXPECT_FALSE(has_floor_tag(recs[0]));
  for (size_t i : {1, 2}) {
    EXPECT_EQ(recs[i].memory_bytes, round_up_clamped(request, policy.memory_min, policy.memory_max, policy.memory_step)) << i;
    EXPECT_TRUE(has_floor_tag(recs[i])) << i;
    EXPECT_TRUE(recs[i].memory_at_request) << i;
  }
  EXPECT_FALSE(recs[0].memory_at_request);
  EXPECT_LT(recs[1].cpu_cores, *settled.spec.cpu_request);  // CPU is only throttled: no floor
  policy.memory_request_floor_days = 0;
  const auto off = recommend_batch(model, {settled, fresh, resumed}, now, policy, 0);
  EXPECT_LT(off[1].memory_bytes, request);
  EXPECT_FALSE(has_floor_tag(off[1]));
}


// ---- per-series risk budgeting (spend_risk_budget) ----------------------------------------

// A feature row whose 7-day p50 and p95 (log units) give the budget's spread sigma.
FeatureRow row_with_spread(double sigma) {
  FeatureRow r;
  r.values.assign(feature_count(), 0.0f);
  const auto& names = feature_names();
  auto set = [&](const char* name, double v) {
    r.values[static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin())] = static_cast<float>(v);
  };
  set("cpu_p50_7d", 0), set("cpu_p95_7d", 1.6448536 * sigma);
  set("mem_p50_7d", 0), set("mem_p95_7d", 1.6448536 * sigma);
  return r;
}

double upper_tail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

TEST(RiskBudget, SpendsThePooledRiskWhereItSavesMost) {
  // Four series alike in spread, their forecasts (the log-normal centre) 8x apart in size.
  std::vector<FeatureRow> rows;
  std::vector<Prediction> p;
  for (double cores : {1.0, 2.0, 4.0, 8.0}) rows.push_back(row_with_spread(0.5)), p.push_back({cores, 1e9});
  const std::vector<Prediction> before = p;
  spend_risk_budget(rows, p, 0.1, 0);
  std::vector<double> z;
  double risk = 0, cores = 0;
  for (size_t k = 0; k < p.size(); ++k) {
    z.push_back(std::log(p[k].cpu_cores / before[k].cpu_cores) / 0.5);
    risk += upper_tail(z.back()) / static_cast<double>(p.size());
    cores += p[k].cpu_cores;
    EXPECT_EQ(p[k].memory_bytes, 1e9) << "memory budget 0: left alone";
  }
  EXPECT_NEAR(risk, 0.1, 1e-6) << "the pooled risk is the budget";
  // A window is a window whatever the size, so the large series take more of the risk.
  for (size_t k = 1; k < z.size(); ++k) EXPECT_LT(z[k], z[k - 1]) << k;
  // And it costs fewer cores than spending it evenly (every series at its own p90).
  double even = 0;
  for (const auto& b : before) even += b.cpu_cores * std::exp(1.2815516 * 0.5);
  EXPECT_LT(cores, 0.95 * even);  // 7% fewer here
  // The same sizes, one series far burstier: it gets a lower z (its tail is expensive).
  std::vector<FeatureRow> mixed{row_with_spread(0.2), row_with_spread(1.5)};
  std::vector<Prediction> q{{1.0, 1e9}, {1.0, 1e9}};
  spend_risk_budget(mixed, q, 0.05, 0);
  EXPECT_LT(std::log(q[1].cpu_cores) / 1.5, std::log(q[0].cpu_cores) / 0.2);
  // Memory: the prediction is the day's peak, the centre 2.33 sigma (and 0.5) below it; one
  // series alone gets the budget itself.
  std::vector<FeatureRow> one{row_with_spread(0.1)};
  std::vector<Prediction> m{{1.0, 4e9}};
  spend_risk_budget(one, m, 0, 0.01);
  EXPECT_NEAR(upper_tail((std::log(m[0].memory_bytes / 4e9) + 2.33 * 0.1 + 0.5) / 0.1), 0.01, 1e-6);
  EXPECT_EQ(m[0].cpu_cores, 1.0);
}

TEST(RiskBudget, RecordedInTheModelAndSpentByRecommend) {
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-model-budget-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  trained().save(dir);
  QuantileModel model = QuantileModel::load(dir);
  EXPECT_EQ(model.metadata().budget_memory_risk, 0) << "no risk_budget in the metadata: off";
  model.set_risk_budget(0.05, 0.01);
  model.save(dir / "budget");
  const QuantileModel budgeted = QuantileModel::load(dir / "budget");
  EXPECT_DOUBLE_EQ(budgeted.metadata().budget_cpu_risk, 0.05);
  EXPECT_DOUBLE_EQ(budgeted.metadata().budget_memory_risk, 0.01);
  EXPECT_DOUBLE_EQ(TrainOptions{}.budget_memory_risk, 0.01) << "train records a memory budget by default";
  auto data = synthetic(12, 8, 21);
  const int64_t t = kStart + 8 * kSecondsPerDay;
  RecommendationPolicy policy;
  policy.margin = 1.2;
  const auto spent = recommend_batch(budgeted, data, t, policy, 0);
  policy.risk_budget = false;
  const auto bare = recommend_batch(budgeted, data, t, policy, 0);
  std::vector<FeatureRow> rows;
  for (const auto& s : data) rows.push_back(compute_features(s, t));
  std::vector<Prediction> expected;
  budgeted.predict(rows, expected);
  for (size_t i = 0; i < data.size(); ++i) EXPECT_EQ(bare[i].raw.memory_bytes, expected[i].memory_bytes);
  spend_risk_budget(rows, expected, 0.05, 0.01);
  size_t moved = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    EXPECT_DOUBLE_EQ(spent[i].raw.cpu_cores, expected[i].cpu_cores);
    EXPECT_DOUBLE_EQ(spent[i].raw.memory_bytes, expected[i].memory_bytes);
    EXPECT_DOUBLE_EQ(spent[i].memory_bytes, round_up_clamped(expected[i].memory_bytes * 1.2, policy.memory_min,
                                                             policy.memory_max, policy.memory_step));
    moved += spent[i].raw.memory_bytes != bare[i].raw.memory_bytes;
  }
  EXPECT_EQ(moved, data.size());
  std::filesystem::remove_all(dir);
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

// ---- the recommendations snapshot (recommend.h) -------------------------------------------
#include "recommender/recommend.h"

namespace sizeguard {
namespace {

TEST(Snapshot, QuantitiesAndJsonRoundTrip) {
  Recommendation r;
  r.cpu_cores = 0.25;
  r.memory_bytes = 512.0 * 1048576;
  r.confidence = 0.8;
  r.explanation = {{"cpu:cpu_p95_24h", 0.1234567}, {"memory:mem_max_7d", -0.05}};
  const auto c = to_container_recommendation(r);
  EXPECT_EQ(c.cpu, "250m");
  EXPECT_EQ(c.memory, "512Mi");
  Recommendation big = r;
  big.cpu_cores = 2.0;
  big.memory_bytes = 1073741824.0;
  big.cold_start = true;
  EXPECT_EQ(to_container_recommendation(big).cpu, "2");
  EXPECT_EQ(to_container_recommendation(big).memory, "1Gi");

  std::vector<UsageSeries> series(2);
  series[0].key = {"team-a", "Deployment", "web", "app"};
  series[1].key = {"team-a", "StatefulSet", "db", "pg"};
  const auto snap = make_snapshot(series, {r, big}, "xgb-123", 1374364800);
  EXPECT_EQ(snap.generated_at, "2013-07-21T00:00:00Z");
  const auto text = snapshot_to_json(snap);
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["modelVersion"], "xgb-123");
  EXPECT_EQ(j["recommendations"]["team-a/Deployment/web/app"]["cpu"], "250m");
  EXPECT_EQ(j["recommendations"]["team-a/StatefulSet/db/pg"]["coldStart"], true);
  EXPECT_EQ(j["recommendations"]["team-a/Deployment/web/app"]["explanation"][0]["feature"], "cpu:cpu_p95_24h");

  const auto path = std::filesystem::temp_directory_path() / ("sizeguard-snap-" + std::to_string(::getpid()) + ".json");
  save_recommendations(snap, path);
  const auto back = load_recommendations(path);
  std::filesystem::remove(path);
  EXPECT_EQ(back.model_version, snap.model_version);
  EXPECT_EQ(back.generated_at, snap.generated_at);
  ASSERT_EQ(back.recommendations.size(), 2u);
  const auto& web = back.recommendations.at("team-a/Deployment/web/app");
  EXPECT_EQ(web.cpu, "250m");
  EXPECT_DOUBLE_EQ(web.cpu_cores, 0.25);
  EXPECT_DOUBLE_EQ(web.memory_bytes, 512.0 * 1048576);
  EXPECT_DOUBLE_EQ(web.confidence, 0.8);
  EXPECT_FALSE(web.cold_start);
  ASSERT_EQ(web.explanation.size(), 2u);
  EXPECT_NEAR(web.explanation[0].contribution, 0.1235, 1e-12);  // 4 decimals in the file
  EXPECT_EQ(snapshot_to_json(back), text);
}

TEST(Snapshot, LoaderErrorsAreClear) {
  auto error_of = [](const std::string& text) {
    try {
      parse_recommendations(text, "recs.json");
    } catch (const SnapshotError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("{").find("recs.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"modelVersion": 1e400})").find("recs.json: not valid JSON"), std::string::npos);
  EXPECT_EQ(error_of(R"({"generatedAt": "x", "recommendations": {}})"), "recs.json: missing string field 'modelVersion'");
  EXPECT_EQ(error_of(R"({"modelVersion": "v", "generatedAt": "x"})"), "recs.json: missing object field 'recommendations'");
  const std::string head = R"({"modelVersion": "v", "generatedAt": "x", "recommendations": )";
  EXPECT_EQ(error_of(head + R"({"a/b/c": {"cpu": "1", "memory": "1Mi"}}})"),
            "recs.json: recommendations[\"a/b/c\"]: key must be namespace/kind/name/container");
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"memory": "1Mi"}}})"), "recs.json: recommendations[\"a/b/c/d\"]: missing 'cpu'");
  EXPECT_NE(error_of(head + R"({"a/b/c/d": {"cpu": "lots", "memory": "1Mi"}}})")
                .find("recommendations[\"a/b/c/d\"].cpu: bad quantity 'lots'"),
            std::string::npos);
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"cpu": "1", "memory": "1Mi", "confidence": 2}}})"),
            "recs.json: recommendations[\"a/b/c/d\"].confidence: expected a number in [0, 1]");
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"cpu": "1", "memory": "-1Mi"}}})"),
            "recs.json: recommendations[\"a/b/c/d\"].memory: must be positive, got '-1Mi'");
  EXPECT_EQ(error_of(head + R"({}})"), "no error");
  EXPECT_THROW(load_recommendations("/nonexistent/recs.json"), SnapshotError);
}

// The snapshot says what shipped per resource and why, so the report can show the gate's
// decision; a forced fallback (too little history) is not credited to the gate.
TEST(Snapshot, DecisionSaysWhichSourceShippedAndWhy) {
  ModelMetadata meta;
  meta.calibrated_cpu_margin = 2.5, meta.calibrated_memory_margin = 1.1;
  meta.cpu_gate = {true, true, true, 0.62, 0.60, 1.2, 0.52, 1.4};       // blend won
  meta.memory_gate = {true, false, false, 0.80, 0.78, 1.05, 0.79, 1.0};  // vpa won
  meta.gate_first_day = 17, meta.gate_last_day = 20;
  const RecommendationPolicy policy = shipped_policy(meta);
  std::vector<UsageSeries> series(1);
  series[0].key = {"team-a", "Deployment", "web", "app"};
  series[0].samples.push_back({1372636800, 0.5, 1e9});  // 2013-07-01T00:00Z: day 1
  std::vector<Recommendation> recs(3);
  recs[0].cpu_from_model = true, recs[0].memory_from_model = false, recs[0].memory_at_request = true;
  recs[1].cpu_from_model = false, recs[1].memory_from_model = false, recs[1].out_of_distribution = true;
  recs[2].cold_start = true;
  const SnapshotDecision d = describe_decision(meta, policy, recs, series, "bundled-default: 3.0 days of history");
  EXPECT_EQ(d.cpu.source, "blend");
  EXPECT_DOUBLE_EQ(d.cpu.margin, 1.4);
  EXPECT_TRUE(d.cpu.gated);
  EXPECT_DOUBLE_EQ(d.cpu.blend_slack, 0.52);
  EXPECT_EQ(d.cpu.baseline_series, 1u);  // the out-of-distribution series
  EXPECT_EQ(d.memory.source, "baseline");
  EXPECT_DOUBLE_EQ(d.memory.margin, 1.05);
  EXPECT_EQ(d.memory.baseline_series, 0u);  // all of memory is vpa by the gate, none "anyway"
  EXPECT_EQ(d.cold_start, 1u);
  EXPECT_EQ(d.gate_days, "2013-07-17..2013-07-20");
  const auto lines = decision_summary(d);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "cpu: blend x1.40 (slack at matched risk on 2013-07-17..2013-07-20: model 62.0%, blend 52.0%, "
                      "vpa 60.0%); 1 series on vpa (out of distribution)");
  EXPECT_EQ(lines[1].rfind("memory: vpa baseline x1.05 (", 0), 0u) << lines[1];
  EXPECT_EQ(d.memory_at_request, 1u);
  EXPECT_NE(lines[1].find("; 1 series held at their request (new or back after a pause)"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[0].find("held at"), std::string::npos);  // a memory floor, never CPU

  RecommendationSnapshot snap;
  snap.model_version = "xgb-1", snap.generated_at = "2013-07-21T00:00:00Z", snap.decision = d;
  const auto back = parse_recommendations(snapshot_to_json(snap));
  ASSERT_TRUE(back.decision);
  EXPECT_EQ(back.decision->model, d.model);
  EXPECT_EQ(back.decision->cpu.source, "blend");
  EXPECT_DOUBLE_EQ(back.decision->cpu.model_slack, 0.62);
  EXPECT_EQ(back.decision->gate_days, d.gate_days);
  EXPECT_EQ(back.decision->memory_at_request, 1u);
  EXPECT_EQ(snapshot_to_json(back), snapshot_to_json(snap));
  EXPECT_FALSE(parse_recommendations(R"({"modelVersion": "v", "generatedAt": "x", "recommendations": {}})").decision);

  // Too little history: every resource forced to vpa; the gate's numbers do not explain that.
  RecommendationPolicy forced = policy;
  forced.cpu_from_model = forced.memory_from_model = false;
  const SnapshotDecision f = describe_decision(meta, forced, recs, series, "baseline: 0.5 days of history");
  EXPECT_EQ(f.cpu.source, "baseline");
  EXPECT_FALSE(f.cpu.gated);
  EXPECT_TRUE(f.gate_days.empty() || f.memory.gated);
  EXPECT_NE(decision_summary(f)[0].find("(not gated)"), std::string::npos);

  try {
    parse_recommendations(R"({"modelVersion": "v", "generatedAt": "x", "recommendations": {},
                              "decision": {"cpu": {"source": "magic"}, "memory": {"source": "model"}}})",
                          "recs.json");
    FAIL() << "an unknown source loaded";
  } catch (const SnapshotError& e) {
    EXPECT_STREQ(e.what(), "recs.json: decision.cpu.source: expected \"model\", \"blend\" or \"baseline\"");
  }
}

}  // namespace
}  // namespace sizeguard
