#include "recommender/recommendation.h"
#include "recommender/baselines.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <string_view>
#include <thread>

namespace sizeguard {

double round_up_clamped(double value, double min, double max, double step) {
  if (!std::isfinite(value)) value = max;
  value = std::clamp(value, min, max);
  if (step <= 0) return value;
  double r = std::ceil(value / step - 1e-9) * step;
  if (r > max) r = std::floor(max / step + 1e-9) * step;
  return r;
}

namespace {

// spend_risk_budget's shape (chosen on July 2013 days 17-20, see docs/recommender.md): z in
// [0, 2.5] (no series below its median, none above its p99.4); sigma at least 0.02 (0.3
// when the 7-day quantiles are missing); the memory model predicts the day's peak, taken as
// z = 2.33 (the p99 of 288 samples) of the day's samples, and the centre is lowered by 0.5 so
// the blend's matched margin stays above 1 (the gate's rule for candidates built on VPA).
constexpr double kBudgetLowZ = 0, kBudgetHighZ = 2.5, kBudgetMinSigma = 0.02, kBudgetDefaultSigma = 0.3;
constexpr double kBudgetPeakZ = 2.33, kBudgetMemoryShift = -0.5, kBytesPerGiB = 1073741824.0;

// Where a named feature sits in FeatureRow::values.
size_t feature_index(std::string_view name) {
  return static_cast<size_t>(std::find(feature_names().begin(), feature_names().end(), name) - feature_names().begin());
}

double confidence_of(const FeatureRow& row) {
  static const size_t cpu_burst = feature_index("cpu_burst_7d"), mem_burst = feature_index("mem_burst_7d");
  const double history = std::min(1.0, row.history_days / 7.0);
  double spread = 0;
  for (size_t i : {cpu_burst, mem_burst})
    if (std::isfinite(row.values[i])) spread = std::max(spread, static_cast<double>(row.values[i]));
  return std::round(100 * history / (1 + 0.25 * spread)) / 100;
}

}  // namespace

RecommendationPolicy shipped_policy(const ModelMetadata& m) {
  RecommendationPolicy p;
  if (m.calibrated_cpu_margin > 0) p.margin = m.calibrated_cpu_margin, p.memory_margin = m.calibrated_memory_margin;
  if (m.cpu_gate.decided) {
    p.cpu_from_model = m.cpu_gate.use_model, p.baseline_cpu_margin = m.cpu_gate.baseline_margin;
    p.cpu_blend = m.cpu_gate.use_blend, p.blend_cpu_margin = m.cpu_gate.blend_margin;
  }
  if (m.memory_gate.decided) {
    p.memory_from_model = m.memory_gate.use_model, p.baseline_memory_margin = m.memory_gate.baseline_margin;
    p.memory_blend = m.memory_gate.use_blend, p.blend_memory_margin = m.memory_gate.blend_margin;
  }
  return p;
}

DistributionCheck out_of_distribution(const ModelMetadata& m, const FeatureRow& row) {
  DistributionCheck out;
  const size_t n = feature_count();
  if (m.input_low.size() != n || m.input_high.size() != n || row.values.size() != n) return out;
  const auto& names = feature_names();
  constexpr double kLevelSlack = 0.6931471805599453;  // log 2
  constexpr double kSlack = 0.5;
  for (int r = 0; r < 2; ++r) {
    const std::string prefix = r == 0 ? "cpu_" : "mem_";
    size_t seen = 0, outside = 0;
    bool level_outside = false, stale = false;
    for (size_t f = 0; f < n; ++f) {
      const bool own = names[f].rfind(prefix, 0) == 0;
      const bool shared = names[f].rfind("cpu_", 0) != 0 && names[f].rfind("mem_", 0) != 0;
      if (!own && !shared) continue;
      const double v = row.values[f];
      if (names[f] == prefix + "p95_7d" && !std::isfinite(v)) stale = true;  // no sample in the last 7 days
      if (!std::isfinite(v)) continue;
      if (names[f] == prefix + "level") {
        level_outside = v < m.input_low[f] - kLevelSlack || v > m.input_high[f] + kLevelSlack;
        continue;
      }
      ++seen;
      outside += v < m.input_low[f] - kSlack || v > m.input_high[f] + kSlack;
    }
    const bool far = stale || level_outside || (seen > 0 && 4 * outside > seen);
    (r == 0 ? out.cpu : out.memory) = far;
  }
  return out;
}

void spend_risk_budget(const std::vector<FeatureRow>& rows, std::vector<Prediction>& predictions, double cpu_risk,
                       double memory_risk) {
  static const size_t p50[2] = {feature_index("cpu_p50_7d"), feature_index("mem_p50_7d")},
                      p95[2] = {feature_index("cpu_p95_7d"), feature_index("mem_p95_7d")};
  const size_t n = std::min(rows.size(), predictions.size());
  if (n == 0) return;
  for (int memory = 0; memory < 2; ++memory) {
    const double risk = memory ? memory_risk : cpu_risk;
    if (!(risk > 0 && risk < 1)) continue;
    // Per series: log-normal centre mu and spread sigma (log units) of the next day's samples.
    std::vector<double> mu(n), sigma(n);
    for (size_t k = 0; k < n; ++k) {
      const double a = rows[k].values[p50[memory]], b = rows[k].values[p95[memory]];
      sigma[k] = std::max(kBudgetMinSigma, std::isfinite(a) && std::isfinite(b) ? (b - a) / 1.6448536 : kBudgetDefaultSigma);
      mu[k] = memory ? std::log(predictions[k].memory_bytes / kBytesPerGiB) - kBudgetPeakZ * sigma[k] + kBudgetMemoryShift
                     : std::log(predictions[k].cpu_cores);
    }
    // Minimising r + lambda * P(usage > r) puts r where the density per unit of resource is
    // 1 / lambda: r sigma = lambda phi(z) with log r = mu + z sigma, i.e.
    // z^2 / 2 + sigma z + (mu + log sigma - log lambda + log sqrt(2 pi)) = 0 (the upper root).
    // Without a root every level costs more than it saves: the lowest z.
    auto z_of = [&](size_t k, double log_lambda) {
      const double c = mu[k] + std::log(sigma[k]) - log_lambda + 0.91893853320467274;
      const double d = sigma[k] * sigma[k] - 2 * c;
      return std::clamp(d < 0 ? kBudgetLowZ : -sigma[k] + std::sqrt(d), kBudgetLowZ, kBudgetHighZ);
    };
    auto mean_risk = [&](double log_lambda) {
      double sum = 0;
      for (size_t k = 0; k < n; ++k) sum += 0.5 * std::erfc(z_of(k, log_lambda) / std::sqrt(2.0));
      return sum / static_cast<double>(n);
    };
    double low = -60, high = 60;  // the mean risk falls as lambda grows
    for (int it = 0; it < 100; ++it) {
      const double mid = (low + high) / 2;
      (mean_risk(mid) > risk ? low : high) = mid;
    }
    for (size_t k = 0; k < n; ++k) {
      const double v = std::exp(mu[k] + z_of(k, high) * sigma[k]);
      (memory ? predictions[k].memory_bytes : predictions[k].cpu_cores) = memory ? v * kBytesPerGiB : v;
    }
  }
}

std::vector<Recommendation> recommend_batch(const QuantileModel& model, const std::vector<UsageSeries>& series,
                                            int64_t now, const RecommendationPolicy& policy, size_t top_features,
                                            int threads) {
  std::vector<Recommendation> out(series.size());
  std::vector<FeatureRow> all(series.size());
  // VPA per series, up front for a correcting model (its base) or a policy that uses it for
  // every series; else only for series the distribution guard sends to it (below).
  const bool need_vpa = model.needs_baseline() || !policy.cpu_from_model || !policy.memory_from_model ||
                        policy.cpu_blend || policy.memory_blend;
  std::vector<BaselineRecommendation> vpa(series.size());
  {
    // Features and the baseline in parallel over series.
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next++) < series.size();) {
        all[i] = compute_features(series[i], now);
        if (need_vpa && all[i].history_samples > 0) vpa[i] = vpa_recommend(series[i], now);
      }
    };
    const int n = std::max(1, std::min(hardware_threads(threads), static_cast<int>(series.size() / 16 + 1)));
    std::vector<std::thread> pool;
    for (int k = 1; k < n; ++k) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  std::vector<FeatureRow> rows;
  std::vector<size_t> index;
  std::vector<Prediction> bases;
  for (size_t i = 0; i < series.size(); ++i) {
    if (all[i].history_samples == 0) {
      out[i] = cold_start_recommendation(series[i], &model.metadata(), policy, now);
      continue;
    }
    rows.push_back(std::move(all[i]));
    index.push_back(i);
    if (need_vpa) bases.push_back({vpa[i].cpu_cores, vpa[i].memory_bytes});
  }
  all.clear();
  std::vector<Prediction> predictions;
  model.predict(rows, predictions, model.needs_baseline() ? &bases : nullptr);
  if (policy.risk_budget) spend_risk_budget(rows, predictions, model.metadata().budget_cpu_risk, model.metadata().budget_memory_risk);
  const std::vector<double> forecast = pooled_forecast_cpu(predictions, model.metadata(), policy.forecast_cpu_risk);
  const std::vector<double> recent =
      policy.recent_cpu_days > 0
          ? pooled_recent_cpu(series, now, policy.recent_cpu_risk, static_cast<int64_t>(policy.recent_cpu_days * kSecondsPerDay))
          : std::vector<double>(series.size(), std::numeric_limits<double>::quiet_NaN());
  std::vector<std::vector<Contribution>> cpu_ex, mem_ex;
  if (top_features > 0) cpu_ex = model.explain(rows, false, top_features), mem_ex = model.explain(rows, true, top_features);
  const double memory_margin = policy.memory_margin > 0 ? policy.memory_margin : policy.margin;
  for (size_t k = 0; k < rows.size(); ++k) {
    Recommendation& r = out[index[k]];
    r.raw = predictions[k];
    // At least the smallest recommendation: a day of zero usage must not zero the geometric blend.
    r.recent_cpu = std::isnan(recent[index[k]]) ? recent[index[k]] : std::max(recent[index[k]], policy.cpu_min);
    r.forecast_cpu = forecast[k];
    const DistributionCheck far = policy.distribution_guard ? out_of_distribution(model.metadata(), rows[k]) : DistributionCheck{};
    r.out_of_distribution = far.cpu || far.memory;
    r.cpu_from_model = policy.cpu_from_model && !far.cpu;
    r.memory_from_model = policy.memory_from_model && !far.memory;
    double cpu = predictions[k].cpu_cores * policy.margin, memory = predictions[k].memory_bytes * memory_margin;
    r.cpu_blended = r.cpu_from_model && policy.cpu_blend;
    r.memory_blended = r.memory_from_model && policy.memory_blend;
    if (!r.cpu_from_model || !r.memory_from_model || r.cpu_blended || r.memory_blended) {
      BaselineRecommendation& b = vpa[index[k]];
      if (!b.has_history) b = vpa_recommend(series[index[k]], now);
      if (!r.cpu_from_model) cpu = b.cpu_cores * policy.baseline_cpu_margin;
      if (!r.memory_from_model) memory = b.memory_bytes * policy.baseline_memory_margin;
      if (r.cpu_blended) cpu = blend_cpu_of(r, b.cpu_cores) * policy.blend_cpu_margin;
      if (r.memory_blended) memory = blend_memory(predictions[k].memory_bytes, b.memory_bytes) * policy.blend_memory_margin;
    }
    const double floor = memory_request_floor(series[index[k]], now, policy.memory_request_floor_days);
    r.memory_at_request = memory < floor;
    if (r.memory_at_request) memory = floor, r.explanation.push_back({"memory:request_floor:new_or_resumed", 0.0});
    r.cpu_cores = round_up_clamped(cpu, policy.cpu_min, policy.cpu_max, policy.cpu_step);
    r.memory_bytes = round_up_clamped(memory, policy.memory_min, policy.memory_max, policy.memory_step);
    r.confidence = confidence_of(rows[k]);
    // Why the baseline: "gate" (the model lost the training backtest) or "out_of_distribution".
    if (r.cpu_blended) {
      const char* model_part = std::isnan(r.forecast_cpu) ? "model" : "forecast";
      r.explanation.push_back({std::isnan(r.recent_cpu) ? std::string("cpu:blend:sqrt(") + model_part + "*vpa)"
                                                        : std::string("cpu:blend:(") + model_part + "*vpa)^1/4*recent^1/2",
                               0.0});
    }
    if (r.memory_blended) r.explanation.push_back({"memory:blend:sqrt(model*vpa)", 0.0});
    if (!r.cpu_from_model) r.explanation.push_back({far.cpu ? "cpu:baseline:out_of_distribution" : "cpu:baseline:gate", 0.0});
    if (!r.memory_from_model)
      r.explanation.push_back({far.memory ? "memory:baseline:out_of_distribution" : "memory:baseline:gate", 0.0});
    if (top_features > 0) {
      if (r.cpu_from_model)
        for (const auto& c : cpu_ex[k]) r.explanation.push_back({"cpu:" + c.feature, c.contribution});
      if (r.memory_from_model)
        for (const auto& c : mem_ex[k]) r.explanation.push_back({"memory:" + c.feature, c.contribution});
    }
  }
  return out;
}

double blend_cpu(double prediction, double vpa, double recent) {
  const double corrected = std::sqrt(prediction * vpa);
  return std::isnan(recent) ? corrected : std::sqrt(corrected * recent);
}

double blend_memory(double prediction, double vpa) { return std::sqrt(prediction * vpa); }

double blend_cpu_of(const Recommendation& r, double vpa) {
  return blend_cpu(std::isnan(r.forecast_cpu) ? r.raw.cpu_cores : r.forecast_cpu, vpa, r.recent_cpu);
}

std::vector<double> pooled_forecast_cpu(const std::vector<Prediction>& predictions, const ModelMetadata& metadata,
                                        double risk) {
  const auto& q = metadata.cpu_tail_quantiles;
  if (q.empty() || risk <= 0) return std::vector<double>(predictions.size(), std::numeric_limits<double>::quiet_NaN());
  std::vector<std::vector<ExceedancePoint>> forecasts(predictions.size());
  for (size_t i = 0; i < predictions.size(); ++i) {
    auto& f = forecasts[i];
    f.push_back({1 - metadata.cpu_quantile, predictions[i].cpu_cores});
    for (size_t j = 0; j < q.size() && j < kMaxCpuTails; ++j) f.push_back({1 - q[j], predictions[i].cpu_tail[j]});
  }
  return pooled_forecast_levels(forecasts, risk);
}

double memory_request_floor(const UsageSeries& series, int64_t now, double days) {
  if (days <= 0) return 0;  // off
  const auto& x = series.samples;
  const size_t after = first_sample_at_or_after(x, now);
  if (after == 0) return 0;  // no history: cold start decides
  const double span = days * kSecondsPerDay;
  if (static_cast<double>(now - x.front().timestamp) >= span && static_cast<double>(now - x[after - 1].timestamp) <= span)
    return 0;
  const ResourceSpec s = spec_at(series, now);
  return s.memory_request && *s.memory_request > 0 ? *s.memory_request
         : s.memory_limit && *s.memory_limit > 0   ? *s.memory_limit
                                                   : 0;
}

Recommendation recommend(const QuantileModel& model, const UsageSeries& series, int64_t now,
                         const RecommendationPolicy& policy, size_t top_features) {
  return recommend_batch(model, std::vector<UsageSeries>{series}, now, policy, top_features).front();
}

Recommendation cold_start_recommendation(const UsageSeries& series, const ModelMetadata* metadata,
                                         const RecommendationPolicy& policy, std::optional<int64_t> now) {
  Recommendation r;
  r.cold_start = true;
  const bool system = series.key.namespace_.rfind("kube-", 0) == 0;
  const std::string& kind = series.key.kind;
  // Defaults without a spec: small for system namespaces and DaemonSets, larger for batch.
  double cpu = 0.1, memory = 256.0 * 1048576;
  if (system || kind == "DaemonSet") cpu = 0.05, memory = 128.0 * 1048576;
  else if (kind == "Job" || kind == "CronJob") cpu = 0.25, memory = 512.0 * 1048576;
  const double cpu_ratio = metadata ? metadata->cold_cpu_request_ratio : 1.0;
  const double mem_ratio = metadata ? metadata->cold_memory_request_ratio : 1.0;
  const ResourceSpec s = now ? spec_at(series, *now) : series.spec;
  bool from_spec = false;
  if (s.cpu_request && *s.cpu_request > 0) cpu = *s.cpu_request * cpu_ratio, from_spec = true;
  else if (s.cpu_limit && *s.cpu_limit > 0) cpu = *s.cpu_limit * cpu_ratio, from_spec = true;
  if (s.memory_request && *s.memory_request > 0) memory = *s.memory_request * mem_ratio, from_spec = true;
  else if (s.memory_limit && *s.memory_limit > 0) memory = *s.memory_limit * mem_ratio, from_spec = true;
  r.cpu_cores = round_up_clamped(cpu * policy.margin, policy.cpu_min, policy.cpu_max, policy.cpu_step);
  r.memory_bytes = round_up_clamped(memory * policy.margin, policy.memory_min, policy.memory_max, policy.memory_step);
  r.confidence = from_spec ? 0.1 : 0.05;
  r.explanation.push_back({from_spec ? "cold_start:spec" : "cold_start:default(" + (kind.empty() ? std::string("unknown") : kind) + ")", 0.0});
  return r;
}

}  // namespace sizeguard
