// Synthetic usage and one small model trained on it, shared by the recommender's unit tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "recommender/model.h"
#include "recommender/usage.h"

namespace sizeguard::test_model {

inline constexpr int64_t kStart = 1372636800;  // 2013-07-01T00:00:00Z

// Series whose CPU is level * lognormal(0, 0.4) (true p95 = level * exp(0.4 * 1.645)) and
// memory level * (1 + 0.1 * uniform); levels span 3 orders of magnitude.
inline std::vector<UsageSeries> synthetic(int count, int days, uint32_t seed) {
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

inline TrainOptions fast_options() {
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
inline const QuantileModel& trained() {
  static const QuantileModel* model = [] {
    auto data = synthetic(30, 10, 11);
    return new QuantileModel(QuantileModel::train(data, fast_options()));
  }();
  return *model;
}

}  // namespace sizeguard::test_model
