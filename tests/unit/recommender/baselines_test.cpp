// VPA-style decaying histograms and KRR "simple", on small hand-checked cases.
#include "recommender/baselines.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "recommender/features.h"

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1372636800;  // 2013-07-01T00:00:00Z

TEST(DecayingHistogram, ExponentialBuckets) {
  DecayingHistogram h(0.01, 1.05, 1000);
  EXPECT_DOUBLE_EQ(h.bucket_start(0), 0);
  EXPECT_DOUBLE_EQ(h.bucket_start(1), 0.01);
  EXPECT_NEAR(h.bucket_start(2), 0.01 + 0.0105, 1e-12);
  EXPECT_EQ(h.bucket_of(0.0), 0u);
  EXPECT_EQ(h.bucket_of(0.005), 0u);
  EXPECT_EQ(h.bucket_of(0.01), 1u);
  EXPECT_EQ(h.bucket_of(0.0204), 1u);
  EXPECT_EQ(h.bucket_of(0.0206), 2u);
  EXPECT_GE(h.bucket_start(h.bucket_count() - 1), 1000);
}

TEST(DecayingHistogram, PercentileIsTheEndOfTheBucket) {
  DecayingHistogram h(0.01, 1.05, 1000);
  EXPECT_EQ(h.percentile(0.9), 0);  // empty
  for (int i = 0; i < 9; ++i) h.add(0.015, 1, kStart);  // bucket 1: [0.01, 0.0205)
  h.add(1.0, 1, kStart);
  EXPECT_NEAR(h.percentile(0.5), 0.0205, 1e-12);
  EXPECT_NEAR(h.percentile(0.9), 0.0205, 1e-12);
  const double p95 = h.percentile(0.95);
  EXPECT_GT(p95, 1.0);
  EXPECT_LT(p95, 1.0 * 1.06);
  EXPECT_EQ(p95, h.bucket_start(h.bucket_of(1.0) + 1));
}

TEST(DecayingHistogram, HalfLifeDecay) {
  // One old large sample vs one recent small: a day later the recent one weighs twice.
  DecayingHistogram h(0.01, 1.05, 1000, 86400);
  h.add(1.0, 1, kStart);
  h.add(0.1, 1, kStart + 86400);
  EXPECT_NEAR(h.total_weight(), 3.0, 1e-12);  // 1 + 2
  // p50: threshold 1.5; the small sample's bucket alone (2) reaches it.
  EXPECT_LT(h.percentile(0.5), 0.12);
  EXPECT_GT(h.percentile(0.7), 1.0);
  // Two days apart the old sample weighs 1/4 of the new: p75 ... p80 stays at the new one.
  DecayingHistogram g(0.01, 1.05, 1000, 86400);
  g.add(1.0, 1, kStart);
  g.add(0.1, 1, kStart + 2 * 86400);
  EXPECT_LT(g.percentile(0.8), 0.12);
  EXPECT_GT(g.percentile(0.81), 1.0);
  // Far-apart samples renormalise without overflow.
  DecayingHistogram far(0.01, 1.05, 1000, 3600);
  far.add(1.0, 1, kStart);
  far.add(0.1, 1, kStart + 200 * 3600);
  EXPECT_TRUE(std::isfinite(far.total_weight()));
  EXPECT_LT(far.percentile(0.99), 0.12);
}

UsageSeries constant(double cpu, double mem, int days) {
  UsageSeries s;
  for (int64_t t = kStart; t < kStart + days * kSecondsPerDay; t += 300) s.samples.push_back({t, cpu, mem});
  return s;
}

TEST(Vpa, TargetIsP90WithMarginAndMinimums) {
  const UsageSeries s = constant(1.0, 2e9, 3);
  const auto rec = vpa_recommend(s, kStart + 3 * kSecondsPerDay);
  DecayingHistogram cpu(0.01), mem(1e7);
  const double cpu_end = cpu.bucket_start(cpu.bucket_of(1.0) + 1);
  const double mem_end = mem.bucket_start(mem.bucket_of(2e9) + 1);
  EXPECT_NEAR(rec.cpu_cores, cpu_end * 1.15, 1e-9);
  EXPECT_NEAR(rec.memory_bytes, mem_end * 1.15, 1e-3);
  EXPECT_DOUBLE_EQ(rec.confidence, 3.0);
  EXPECT_NEAR(rec.cpu_upper, rec.cpu_cores * (1 + 1.0 / 3), 1e-9);
  EXPECT_NEAR(rec.cpu_lower, rec.cpu_cores * std::pow(1 + 0.001 / 3, -2), 1e-9);
  // Tiny usage: the minimums.
  const auto tiny = vpa_recommend(constant(0.001, 1e6, 2), kStart + 2 * kSecondsPerDay);
  EXPECT_DOUBLE_EQ(tiny.cpu_cores, 0.025);
  EXPECT_DOUBLE_EQ(tiny.memory_bytes, 250.0 * 1048576);
  // No history at all.
  const auto none = vpa_recommend(s, kStart);
  EXPECT_FALSE(none.has_history);
  EXPECT_DOUBLE_EQ(none.cpu_cores, 0.025);
}

TEST(Vpa, MemoryUsesDailyPeaksOfTheLast8Days) {
  // Day 0 has a 10 GB peak; days 1..9 peak at 1 GB. At day 10 only days 2..9 count.
  UsageSeries s = constant(0.5, 5e8, 10);
  s.samples[100].memory_bytes = 1e10;
  for (int d = 1; d < 10; ++d) s.samples[static_cast<size_t>(d) * 288 + 50].memory_bytes = 1e9;
  const auto at10 = vpa_recommend(s, kStart + 10 * kSecondsPerDay);
  EXPECT_LT(at10.memory_bytes, 1.1e9 * 1.15);
  EXPECT_GT(at10.memory_bytes, 1e9 * 1.15);
  // At day 8, day 0 is still inside the window but is 1 of 8 peaks, decayed: p90 stays low;
  // at day 2 it is 1 of 2 peaks, so p90 is the big one.
  const auto at2 = vpa_recommend(s, kStart + 2 * kSecondsPerDay);
  EXPECT_GT(at2.memory_bytes, 1e10 * 1.15);
  // Incremental use gives the same as from scratch.
  VpaEstimator vpa;
  for (const auto& x : s.samples) {
    if (x.timestamp >= kStart + 10 * kSecondsPerDay) break;
    vpa.add(x);
  }
  EXPECT_DOUBLE_EQ(vpa.recommend(kStart + 10 * kSecondsPerDay).memory_bytes, at10.memory_bytes);
}

TEST(Krr, SimpleStrategy) {
  UsageSeries s;
  // 20 days; in the last 14 days CPU cycles 0..19 (p95 = 18.05), memory max 700 MB.
  for (int i = 0; i < 20 * 24; ++i) {
    const int64_t t = kStart + i * 3600;
    const bool recent = i >= 6 * 24;
    s.samples.push_back({t, recent ? static_cast<double>(i % 20) : 1000.0, recent ? 100e6 + (i == 300 ? 600e6 : 0) : 1e12});
  }
  const auto rec = krr_recommend(s, kStart + 20 * kSecondsPerDay);
  EXPECT_TRUE(rec.has_history);
  std::vector<double> v;
  for (int i = 6 * 24; i < 20 * 24; ++i) v.push_back(i % 20);
  std::sort(v.begin(), v.end());
  EXPECT_DOUBLE_EQ(rec.cpu_cores, quantile_sorted(v, 0.95));
  EXPECT_DOUBLE_EQ(rec.memory_bytes, 700e6 * 1.15);
  EXPECT_FALSE(krr_recommend(s, kStart).has_history);
}

TEST(Krr, MinimumsOf10mCpuAnd100MiMemory) {
  // An idle container: KRR "simple" never goes below cpu_min_value 10m / memory_min_value 100 MB.
  UsageSeries s;
  for (int i = 0; i < 48; ++i) s.samples.push_back({kStart + i * 3600, 0.001, 20e6});
  const auto rec = krr_recommend(s, kStart + 2 * kSecondsPerDay);
  EXPECT_DOUBLE_EQ(rec.cpu_cores, 0.01);
  EXPECT_DOUBLE_EQ(rec.memory_bytes, 100.0 * 1048576);
}


// Two series of 288 five-minute samples on the last day: "spiky" idles at 1 core with 28 samples
// (9.7%) at 10 cores; "ramp" rises evenly from 0 to 2 cores. With 5% of the pooled samples
// allowed above, the cheapest levels give up the spikes (9 cores saved for 4.9% of the pool) and
// keep the whole ramp under: 1 and 2 cores, where each series' own p95 would be 10 and 1.9.
std::vector<UsageSeries> spiky_and_ramp(int64_t day_start) {
  std::vector<UsageSeries> s(2);
  for (int i = 0; i < 288; ++i) {
    const int64_t t = day_start + i * 300;
    s[0].samples.push_back({t, i % 10 == 3 && i < 280 ? 10.0 : 1.0, 1e9});
    s[1].samples.push_back({t, 2.0 * i / 287, 1e9});
  }
  return s;
}

double share_above(const UsageSeries& s, double level, int64_t begin, int64_t end) {
  double above = 0, n = 0;
  for (const auto& x : s.samples)
    if (x.timestamp >= begin && x.timestamp < end) ++n, above += x.cpu_cores > level;
  return above / n;
}

TEST(PooledRecentCpu, SpendsThePooledRiskWhereItSavesMost) {
  const int64_t day = kStart + 3 * kSecondsPerDay;
  auto s = spiky_and_ramp(day);
  const int64_t now = day + kSecondsPerDay;
  const auto levels = pooled_recent_cpu(s, now, 0.05);
  ASSERT_EQ(levels.size(), 2u);
  EXPECT_DOUBLE_EQ(levels[0], 1.0);  // the spikes are given up
  EXPECT_DOUBLE_EQ(levels[1], 2.0);  // cutting the ramp saves at most 2 cores per unit of risk
  // The pooled share above is within the budget, and close to it.
  const double pooled = (share_above(s[0], levels[0], day, now) + share_above(s[1], levels[1], day, now)) / 2;
  EXPECT_LE(pooled, 0.05);
  EXPECT_GE(pooled, 0.048);
  // Fewer cores than each series at its own p95 (the even spend).
  double own = 0;
  for (const auto& x : s) {
    std::vector<double> v;
    for (const auto& y : x.samples) v.push_back(y.cpu_cores);
    std::sort(v.begin(), v.end());
    own += quantile_sorted(v, 0.95);
  }
  EXPECT_LT(levels[0] + levels[1], own - 5);
  // A tighter budget raises the levels; no budget keeps every sample under.
  const auto tight = pooled_recent_cpu(s, now, 0.01);
  EXPECT_GE(tight[0] + tight[1], levels[0] + levels[1]);
  const auto none = pooled_recent_cpu(s, now, 0);
  EXPECT_DOUBLE_EQ(none[0], 10.0);
  EXPECT_DOUBLE_EQ(none[1], 2.0);
}

TEST(PooledForecastLevels, SpendsTheRiskWhereTheForecastTailIsDear) {
  // Two series' forecasts as (share of the next day's samples above, level): a spiky one whose
  // 99th percentile is 10x its median, and a tight one whose tail is close to its median.
  const std::vector<ExceedancePoint> spiky{{0.5, 1.0}, {0.2, 1.2}, {0.05, 3.0}, {0.01, 10.0}};
  const std::vector<ExceedancePoint> tight{{0.01, 2.2}, {0.5, 2.0}, {0.05, 2.1}, {0.2, 2.05}};  // any order
  const auto levels = pooled_forecast_levels({spiky, tight}, 0.05);
  ASSERT_EQ(levels.size(), 2u);
  // 5% pooled over two series. Cutting the spiky one from its 99th to its 95th percentile saves 7
  // cores for 4 points of share, the tight one's 99th to 95th only 0.1: the tight series keeps its
  // 99th (1%), the spiky one goes to its 95th (5%); its 80th (20%) would exceed the budget.
  EXPECT_DOUBLE_EQ(levels[0], 3.0);
  EXPECT_DOUBLE_EQ(levels[1], 2.2);
  // A looser budget lets the spiky series drop to a lower point; none keeps both at their top.
  const auto loose = pooled_forecast_levels({spiky, tight}, 0.11);
  EXPECT_DOUBLE_EQ(loose[0], 1.2);
  EXPECT_DOUBLE_EQ(loose[1], 2.2);
  const auto none = pooled_forecast_levels({spiky, tight}, 0.0);
  EXPECT_DOUBLE_EQ(none[0], 10.0);
  EXPECT_DOUBLE_EQ(none[1], 2.2);
  // Crossing forecasts are made monotone (a lower share never has a lower level); a series
  // without points has no level and takes no share.
  const std::vector<ExceedancePoint> crossing{{0.5, 1.0}, {0.05, 0.8}, {0.01, 0.9}};
  const auto mixed = pooled_forecast_levels({crossing, {}}, 0.05);
  EXPECT_DOUBLE_EQ(mixed[0], 1.0);
  EXPECT_TRUE(std::isnan(mixed[1]));
}

TEST(PooledRecentCpu, ReadsOnlyTheWindowBeforeNow) {
  const int64_t day = kStart + 3 * kSecondsPerDay;
  auto s = spiky_and_ramp(day);
  const int64_t now = day + kSecondsPerDay;
  const auto before = pooled_recent_cpu(s, now, 0.05);
  // Samples at or after now, and older than the window, change nothing.
  for (auto& x : s) {
    x.samples.insert(x.samples.begin(), {day - 3600, 500.0, 1e9});
    x.samples.push_back({now, 500.0, 1e9});
    x.samples.push_back({now + 600, 0.0, 1e9});
  }
  const auto after = pooled_recent_cpu(s, now, 0.05);
  EXPECT_DOUBLE_EQ(after[0], before[0]);
  EXPECT_DOUBLE_EQ(after[1], before[1]);
  // A series without samples in the window has no level and takes no share of the budget.
  UsageSeries idle;
  idle.samples.push_back({day - 2 * kSecondsPerDay, 3.0, 1e9});
  s.push_back(idle);
  const auto with_idle = pooled_recent_cpu(s, now, 0.05);
  EXPECT_TRUE(std::isnan(with_idle[2]));
  EXPECT_DOUBLE_EQ(with_idle[0], before[0]);
  EXPECT_DOUBLE_EQ(with_idle[1], before[1]);
  // A longer window reads the older sample too.
  EXPECT_DOUBLE_EQ(pooled_recent_cpu(s, now, 0, 3 * kSecondsPerDay)[2], 3.0);
}

}  // namespace
}  // namespace sizeguard
