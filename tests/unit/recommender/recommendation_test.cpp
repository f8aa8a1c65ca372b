// How forecasts become recommendations: rounding and clamping, model vs cold start, the memory
// request floor, and the per-series risk budget.
#include "recommender/recommendation.h"
#include "recommender/baselines.h"
#include "trained_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace sizeguard {
namespace {

using namespace test_model;

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

}  // namespace
}  // namespace sizeguard
