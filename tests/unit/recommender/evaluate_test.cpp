// Backtest metrics on hand-computed series, day ranges, and an end-to-end backtest on
// synthetic data (outputs parse; the oracle scores as defined).
#include "recommender/evaluate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "recommender/baselines.h"
#include "recommender/features.h"

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1372636800;  // 2013-07-01T00:00:00Z

WindowSet windows(std::vector<double> rec, std::vector<double> usage) {
  WindowSet w;
  for (size_t i = 0; i < rec.size(); ++i) w.add(rec[i], usage[i], static_cast<uint32_t>(i % 2));
  return w;
}

TEST(Metrics, SlackAndUnderProvisioning) {
  const WindowSet w = windows({2, 2, 2, 2}, {1, 3, 2, 0});
  EXPECT_DOUBLE_EQ(slack_of(w), 3.0 / 8);  // (1 + 0 + 0 + 2) / 8
  EXPECT_DOUBLE_EQ(under_of(w), 0.25);      // only 3 > 2; equal is not under
  EXPECT_DOUBLE_EQ(slack_of(w, 2), 10.0 / 16);  // (3 + 1 + 2 + 4) / 16
  EXPECT_DOUBLE_EQ(under_of(w, 2), 0.0);
  EXPECT_DOUBLE_EQ(under_of(w, 0.5), 0.5);  // 3 and 2 exceed 1
  EXPECT_TRUE(std::isnan(slack_of(WindowSet{})));
}

TEST(Metrics, MatchedRiskMarginAndSweep) {
  const WindowSet w = windows({2, 2, 2, 2}, {1, 3, 2, 0});  // usage/rec: 0.5 1.5 1 0
  const ResourceScore s = score_windows(w, 0.25, {0.5, 1.0, 2.0});
  EXPECT_DOUBLE_EQ(s.slack, 3.0 / 8);
  EXPECT_DOUBLE_EQ(s.under, 0.25);
  EXPECT_DOUBLE_EQ(s.matched_margin, 1.0);  // smallest margin with at most 1 of 4 above
  EXPECT_DOUBLE_EQ(s.matched_slack, 3.0 / 8);
  EXPECT_DOUBLE_EQ(s.matched_under, 0.25);
  // Series 0 = windows 0 and 2 (never under), series 1 = windows 1 and 3 (1 of 2 under).
  EXPECT_DOUBLE_EQ(s.matched_series_p90_under, 0.45);
  ASSERT_EQ(s.curve.size(), 3u);
  for (const auto& p : s.curve) {
    EXPECT_NEAR(p.slack, slack_of(w, p.margin), 1e-12) << p.margin;
    EXPECT_NEAR(p.under, under_of(w, p.margin), 1e-12) << p.margin;
  }
  // Zero risk needs the largest ratio: 1.5.
  const ResourceScore z = score_windows(w, 0.0, {});
  EXPECT_DOUBLE_EQ(z.matched_margin, 1.5);
  EXPECT_DOUBLE_EQ(z.matched_under, 0.0);
  EXPECT_DOUBLE_EQ(z.matched_slack, (2 + 0 + 1 + 3) / 12.0);
  // A zero recommendation with usage is infinitely under-provisioned.
  const ResourceScore inf = score_windows(windows({0, 1}, {1, 1}), 0.0, {});
  EXPECT_TRUE(std::isinf(inf.matched_margin));
  EXPECT_TRUE(std::isnan(inf.matched_slack));
}

TEST(Metrics, Churn) {
  EXPECT_DOUBLE_EQ(churn_of({{1, 1.05, 1.5, NAN, 2}}), 0.5);  // 1->1.05 no, 1.05->1.5 yes
  EXPECT_DOUBLE_EQ(churn_of({{1, 1.1}, {1, 0.8}}), 0.5);       // exactly 10% is not churn
  EXPECT_TRUE(std::isnan(churn_of({{1}})));
}

TEST(Days, RangesAndDayOne) {
  EXPECT_EQ(parse_day_range("1-20"), std::make_pair(1, 20));
  EXPECT_EQ(parse_day_range("7"), std::make_pair(7, 7));
  for (const char* bad : {"", "0-3", "5-2", "a-b", "1-", "1-2x", "-3"}) EXPECT_THROW(parse_day_range(bad), std::invalid_argument) << bad;
  std::vector<UsageSeries> s(2);
  s[0].samples.push_back({kStart - 7000, 1, 1});  // 2013-06-30 22:03: day 1 is the next midnight
  s[1].samples.push_back({kStart + 50, 1, 1});
  EXPECT_EQ(day_one(s), kStart);
  s[0].samples.clear();
  s[1].samples.insert(s[1].samples.begin(), {kStart, 1, 1});
  EXPECT_EQ(day_one(s), kStart);  // exactly midnight
  EXPECT_EQ(day_one({}), 0);
  EXPECT_EQ(data_end(s), kStart + 51);  // just after the latest sample, whichever series has it
  s[0].samples.push_back({kStart - 10, 1, 1});
  EXPECT_EQ(data_end(s), kStart + 51);
  EXPECT_EQ(data_end({}), 0);
}

std::vector<UsageSeries> synthetic(int count, int days) {
  std::mt19937 rng(5);
  std::lognormal_distribution<double> noise(0, 0.5);
  std::vector<UsageSeries> out;
  for (int i = 0; i < count; ++i) {
    UsageSeries s;
    s.key = {"ns", "Deployment", "w" + std::to_string(i), "main"};
    const double level = 0.05 * (i + 1);
    for (int64_t t = kStart; t < kStart + days * kSecondsPerDay; t += 300)
      s.samples.push_back({t, level * noise(rng), 2e8 * (i + 1) * (1 + 0.05 * noise(rng))});
    out.push_back(std::move(s));
  }
  return out;
}

TEST(Backtest, EndToEndOnSyntheticSeries) {
  const auto data = synthetic(6, 8);
  TrainOptions t;
  t.max_rounds = 30;
  t.validation_days = 1;
  t.nthread = 2;
  t.train_end = kStart + 5 * kSecondsPerDay;
  const QuantileModel model = QuantileModel::train(data, t);
  EvaluateOptions o;
  o.first_day = 6;
  o.last_day = 8;
  o.threads = 2;
  const Evaluation e = run_backtest(data, model, o);
  EXPECT_EQ(e.day1, kStart);
  EXPECT_EQ(e.eval_begin, kStart + 5 * kSecondsPerDay);
  EXPECT_EQ(e.series_days, 18u);
  ASSERT_EQ(e.methods.size(), 6u);
  EXPECT_EQ(e.methods[0].name, "model");
  EXPECT_EQ(e.methods[3].name, "oracle");
  EXPECT_EQ(e.methods[4].name, "raw");
  EXPECT_TRUE(e.methods[4].diagnostic);
  EXPECT_EQ(e.methods[5].name, "blend");
  EXPECT_TRUE(e.methods[3].uses_future);
  for (const auto& m : e.methods) {
    EXPECT_DOUBLE_EQ(m.coverage, 1.0) << m.name;
    EXPECT_EQ(m.cpu.windows, 18u * 288) << m.name;
  }
  // The oracle recommends each day's own CPU p95 and memory peak: about 5% of CPU windows
  // and no memory window above it.
  EXPECT_NEAR(e.methods[3].cpu.under, 0.05, 0.01);
  EXPECT_DOUBLE_EQ(e.methods[3].memory.under, 0.0);
  // Recommendations are exported per method, series and day; the oracle's match its definition.
  EXPECT_EQ(e.recs.size(), 6u * 18);
  for (const auto& r : e.recs) {
    if (r.method != "oracle" || r.series != data[2].key.to_string()) continue;
    const Targets target = compute_targets(data[2], r.day_start, kSecondsPerDay, 0.95);
    EXPECT_DOUBLE_EQ(r.cpu_cores, target.cpu);
    EXPECT_DOUBLE_EQ(r.memory_bytes, target.memory);
  }
  for (const auto& r : e.recs) {
    if (r.method != "vpa" || r.series != data[0].key.to_string()) continue;
    EXPECT_DOUBLE_EQ(r.cpu_cores, vpa_recommend(data[0], r.day_start).cpu_cores);
  }
  // Gap closed follows its formula.
  const double expected = (e.methods[1].cpu.matched_slack - e.methods[0].cpu.matched_slack) /
                          (e.methods[1].cpu.matched_slack - e.methods[3].cpu.matched_slack);
  EXPECT_DOUBLE_EQ(e.gap_closed_cpu, expected);

  std::ostringstream table, csv;
  write_table(table, e);
  EXPECT_NE(table.str().find("oracle*"), std::string::npos);
  write_recs_csv(csv, e);
  const std::string csv_text = csv.str();
  EXPECT_EQ(csv_text.rfind("method,series,day_start_epoch,cpu_cores,memory_bytes\n", 0), 0u);
  EXPECT_EQ(std::count(csv_text.begin(), csv_text.end(), '\n'), 1 + 6 * 18);
  const auto j = nlohmann::json::parse(evaluation_json(e));
  EXPECT_EQ(j["methods"].size(), 6u);
  EXPECT_EQ(j["methods"][3]["usesFuture"], true);
  EXPECT_TRUE(j["methods"][0]["cpu"]["matched"].contains("margin"));
  const std::string html = evaluation_html(e);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("uses the future"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, static
  EXPECT_EQ(html.find("http://www.w3.org/2000/svg") != std::string::npos, true);
}

// Trained once for the tests below (never destroyed: no XGBoost handle freed at exit).
const QuantileModel& small_model(const std::vector<UsageSeries>& data) {
  static const QuantileModel* model = [&] {
    TrainOptions t;
    t.max_rounds = 30;
    t.validation_days = 1;
    t.nthread = 2;
    t.train_end = kStart + 5 * kSecondsPerDay;
    return new QuantileModel(QuantileModel::train(data, t));
  }();
  return *model;
}

TEST(Backtest, HeadlineScoresWhatRecommendWrites) {
  // Issue 16: the headline used to score the raw prediction; `recommend` applies margins,
  // floors and rounding. Now "model" is recommend_batch's output, "raw" the diagnostic.
  const auto data = synthetic(6, 8);
  const QuantileModel& model = small_model(data);
  EvaluateOptions o;
  o.first_day = 6, o.last_day = 8, o.threads = 2;
  RecommendationPolicy policy;
  policy.margin = 1.3, policy.memory_margin = 1.7;
  o.policy = policy;
  const Evaluation e = run_backtest(data, model, o);
  size_t checked = 0;
  for (const auto& r : e.recs) {
    const auto it = std::find_if(data.begin(), data.end(), [&](const UsageSeries& s) { return s.key.to_string() == r.series; });
    ASSERT_NE(it, data.end());
    // `recommend` writes the whole fleet in one batch (the model's risk budget is spent across it).
    const auto i = static_cast<size_t>(it - data.begin());
    if (r.method == "model") {
      const Recommendation shipped = recommend_batch(model, data, r.day_start, policy, 0)[i];
      EXPECT_DOUBLE_EQ(r.cpu_cores, shipped.cpu_cores);
      EXPECT_DOUBLE_EQ(r.memory_bytes, shipped.memory_bytes);
      EXPECT_EQ(std::fmod(r.memory_bytes, 1048576.0), 0.0);  // rounded to Mi as written
      EXPECT_GE(r.cpu_cores, policy.cpu_min);
      ++checked;
    } else if (r.method == "raw") {
      std::vector<FeatureRow> rows;
      for (const auto& s : data) rows.push_back(compute_features(s, r.day_start));
      std::vector<Prediction> p;
      model.predict(rows, p);
      spend_risk_budget(rows, p, model.metadata().budget_cpu_risk, model.metadata().budget_memory_risk);
      EXPECT_DOUBLE_EQ(r.cpu_cores, p[i].cpu_cores);
      EXPECT_DOUBLE_EQ(r.memory_bytes, p[i].memory_bytes);
    }
  }
  EXPECT_EQ(checked, 18u);
  // At margin 1 the shipped under-provisioning is the one at the shipped margins.
  EXPECT_LT(e.methods[0].cpu.under, e.methods[4].cpu.under);
  EXPECT_EQ(e.shipped_days, 18u);
}

TEST(Backtest, TheGateSeesTheCandidatesAsTheyShip) {
  // What ships from any source holds a new or resumed container's memory at its request, and
  // sends series far outside the training data to VPA; the gate scores VPA, raw and blend the
  // same way. The evaluation's own columns stay VPA and the bare prediction.
  const QuantileModel& model = small_model(synthetic(6, 8));
  auto data = synthetic(6, 8);
  UsageSeries& resumed = data[2];
  resumed.spec.memory_request = 5e9;  // far above its usage
  std::erase_if(resumed.samples, [](const UsageSample& x) {
    return x.timestamp >= kStart + 4 * kSecondsPerDay && x.timestamp < kStart + 6 * kSecondsPerDay;
  });
  UsageSeries& huge = data[4];  // CPU a thousand times any series the model saw
  for (auto& x : huge.samples) x.cpu_cores *= 1000;
  EvaluateOptions o;
  o.first_day = 7, o.last_day = 8, o.threads = 2;
  o.policy = RecommendationPolicy{};
  auto rec_of = [&](const Evaluation& e, const std::string& method, const UsageSeries& s, int day) {
    for (const auto& r : e.recs)
      if (r.method == method && r.series == s.key.to_string() && r.day_start == day_start(kStart, day))
        return r;
    return RecRow{};
  };
  const Evaluation plain = run_backtest(data, model, o);
  o.candidates_as_shipped = true;
  const Evaluation gate = run_backtest(data, model, o);
  const double vpa_cpu = rec_of(plain, "vpa", huge, 7).cpu_cores;
  for (const char* m : {"vpa", "raw", "blend"}) {
    EXPECT_GT(rec_of(plain, m, resumed, 7).memory_bytes, 0) << m;
    EXPECT_LT(rec_of(plain, m, resumed, 7).memory_bytes, 5e9) << m;
    EXPECT_EQ(rec_of(gate, m, resumed, 7).memory_bytes, 5e9) << m;  // back after 2 days away
    EXPECT_EQ(rec_of(gate, m, resumed, 8).memory_bytes, rec_of(plain, m, resumed, 8).memory_bytes) << m;  // ran all day 7
    EXPECT_EQ(rec_of(gate, m, huge, 7).cpu_cores, vpa_cpu) << m;  // out of distribution: VPA
  }
  EXPECT_NE(rec_of(plain, "raw", huge, 7).cpu_cores, vpa_cpu);
  EXPECT_EQ(rec_of(gate, "krr", resumed, 7).memory_bytes, rec_of(plain, "krr", resumed, 7).memory_bytes);
  EXPECT_GE(rec_of(plain, "model", resumed, 7).memory_bytes, 5e9);  // what ships has the floor
  EXPECT_GT(plain.out_of_distribution_days, 0u);
}

TEST(Backtest, ExportedRecommendationsKeepFullPrecision) {
  const auto data = synthetic(6, 8);
  EvaluateOptions o;
  o.first_day = 6, o.last_day = 8, o.threads = 2;
  const Evaluation e = run_backtest(data, small_model(data), o);
  std::ostringstream csv;
  write_recs_csv(csv, e);
  std::istringstream in(csv.str());
  std::string line;
  std::getline(in, line);  // header
  size_t i = 0;
  while (std::getline(in, line)) {
    ASSERT_LT(i, e.recs.size());
    const size_t c3 = line.rfind(','), c2 = line.rfind(',', c3 - 1);
    EXPECT_EQ(std::strtod(line.c_str() + c2 + 1, nullptr), e.recs[i].cpu_cores) << line;  // exact, not near
    EXPECT_EQ(std::strtod(line.c_str() + c3 + 1, nullptr), e.recs[i].memory_bytes) << line;
    ++i;
  }
  EXPECT_EQ(i, e.recs.size());
}

TEST(Gate, TrainBacktestDecidesAndRecommendFollows) {
  const auto data = synthetic(6, 8);
  QuantileModel model = QuantileModel::train(data, [] {
    TrainOptions t;
    t.max_rounds = 30, t.validation_days = 1, t.nthread = 2, t.train_end = kStart + 5 * kSecondsPerDay;
    return t;
  }());
  const Evaluation e = calibrate_and_gate(model, data, 5, 5);
  const auto& m = model.metadata();
  ASSERT_TRUE(m.cpu_gate.decided);
  EXPECT_EQ(m.gate_first_day, 5);
  // The decision and its numbers are the backtest's: raw model vs VPA at matched risk.
  EXPECT_DOUBLE_EQ(m.cpu_gate.model_slack, e.methods[4].cpu.matched_slack);
  EXPECT_DOUBLE_EQ(m.cpu_gate.baseline_slack, e.methods[1].cpu.matched_slack);
  // The CPU blend is never cut below itself: one that met the risk with room to spare (matched
  // margin < 1) ships at margin 1 and is judged by its slack there.
  const ResourceScore& cpu_blend = e.methods[5].cpu;
  EXPECT_DOUBLE_EQ(m.cpu_gate.blend_slack, cpu_blend.matched_margin < 1 ? cpu_blend.slack : cpu_blend.matched_slack);
  EXPECT_DOUBLE_EQ(m.cpu_gate.blend_margin, std::max(1.0, cpu_blend.matched_margin));
  const auto& g = m.cpu_gate;
  EXPECT_EQ(g.use_blend, g.blend_slack < g.model_slack && g.blend_slack < g.baseline_slack);
  EXPECT_EQ(g.use_model, g.use_blend || g.model_slack < g.baseline_slack);
  // Memory spends a risk budget (train's default): its prediction ships only blended with VPA,
  // and the blend only has to beat VPA (the budgeted prediction alone is no level to beat).
  ASSERT_GT(m.budget_memory_risk, 0);
  EXPECT_EQ(m.memory_gate.use_model, m.memory_gate.use_blend);
  const auto& mg = m.memory_gate;
  // A memory blend is a candidate only at a matched margin >= 1 (the rule before the CPU blend could
  // ship at 1 with room to spare; an OOM kill costs more than throttling).
  EXPECT_EQ(mg.use_blend, e.methods[5].memory.matched_margin >= 1 && mg.blend_slack < mg.baseline_slack);
  // The fallback never cuts below VPA's own target.
  EXPECT_DOUBLE_EQ(m.cpu_gate.baseline_margin, std::max(1.0, e.methods[1].cpu.matched_margin));
  EXPECT_DOUBLE_EQ(m.calibrated_cpu_margin, e.methods[4].cpu.matched_margin);

  // Force CPU to the baseline: recommend (and so the snapshot and evaluate) use VPA x its margin.
  ModelMetadata::Gate cpu = m.cpu_gate, memory = m.memory_gate;
  cpu.use_model = false, cpu.use_blend = false, cpu.baseline_margin = 1.3;
  memory.use_model = true, memory.use_blend = false;
  model.set_gate(cpu, memory, 5, 5);
  const RecommendationPolicy policy = shipped_policy(model.metadata());
  EXPECT_FALSE(policy.cpu_from_model);
  const int64_t t = kStart + 7 * kSecondsPerDay;
  const Recommendation r = recommend(model, data[2], t, policy, 0);
  EXPECT_FALSE(r.cpu_from_model);
  EXPECT_TRUE(r.memory_from_model);
  EXPECT_DOUBLE_EQ(r.cpu_cores, round_up_clamped(vpa_recommend(data[2], t).cpu_cores * 1.3, 0.01, 64, 0.005));
  // Memory from the model: its prediction with the model's risk budget spent (one series: all of it).
  std::vector<Prediction> predicted{model.predict(compute_features(data[2], t))};
  spend_risk_budget({compute_features(data[2], t)}, predicted, m.budget_cpu_risk, m.budget_memory_risk);
  EXPECT_DOUBLE_EQ(r.memory_bytes, round_up_clamped(predicted[0].memory_bytes * policy.memory_margin, policy.memory_min,
                                                    policy.memory_max, policy.memory_step));
  EXPECT_EQ(r.explanation.at(0).feature, "cpu:baseline:gate");
  // The blend: (forecast x VPA)^1/4 x recent^1/2 x its margin, for CPU only; forecast is the series'
  // pooled forecast level (its median and tail forecasts) and recent its pooled recent level (alone
  // in its batch, each spends the whole 5% budget on the series itself).
  ModelMetadata::Gate mixed = m.cpu_gate;
  mixed.use_model = mixed.use_blend = true, mixed.blend_margin = 1.2;
  QuantileModel blended = QuantileModel::train(data, [] {
    TrainOptions t;
    t.max_rounds = 30, t.validation_days = 1, t.nthread = 2, t.train_end = kStart + 5 * kSecondsPerDay;
    return t;
  }());
  blended.set_calibration(model.metadata().calibrated_cpu_margin, model.metadata().calibrated_memory_margin);
  blended.set_gate(mixed, memory, 5, 5);
  const RecommendationPolicy mix_policy = shipped_policy(blended.metadata());
  const Recommendation b = recommend(blended, data[2], t, mix_policy, 0);
  EXPECT_TRUE(b.cpu_blended);
  EXPECT_FALSE(b.memory_blended);
  ASSERT_EQ(blended.metadata().cpu_tail_quantiles, (std::vector<double>{0.8, 0.95, 0.99})) << "trained by default";
  const Prediction forecast = blended.predict(compute_features(data[2], t));
  const double p = pooled_forecast_cpu({forecast}, blended.metadata(), 0.05).front();
  EXPECT_DOUBLE_EQ(b.forecast_cpu, p);
  // Within a 5% budget of its own, the series takes its 95th-percentile forecast (raised to any
  // lower forecast crossing it), or its 99th when that is the cheaper point of the hull.
  const double upto95 = std::max({forecast.cpu_cores, forecast.cpu_tail[0], forecast.cpu_tail[1]});
  EXPECT_TRUE(p == upto95 || p == std::max(upto95, forecast.cpu_tail[2])) << p;
  const double recent = pooled_recent_cpu({data[2]}, t, 0.05).front();
  ASSERT_TRUE(std::isfinite(recent));
  EXPECT_DOUBLE_EQ(b.recent_cpu, recent);
  const double v = vpa_recommend(data[2], t).cpu_cores;
  EXPECT_DOUBLE_EQ(b.cpu_cores, round_up_clamped(std::pow(p * v, 0.25) * std::sqrt(recent) * 1.2, 0.01, 64, 0.005));
  EXPECT_EQ(b.explanation.at(0).feature, "cpu:blend:(forecast*vpa)^1/4*recent^1/2");
  // A day without CPU use does not zero the blend: the recent part is at least the 10m minimum.
  UsageSeries idle = data[2];
  for (auto& x : idle.samples)
    if (x.timestamp >= t - kSecondsPerDay && x.timestamp < t) x.cpu_cores = 0;
  RecommendationPolicy unguarded = mix_policy;  // the idle day looks unlike training: keep the model
  unguarded.distribution_guard = false;
  const Recommendation quiet = recommend(blended, idle, t, unguarded, 0);
  EXPECT_TRUE(quiet.cpu_blended);
  EXPECT_DOUBLE_EQ(pooled_recent_cpu({idle}, t, 0.05).front(), 0.0);
  EXPECT_DOUBLE_EQ(quiet.recent_cpu, mix_policy.cpu_min);
  const double quiet_p = pooled_forecast_cpu({blended.predict(compute_features(idle, t))}, blended.metadata(), 0.05).front();
  EXPECT_DOUBLE_EQ(quiet.cpu_cores, round_up_clamped(std::pow(quiet_p * vpa_recommend(idle, t).cpu_cores, 0.25) *
                                                         std::sqrt(mix_policy.cpu_min) * 1.2, 0.01, 64, 0.005));
  EXPECT_GT(quiet.cpu_cores, mix_policy.cpu_min);
  // Without the recent part (recent_cpu_days 0), the blend is sqrt(forecast x VPA).
  RecommendationPolicy two_way = mix_policy;
  two_way.recent_cpu_days = 0;
  const Recommendation b2 = recommend(blended, data[2], t, two_way, 0);
  EXPECT_TRUE(std::isnan(b2.recent_cpu));
  EXPECT_DOUBLE_EQ(b2.cpu_cores, round_up_clamped(std::sqrt(p * v) * 1.2, 0.01, 64, 0.005));
  // The report shows the decision.
  EvaluateOptions o;
  o.first_day = 6, o.last_day = 8, o.threads = 2;
  const Evaluation shipped = run_backtest(data, model, o);
  EXPECT_EQ(shipped.cpu_from_model_days, 0u);
  EXPECT_EQ(shipped.memory_from_model_days, shipped.shipped_days);
  std::ostringstream table;
  write_table(table, shipped);
  EXPECT_NE(table.str().find("gate cpu: baseline"), std::string::npos) << table.str();
  EXPECT_NE(table.str().find("gate memory: model"), std::string::npos);
}

QuantileModel trained_to_day5(const std::vector<UsageSeries>& data) {
  TrainOptions t;
  t.max_rounds = 30, t.validation_days = 1, t.nthread = 2, t.train_end = kStart + 5 * kSecondsPerDay;
  return QuantileModel::train(data, t);
}

bool same_gate(const ModelMetadata::Gate& a, const ModelMetadata::Gate& b) {
  return a.decided == b.decided && a.use_model == b.use_model && a.use_blend == b.use_blend &&
         a.model_slack == b.model_slack && a.baseline_slack == b.baseline_slack && a.baseline_margin == b.baseline_margin &&
         a.blend_margin == b.blend_margin;
}

TEST(Gate, RecentDaysAreTheLastOnesTheModelDidNotTrainOn) {
  const auto data = synthetic(6, 10);
  QuantileModel model = trained_to_day5(data);  // trained on days 1-5
  calibrate_and_gate(model, data, 5, 5);
  const ModelMetadata saved = model.metadata();

  // Before day 10: days 6-9 (up to 4, none of the training days), decided as calibrate_and_gate
  // would on those days, written into the copy only.
  ModelMetadata meta = model.metadata();
  const RecentGate g = gate_on_recent_days(model, meta, data, kStart + 9 * kSecondsPerDay);
  ASSERT_TRUE(g.regated) << g.note;
  EXPECT_EQ(g.first_day, 6);
  EXPECT_EQ(g.last_day, 9);
  EXPECT_NE(g.note.find("gated on days 6-9 here"), std::string::npos) << g.note;
  ModelMetadata expected = model.metadata();
  decide_gate(model, expected, data, 6, 9);
  EXPECT_TRUE(same_gate(meta.cpu_gate, expected.cpu_gate));
  EXPECT_TRUE(same_gate(meta.memory_gate, expected.memory_gate));
  EXPECT_DOUBLE_EQ(meta.calibrated_cpu_margin, expected.calibrated_cpu_margin);
  EXPECT_EQ(meta.gate_first_day, 6);
  EXPECT_EQ(meta.gate_last_day, 9);
  EXPECT_EQ(model.metadata().gate_first_day, saved.gate_first_day);  // the model is untouched
  EXPECT_DOUBLE_EQ(model.metadata().calibrated_cpu_margin, saved.calibrated_cpu_margin);

  // Before day 7 only day 6 is new: too few, nothing changes.
  ModelMetadata kept = model.metadata();
  const RecentGate none = gate_on_recent_days(model, kept, data, kStart + 6 * kSecondsPerDay);
  EXPECT_FALSE(none.regated) << none.note;
  EXPECT_EQ(kept.gate_first_day, saved.gate_first_day);
  EXPECT_TRUE(same_gate(kept.cpu_gate, saved.cpu_gate));
  // Without a time: up to the last sample (23:55 of day 10, so day 10 is not whole: days 6-9).
  ModelMetadata latest = model.metadata();
  const RecentGate last = gate_on_recent_days(model, latest, data);
  EXPECT_TRUE(last.regated);
  EXPECT_EQ(last.first_day, 6);
  EXPECT_EQ(last.last_day, 9);
}

TEST(Gate, EvaluateScoresTheRegatedPolicyRecommendShips) {
  const auto data = synthetic(6, 10);
  QuantileModel model = trained_to_day5(data);
  calibrate_and_gate(model, data, 5, 5);
  // Force a gate the recent days are unlikely to repeat, so a stale policy would show.
  ModelMetadata::Gate cpu = model.metadata().cpu_gate, memory = model.metadata().memory_gate;
  cpu.use_model = cpu.use_blend = false, cpu.baseline_margin = 3.0;
  model.set_gate(cpu, memory, 5, 5);
  EvaluateOptions o;
  o.first_day = 7, o.last_day = 9, o.threads = 2, o.regate = true;
  const Evaluation e = run_backtest(data, model, o);
  EXPECT_EQ(e.regated_days, 2u);  // day 7 has only day 6 before it that the model did not train on
  EXPECT_EQ(e.cpu_gate_days.model + e.cpu_gate_days.blend + e.cpu_gate_days.baseline, 3u);
  for (int day = 7; day <= 9; ++day) {
    const int64_t t = kStart + (day - 1) * kSecondsPerDay;
    ModelMetadata meta = model.metadata();
    gate_on_recent_days(model, meta, data, t);  // what recommend --at t does
    const auto shipped = recommend_batch(model, data, t, shipped_policy(meta), 0);
    for (size_t i = 0; i < data.size(); ++i) {
      const auto row = std::find_if(e.recs.begin(), e.recs.end(), [&](const RecRow& r) {
        return r.method == "model" && r.series == data[i].key.to_string() && r.day_start == t;
      });
      ASSERT_NE(row, e.recs.end());
      EXPECT_DOUBLE_EQ(row->cpu_cores, shipped[i].cpu_cores) << "day " << day;
      EXPECT_DOUBLE_EQ(row->memory_bytes, shipped[i].memory_bytes) << "day " << day;
    }
  }
  // Day 7 kept the forced gate (VPA x 3 for CPU); without regating every day does.
  EvaluateOptions fixed = o;
  fixed.regate = false;
  const Evaluation f = run_backtest(data, model, fixed);
  EXPECT_EQ(f.regated_days, 0u);
  EXPECT_EQ(f.cpu_from_model_days, 0u);
  nlohmann::json j = nlohmann::json::parse(evaluation_json(e));
  EXPECT_EQ(j["shipped"]["regatedDays"], 2);
  EXPECT_TRUE(j["shipped"]["regate"].get<bool>());
  std::ostringstream table;
  write_table(table, e);
  EXPECT_NE(table.str().find("regated before each day"), std::string::npos) << table.str();

  // --regate-days: fewer recent days, the same as recommend with that many.
  EvaluateOptions two = o;
  two.first_day = two.last_day = 9, two.regate_days = 2;
  const Evaluation short_window = run_backtest(data, model, two);
  const int64_t t9 = kStart + 8 * kSecondsPerDay;
  ModelMetadata meta = model.metadata();
  const RecentGate g = gate_on_recent_days(model, meta, data, t9, 2);
  EXPECT_EQ(g.first_day, 7);
  const auto shipped = recommend_batch(model, data, t9, shipped_policy(meta), 0);
  size_t compared = 0;
  for (const auto& r : short_window.recs)
    if (r.method == "model") {
      const auto i = static_cast<size_t>(std::find_if(data.begin(), data.end(), [&](const UsageSeries& s) {
                                           return s.key.to_string() == r.series;
                                         }) - data.begin());
      EXPECT_DOUBLE_EQ(r.cpu_cores, shipped.at(i).cpu_cores);
      ++compared;
    }
  EXPECT_EQ(compared, data.size());
}

}  // namespace
}  // namespace sizeguard
