#include "recommender/features.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace sizeguard {
namespace {

constexpr float kMissing = std::numeric_limits<float>::quiet_NaN();
constexpr std::array<const char*, 4> kWindowNames{"1h", "6h", "24h", "7d"};
constexpr std::array<int64_t, 4> kWindows{kSecondsPerHour, 6 * kSecondsPerHour, kSecondsPerDay,
                                          7 * kSecondsPerDay};
constexpr std::array<const char*, 5> kStatNames{"p50", "p90", "p95", "p99", "max"};
constexpr std::array<double, 5> kStatQuantiles{0.5, 0.9, 0.95, 0.99, 1.0};

std::vector<std::string> make_names() {
  std::vector<std::string> names;
  for (const char* r : {"cpu", "mem"}) {
    const std::string p(r);
    for (const char* w : kWindowNames)
      for (const char* s : kStatNames) names.push_back(p + "_" + s + "_" + w);
    for (const char* f : {"trend_7d", "same_hour_1d", "same_hour_7d", "p95_same_day_last_week",
                          "burst_24h", "burst_7d", "request", "limit", "level"})
      names.push_back(p + "_" + f);
  }
  for (const char* f : {"history_samples", "history_days", "hour_of_day", "day_of_week"})
    names.emplace_back(f);
  return names;
}

double value_of(const UsageSample& s, bool cpu) { return cpu ? s.cpu_cores : s.memory_bytes; }

// Sorted values of one resource over sample indices [begin, end).
void sorted_values(const std::vector<UsageSample>& s, size_t begin, size_t end, bool cpu,
                   std::vector<double>& out) {
  out.clear();
  for (size_t i = begin; i < end; ++i) out.push_back(value_of(s[i], cpu));
  std::sort(out.begin(), out.end());
}

double mean_values(const std::vector<UsageSample>& s, size_t begin, size_t end, bool cpu) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += value_of(s[i], cpu);
  return sum / static_cast<double>(end - begin);
}

// Appends the features of one resource; `end` is the index of the first sample at/after t.
void resource_features(const UsageSeries& series, const ResourceSpec& spec, int64_t t, size_t end, bool cpu,
                       std::vector<float>& out, double& level_out) {
  const auto& s = series.samples;
  const double floor = cpu ? kCpuFloorCores : kMemoryFloorBytes;
  std::vector<double> buf;
  buf.reserve(2100);

  const size_t week_begin = first_sample_at_or_after(s, t - 7 * kSecondsPerDay);
  double level = floor;
  if (week_begin < end) {
    sorted_values(s, week_begin, end, cpu, buf);
    level = std::max(floor, quantile_sorted(buf, 0.95));
  }
  level_out = level;
  auto rel = [&](double v) { return static_cast<float>(std::log(std::max(v, floor) / level)); };

  double p50_24 = NAN, p99_24 = NAN, p50_7 = NAN, p99_7 = NAN;
  for (size_t w = 0; w < kWindows.size(); ++w) {
    const size_t begin = first_sample_at_or_after(s, t - kWindows[w]);
    if (begin >= end) {
      for (size_t k = 0; k < kStatQuantiles.size(); ++k) out.push_back(kMissing);
      continue;
    }
    sorted_values(s, begin, end, cpu, buf);
    for (double q : kStatQuantiles) out.push_back(rel(quantile_sorted(buf, q)));
    if (w == 2) p50_24 = quantile_sorted(buf, 0.5), p99_24 = quantile_sorted(buf, 0.99);
    if (w == 3) p50_7 = quantile_sorted(buf, 0.5), p99_7 = quantile_sorted(buf, 0.99);
  }

  // Trend: least-squares slope of log(daily p95) over the 24-h blocks before t.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int blocks = 0;
  for (int k = 0; k < 7; ++k) {
    const size_t b = first_sample_at_or_after(s, t - (k + 1) * kSecondsPerDay);
    const size_t e = first_sample_at_or_after(s, t - k * kSecondsPerDay);
    if (b >= e) continue;
    sorted_values(s, b, e, cpu, buf);
    const double x = -static_cast<double>(k);
    const double y = std::log(std::max(quantile_sorted(buf, 0.95), floor));
    sx += x, sy += y, sxx += x * x, sxy += x * y, ++blocks;
  }
  const double denom = blocks * sxx - sx * sx;
  out.push_back(blocks >= 2 && denom > 0 ? static_cast<float>((blocks * sxy - sx * sy) / denom)
                                         : kMissing);

  // Seasonality: the hour-of-day starting at t, yesterday and over the last 7 days.
  double hour_sum = 0;
  int hours = 0;
  float yesterday = kMissing;
  for (int k = 1; k <= 7; ++k) {
    const int64_t from = t - k * kSecondsPerDay;
    const size_t b = first_sample_at_or_after(s, from);
    const size_t e = std::min(end, first_sample_at_or_after(s, from + kSecondsPerHour));
    if (b >= e) continue;
    const double m = mean_values(s, b, e, cpu);
    if (k == 1) yesterday = rel(m);
    hour_sum += m, ++hours;
  }
  out.push_back(yesterday);
  out.push_back(hours > 0 ? rel(hour_sum / hours) : kMissing);
  {
    const size_t b = first_sample_at_or_after(s, t - 7 * kSecondsPerDay);
    const size_t e = std::min(end, first_sample_at_or_after(s, t - 6 * kSecondsPerDay));
    if (b < e) {
      sorted_values(s, b, e, cpu, buf);
      out.push_back(rel(quantile_sorted(buf, 0.95)));
    } else {
      out.push_back(kMissing);
    }
  }

  auto burst = [&](double p99, double p50) {
    return std::isnan(p99) ? kMissing
                           : static_cast<float>(std::log(std::max(p99, floor) / std::max(p50, floor)));
  };
  out.push_back(burst(p99_24, p50_24));
  out.push_back(burst(p99_7, p50_7));

  const auto& request = cpu ? spec.cpu_request : spec.memory_request;
  const auto& limit = cpu ? spec.cpu_limit : spec.memory_limit;
  out.push_back(request && *request > 0 ? rel(*request) : kMissing);
  out.push_back(limit && *limit > 0 ? rel(*limit) : kMissing);
  out.push_back(static_cast<float>(std::log(cpu ? level : level / 1073741824.0)));
}

}  // namespace

const std::vector<std::string>& feature_names() {
  static const std::vector<std::string> names = make_names();
  return names;
}

size_t feature_count() { return feature_names().size(); }

double quantile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return NAN;
  const double h = (static_cast<double>(sorted.size()) - 1) * std::clamp(q, 0.0, 1.0);
  const auto lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

int64_t typical_step(const UsageSeries& series) {
  const auto& s = series.samples;
  if (s.size() < 2) return 300;
  std::vector<int64_t> d;
  d.reserve(s.size() - 1);
  for (size_t i = 1; i < s.size(); ++i) d.push_back(s[i].timestamp - s[i - 1].timestamp);
  std::nth_element(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(d.size() / 2), d.end());
  return std::max<int64_t>(1, d[d.size() / 2]);
}

int64_t utc_midnight(int64_t t) {
  int64_t r = t % kSecondsPerDay;
  if (r < 0) r += kSecondsPerDay;
  return t - r;
}

FeatureRow compute_features(const UsageSeries& series, int64_t t) {
  FeatureRow row;
  row.values.reserve(feature_count());
  const auto& s = series.samples;
  const size_t end = first_sample_at_or_after(s, t);
  const ResourceSpec spec = spec_at(series, t);  // in force at t, never a later request
  resource_features(series, spec, t, end, true, row.values, row.cpu_level);
  resource_features(series, spec, t, end, false, row.values, row.memory_level);
  row.history_samples = end;
  row.history_days = end > 0 ? static_cast<double>(t - s.front().timestamp) / kSecondsPerDay : 0.0;
  row.values.push_back(static_cast<float>(row.history_samples));
  row.values.push_back(static_cast<float>(row.history_days));
  const int64_t midnight = utc_midnight(t);
  row.values.push_back(static_cast<float>((t - midnight) / kSecondsPerHour));
  // 1970-01-01 was a Thursday (3 with Monday = 0).
  row.values.push_back(static_cast<float>(((midnight / kSecondsPerDay) % 7 + 7 + 3) % 7));
  return row;
}

Targets compute_targets(const UsageSeries& series, int64_t t, int64_t horizon_seconds,
                        double cpu_quantile) {
  Targets targets;
  const auto& s = series.samples;
  const size_t b = first_sample_at_or_after(s, t);
  const size_t e = first_sample_at_or_after(s, t + horizon_seconds);
  targets.samples = e > b ? e - b : 0;
  if (targets.samples == 0) return targets;
  std::vector<double> buf;
  sorted_values(s, b, e, true, buf);
  targets.cpu = quantile_sorted(buf, cpu_quantile);
  for (size_t i = b; i < e; ++i) targets.memory = std::max(targets.memory, s[i].memory_bytes);
  return targets;
}

}  // namespace sizeguard
