#include "recommender/baselines.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "recommender/features.h"

namespace sizeguard {

DecayingHistogram::DecayingHistogram(double first_bucket, double ratio, double max_value,
                                     double half_life_seconds)
    : first_(first_bucket), ratio_(ratio), half_life_(half_life_seconds) {
  // Number of buckets so that the last one starts beyond max_value.
  size_t n = 1;
  while (bucket_start(n) < max_value) ++n;
  weights_.assign(n + 1, 0.0);
}

double DecayingHistogram::bucket_start(size_t bucket) const {
  return first_ * (std::pow(ratio_, static_cast<double>(bucket)) - 1) / (ratio_ - 1);
}

size_t DecayingHistogram::bucket_of(double value) const {
  if (!(value >= first_)) return 0;
  // Inverse of bucket_start, then fix floating-point edge cases.
  auto b = static_cast<size_t>(std::floor(std::log(value * (ratio_ - 1) / first_ + 1) / std::log(ratio_)));
  b = std::min(b, weights_.size() - 1);
  while (b + 1 < weights_.size() && bucket_start(b + 1) <= value) ++b;
  while (b > 0 && bucket_start(b) > value) --b;
  return b;
}

void DecayingHistogram::add(double value, double weight, int64_t timestamp) {
  if (!has_reference_) reference_ = timestamp, has_reference_ = true;
  double exponent = static_cast<double>(timestamp - reference_) / half_life_;
  if (exponent > 100) {
    // Move the reference forward so weights stay finite; only relative weights matter.
    const double scale = std::exp2(-exponent);
    for (double& w : weights_) w *= scale;
    total_ *= scale;
    reference_ = timestamp;
    exponent = 0;
  }
  const double w = weight * std::exp2(exponent);
  weights_[bucket_of(value)] += w;
  total_ += w;
}

double DecayingHistogram::percentile(double p) const {
  if (empty()) return 0;
  const double threshold = p * total_;
  double partial = 0;
  size_t bucket = 0;
  for (; bucket + 1 < weights_.size(); ++bucket) {
    partial += weights_[bucket];
    if (partial >= threshold && weights_[bucket] > 0) break;
  }
  if (bucket + 1 < weights_.size()) return bucket_start(bucket + 1);
  return bucket_start(bucket);
}

VpaEstimator::VpaEstimator(VpaOptions options)
    : options_(options), cpu_(0.01, 1.05, 1000.0, options.half_life_seconds) {}

void VpaEstimator::add(const UsageSample& sample) {
  if (!any_) first_ = sample.timestamp, any_ = true;
  cpu_.add(sample.cpu_cores, 1.0, sample.timestamp);
  const int64_t day = utc_midnight(sample.timestamp);
  if (peaks_.empty() || peaks_.back().day != day) {
    peaks_.push_back({day, sample.timestamp, sample.memory_bytes});
    // Keep a little more than the window; recommend() selects by time.
    if (peaks_.size() > static_cast<size_t>(options_.memory_intervals) + 2) peaks_.erase(peaks_.begin());
  } else if (sample.memory_bytes > peaks_.back().value) {
    peaks_.back().timestamp = sample.timestamp;
    peaks_.back().value = sample.memory_bytes;
  }
}

BaselineRecommendation VpaEstimator::recommend(int64_t now) const {
  BaselineRecommendation rec;
  rec.has_history = any_;
  rec.confidence = any_ ? std::max(0.0, static_cast<double>(now - first_) / kSecondsPerDay) : 0.0;
  DecayingHistogram memory(1e7, 1.05, 1e13, options_.half_life_seconds);
  const int64_t from = utc_midnight(now) - (options_.memory_intervals - (now == utc_midnight(now) ? 0 : 1)) * kSecondsPerDay;
  for (const auto& peak : peaks_)
    if (peak.day >= from && peak.day < now) memory.add(peak.value, 1.0, peak.timestamp);
  const double m = 1 + options_.margin;
  rec.cpu_cores = std::max(options_.min_cpu_cores, cpu_.percentile(options_.cpu_percentile) * m);
  rec.memory_bytes = std::max(options_.min_memory_bytes, memory.percentile(options_.memory_percentile) * m);
  if (rec.confidence > 0) {
    const double up = 1 + 1 / rec.confidence;
    const double down = std::pow(1 + 0.001 / rec.confidence, -2.0);
    rec.cpu_upper = rec.cpu_cores * up, rec.memory_upper = rec.memory_bytes * up;
    rec.cpu_lower = rec.cpu_cores * down, rec.memory_lower = rec.memory_bytes * down;
  } else {
    rec.cpu_upper = rec.memory_upper = INFINITY;
    rec.cpu_lower = rec.memory_lower = 0;
  }
  return rec;
}

BaselineRecommendation vpa_recommend(const UsageSeries& series, int64_t now, const VpaOptions& options) {
  VpaEstimator vpa(options);
  for (const auto& s : series.samples) {
    if (s.timestamp >= now) break;
    vpa.add(s);
  }
  return vpa.recommend(now);
}

BaselineRecommendation krr_recommend(const UsageSeries& series, int64_t now, int64_t history_seconds,
                                     double cpu_percentile, double memory_buffer) {
  BaselineRecommendation rec;
  std::vector<double> cpu;
  double peak = 0;
  for (const auto& s : series.samples) {
    if (s.timestamp < now - history_seconds) continue;
    if (s.timestamp >= now) break;
    cpu.push_back(s.cpu_cores);
    peak = std::max(peak, s.memory_bytes);
  }
  if (cpu.empty()) return rec;
  std::sort(cpu.begin(), cpu.end());
  rec.has_history = true;
  rec.cpu_cores = std::max(quantile_sorted(cpu, cpu_percentile), kKrrMinCpuCores);
  rec.memory_bytes = std::max(peak * (1 + memory_buffer), kKrrMinMemoryBytes);
  rec.confidence = 1;
  return rec;
}

namespace {

// The lower convex hull of a series' exceedance curve: points (share of samples above, level),
// share ascending; slope[j] joins point j and j + 1 and rises with j.
struct ExceedanceHull {
  std::vector<double> share, level, slope;
  double weight = 0;  // how much of the pooled budget one unit of share stands for (samples)
  void add(double s, double l) {  // in ascending share
    while (share.size() >= 2) {
      const size_t b = share.size() - 1, a = b - 1;
      // Drop the last point when it lies on or above the segment from the one before it to the new point.
      if ((level[b] - level[a]) * (s - share[a]) < (l - level[a]) * (share[b] - share[a])) break;
      share.pop_back(), level.pop_back();
    }
    share.push_back(s), level.push_back(l);
  }
  void finish() {
    for (size_t j = 0; j + 1 < share.size(); ++j) slope.push_back((level[j + 1] - level[j]) / (share[j + 1] - share[j]));
  }
};

ExceedanceHull exceedance_hull(std::vector<double>& values) {
  ExceedanceHull h;
  const size_t n = values.size();
  h.weight = static_cast<double>(n);
  // The pooled budget is a few percent: no series is worth holding below its 60th percentile,
  // so only the samples above it need sorting.
  const size_t lowest = n * 6 / 10;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(lowest), values.end());
  std::sort(values.begin() + static_cast<std::ptrdiff_t>(lowest), values.end());
  for (size_t k = n; k-- > lowest;) h.add(static_cast<double>(n - 1 - k) / h.weight, values[k]);
  h.finish();
  return h;
}

// The hull point where cutting further costs more risk than `price` (cores per unit of share) buys.
size_t point_at_price(const ExceedanceHull& h, double price) {
  return static_cast<size_t>(std::lower_bound(h.slope.begin(), h.slope.end(), -price) - h.slope.begin());
}

// Per hull (weight 0: none, NaN) its level at the one price whose pooled share is within `risk`.
std::vector<double> levels_at_pooled_risk(const std::vector<ExceedanceHull>& hulls, double risk) {
  std::vector<double> out(hulls.size(), std::numeric_limits<double>::quiet_NaN());
  double weight = 0;
  for (const auto& h : hulls) weight += h.weight;
  if (weight == 0) return out;
  auto pooled_share = [&](double price) {
    double above = 0;
    for (const auto& h : hulls)
      if (h.weight > 0) above += h.share[point_at_price(h, price)] * h.weight;
    return above / weight;
  };
  // The pooled share falls as the price rises; bisect log(price) and keep the side within the budget.
  double low = -40, high = 40;
  for (int it = 0; it < 50; ++it) {  // to 1e-13 in log(price): the share only moves in steps
    const double mid = (low + high) / 2;
    (pooled_share(std::exp(mid)) > risk ? low : high) = mid;
  }
  for (size_t i = 0; i < hulls.size(); ++i)
    if (hulls[i].weight > 0) out[i] = hulls[i].level[point_at_price(hulls[i], std::exp(high))];
  return out;
}

}  // namespace

std::vector<double> pooled_recent_cpu(const std::vector<UsageSeries>& series, int64_t now, double risk,
                                      int64_t history_seconds) {
  std::vector<ExceedanceHull> hulls(series.size());
  std::vector<double> values;
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& x = series[i].samples;
    values.clear();
    for (size_t k = first_sample_at_or_after(x, now - history_seconds); k < x.size() && x[k].timestamp < now; ++k)
      values.push_back(x[k].cpu_cores);
    if (!values.empty()) hulls[i] = exceedance_hull(values);
  }
  return levels_at_pooled_risk(hulls, risk);
}

std::vector<double> pooled_forecast_levels(const std::vector<std::vector<ExceedancePoint>>& forecasts, double risk) {
  std::vector<ExceedanceHull> hulls(forecasts.size());
  std::vector<ExceedancePoint> points;
  for (size_t i = 0; i < forecasts.size(); ++i) {
    points = forecasts[i];
    if (points.empty()) continue;
    // Quantile forecasts made independently can cross: a level never falls as its share falls.
    std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.share > b.share; });
    for (size_t k = 1; k < points.size(); ++k) points[k].level = std::max(points[k].level, points[k - 1].level);
    for (size_t k = points.size(); k-- > 0;) hulls[i].add(points[k].share, points[k].level);
    hulls[i].finish();
    hulls[i].weight = 1;
  }
  return levels_at_pooled_risk(hulls, risk);
}

}  // namespace sizeguard
