// Features at t use only samples strictly before t; targets use [t, t + horizon).
#include "recommender/features.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1372636800;  // 2013-07-01T00:00:00Z, a Monday

UsageSeries make_series(int days, uint32_t seed) {
  UsageSeries s;
  s.key = {"ns", "Deployment", "app", "main"};
  s.spec.cpu_request = 2.0;
  s.spec.memory_request = 4e9;
  std::mt19937 rng(seed);
  std::lognormal_distribution<double> noise(0, 0.3);
  for (int64_t t = kStart; t < kStart + days * kSecondsPerDay; t += 300) {
    const double hour = static_cast<double>((t % kSecondsPerDay) / 3600);
    s.samples.push_back({t, 0.5 * (1 + 0.5 * std::sin(hour / 24 * 6.283)) * noise(rng), 1e9 * noise(rng)});
  }
  return s;
}

size_t index_of(const std::string& name) {
  const auto& n = feature_names();
  auto it = std::find(n.begin(), n.end(), name);
  EXPECT_NE(it, n.end()) << name;
  return static_cast<size_t>(it - n.begin());
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

TEST(Features, NamesAreFixedOrderedAndUnique) {
  const auto& n = feature_names();
  EXPECT_EQ(n.size(), feature_count());
  EXPECT_EQ(n.size(), 62u);
  EXPECT_EQ(n.front(), "cpu_p50_1h");
  EXPECT_EQ(n[4], "cpu_max_1h");
  EXPECT_EQ(n.back(), "day_of_week");
  std::set<std::string> unique(n.begin(), n.end());
  EXPECT_EQ(unique.size(), n.size());
}

TEST(Features, RequestInForceAtTheOriginNotALaterOne) {
  // The request doubles on day 6: features at day 4 see the old one (issue 16: the last row's
  // request used to leak into every origin).
  UsageSeries s = make_series(10, 1);
  s.spec_history = {{kStart, {2.0, 4e9, std::nullopt, std::nullopt}},
                    {kStart + 6 * kSecondsPerDay, {4.0, 8e9, std::nullopt, std::nullopt}}};
  s.spec = s.spec_history.back().spec;
  const int64_t day4 = kStart + 4 * kSecondsPerDay, day8 = kStart + 8 * kSecondsPerDay;
  const FeatureRow early = compute_features(s, day4), late = compute_features(s, day8);
  EXPECT_NEAR(early.values[index_of("cpu_request")], std::log(2.0 / early.cpu_level), 1e-5);
  EXPECT_NEAR(early.values[index_of("mem_request")], std::log(4e9 / early.memory_level), 1e-5);
  EXPECT_NEAR(late.values[index_of("cpu_request")], std::log(4.0 / late.cpu_level), 1e-5);
  // The same origin without the later change gives the same row: no look-ahead via the spec.
  UsageSeries cut = s;
  cut.spec_history.pop_back();
  EXPECT_TRUE(same(compute_features(cut, day4).values, early.values));
}

TEST(Features, NoLookAhead) {
  UsageSeries s = make_series(10, 1);
  for (int64_t t : {kStart + 8 * kSecondsPerDay, kStart + 8 * kSecondsPerDay + 7 * 300 + 13}) {
    const FeatureRow before = compute_features(s, t);
    UsageSeries changed = s;
    for (auto& sample : changed.samples)
      if (sample.timestamp >= t) sample.cpu_cores *= 50, sample.memory_bytes *= 50;
    // A sample exactly at t, changed too.
    const FeatureRow after = compute_features(changed, t);
    EXPECT_TRUE(same(before.values, after.values)) << t;
    EXPECT_EQ(before.cpu_level, after.cpu_level);
    // Truncating the series at t changes nothing either.
    UsageSeries cut = s;
    std::erase_if(cut.samples, [t](const UsageSample& x) { return x.timestamp >= t; });
    EXPECT_TRUE(same(before.values, compute_features(cut, t).values));
  }
  // But a change just before t does show.
  const int64_t t = kStart + 8 * kSecondsPerDay;
  UsageSeries changed = s;
  for (auto& sample : changed.samples)
    if (sample.timestamp == t - 300) sample.cpu_cores = 100;
  EXPECT_FALSE(same(compute_features(s, t).values, compute_features(changed, t).values));
}

TEST(Features, LogRelativeToLevelAndCalendar) {
  // Constant usage: every quantile equals the level, so every log-relative stat is 0.
  UsageSeries s;
  s.spec.cpu_request = 1.0;
  for (int64_t t = kStart; t < kStart + 3 * kSecondsPerDay; t += 300) s.samples.push_back({t, 0.25, 2147483648.0});
  const int64_t t = kStart + 3 * kSecondsPerDay + 5 * 3600;  // Thursday 05:00
  const FeatureRow row = compute_features(s, t);
  EXPECT_DOUBLE_EQ(row.cpu_level, 0.25);
  EXPECT_DOUBLE_EQ(row.memory_level, 2147483648.0);
  EXPECT_FLOAT_EQ(row.values[index_of("cpu_p95_24h")], 0.0f);
  EXPECT_FLOAT_EQ(row.values[index_of("mem_max_7d")], 0.0f);
  EXPECT_TRUE(std::isnan(row.values[index_of("cpu_p50_1h")]));  // no samples in the last 5 h
  EXPECT_NEAR(row.values[index_of("cpu_request")], std::log(4.0), 1e-6);
  EXPECT_TRUE(std::isnan(row.values[index_of("mem_request")]));
  EXPECT_NEAR(row.values[index_of("cpu_level")], std::log(0.25), 1e-6);
  EXPECT_NEAR(row.values[index_of("mem_level")], std::log(2.0), 1e-6);
  EXPECT_NEAR(row.values[index_of("cpu_trend_7d")], 0.0, 1e-6);
  EXPECT_FLOAT_EQ(row.values[index_of("hour_of_day")], 5.0f);
  EXPECT_FLOAT_EQ(row.values[index_of("day_of_week")], 3.0f);
  EXPECT_EQ(row.history_samples, 3u * 288);
  EXPECT_NEAR(row.history_days, 3.0 + 5.0 / 24, 1e-9);
}

TEST(Features, TrendAndSeasonality) {
  // Daily level doubling each day: slope of log(daily p95) is log 2 per day.
  UsageSeries s;
  for (int64_t t = kStart; t < kStart + 7 * kSecondsPerDay; t += 300) {
    const double day = static_cast<double>((t - kStart) / kSecondsPerDay);
    const bool first_hour = (t % kSecondsPerDay) < 3600;
    s.samples.push_back({t, std::pow(2.0, day) * (first_hour ? 3 : 1), 1e9});
  }
  const int64_t t = kStart + 7 * kSecondsPerDay;
  const FeatureRow row = compute_features(s, t);
  EXPECT_NEAR(row.values[index_of("cpu_trend_7d")], std::log(2.0), 1e-5);
  // Same hour yesterday: 3 * 2^6 relative to the 7-day p95.
  EXPECT_NEAR(row.values[index_of("cpu_same_hour_1d")], std::log(3 * 64.0 / row.cpu_level), 1e-5);
  EXPECT_TRUE(std::isfinite(row.values[index_of("cpu_same_hour_7d")]));
  // Day 0: 12 samples at 3, 276 at 1, so its p95 is 1.
  EXPECT_NEAR(row.values[index_of("cpu_p95_same_day_last_week")], std::log(1.0 / row.cpu_level), 1e-5);
}

TEST(Features, EmptyHistory) {
  UsageSeries s = make_series(2, 3);
  const FeatureRow row = compute_features(s, kStart);
  EXPECT_EQ(row.history_samples, 0u);
  EXPECT_EQ(row.values.size(), feature_count());
  EXPECT_TRUE(std::isnan(row.values[index_of("cpu_p95_7d")]));
  EXPECT_DOUBLE_EQ(row.cpu_level, kCpuFloorCores);
}

TEST(Features, TargetsUseTheNextHorizonOnly) {
  UsageSeries s;
  for (int i = 0; i < 48; ++i) s.samples.push_back({kStart + i * 3600, static_cast<double>(i), 100.0 * i});
  const Targets t = compute_targets(s, kStart + 24 * 3600, kSecondsPerDay, 0.5);
  EXPECT_EQ(t.samples, 24u);
  EXPECT_DOUBLE_EQ(t.cpu, 35.5);  // median of 24..47
  EXPECT_DOUBLE_EQ(t.memory, 4700.0);
}

TEST(Features, QuantileInterpolates) {
  std::vector<double> v{1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.5), 3);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.95), 4.8);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 1.0), 5);
  EXPECT_DOUBLE_EQ(quantile_sorted({7}, 0.3), 7);
  EXPECT_EQ(utc_midnight(kStart + 5), kStart);
  EXPECT_EQ(typical_step(make_series(1, 2)), 300);
}

}  // namespace
}  // namespace sizeguard
