// Recommender inference speed: single-row and batch prediction with the default model
// (recommender/models/default; a small synthetic model if it is missing), and feature
// extraction. Goal: <= 10 us per container amortised in batch.
//   cmake -S . -B build-bench -DSIZEGUARD_BUILD_BENCH=ON && cmake --build build-bench --target recommender_bench
//   build-bench/bench/recommender_bench
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <random>

#include "recommender/baselines.h"
#include "recommender/features.h"
#include "recommender/model.h"
#include "recommender/recommendation.h"

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1372636800;

UsageSeries make_series(uint32_t seed, int days) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<double> noise(0, 0.5);
  UsageSeries s;
  s.key = {"bench", "Deployment", "w" + std::to_string(seed), "main"};
  s.spec.cpu_request = 1.0;
  for (int64_t t = kStart; t < kStart + days * kSecondsPerDay; t += 300)
    s.samples.push_back({t, 0.2 * noise(rng), 5e8 * noise(rng)});
  return s;
}

const QuantileModel& model() {
  static const QuantileModel* m = [] {
    const std::filesystem::path dir = SIZEGUARD_DEFAULT_MODEL_DIR;
    if (std::filesystem::exists(dir / "model.json")) return new QuantileModel(QuantileModel::load(dir));
    std::vector<UsageSeries> data;
    for (uint32_t i = 0; i < 20; ++i) data.push_back(make_series(i, 8));
    TrainOptions o;
    o.max_rounds = 100;
    o.validation_days = 2;
    return new QuantileModel(QuantileModel::train(data, o));
  }();
  return *m;
}

// Feature rows for `n` containers (distinct series, cycled).
std::vector<FeatureRow> rows(size_t n) {
  static std::vector<FeatureRow> pool = [] {
    std::vector<FeatureRow> p;
    for (uint32_t i = 0; i < 64; ++i) p.push_back(compute_features(make_series(100 + i, 8), kStart + 8 * kSecondsPerDay));
    return p;
  }();
  std::vector<FeatureRow> out;
  for (size_t i = 0; i < n; ++i) out.push_back(pool[i % pool.size()]);
  return out;
}

void BM_PredictSingleContainer(benchmark::State& state) {
  const auto& m = model();
  const FeatureRow row = rows(1).front();
  for (auto _ : state) benchmark::DoNotOptimize(m.predict(row));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PredictSingleContainer);

// Batch of N containers: 2N rows through the main booster, N CPU rows through the merged tail
// boosters (when the model has them): two in-place XGBoost calls.
void BM_PredictBatch(benchmark::State& state) {
  const auto& m = model();
  const auto batch = rows(static_cast<size_t>(state.range(0)));
  std::vector<Prediction> out;
  for (auto _ : state) {
    m.predict(batch, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["us_per_container"] = benchmark::Counter(
      static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate | benchmark::Counter::kInvert,
      benchmark::Counter::kIs1000);
}
BENCHMARK(BM_PredictBatch)->Arg(16)->Arg(256)->Arg(4096)->UseRealTime();

// Raw inputs already laid out (what a server with pre-computed features pays).
void BM_PredictRaw(benchmark::State& state) {
  const auto& m = model();
  const auto batch = rows(static_cast<size_t>(state.range(0)));
  const size_t cols = model_inputs().size();
  std::vector<float> x;
  for (const auto& r : batch)
    for (int k = 0; k < 2; ++k) {
      x.insert(x.end(), r.values.begin(), r.values.end());
      x.push_back(static_cast<float>(k));
    }
  std::vector<float> out;
  for (auto _ : state) {
    m.predict_raw(x.data(), x.size() / cols, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PredictRaw)->Arg(1)->Arg(4096)->UseRealTime();

void BM_ComputeFeatures(benchmark::State& state) {
  const UsageSeries s = make_series(7, 14);
  for (auto _ : state) benchmark::DoNotOptimize(compute_features(s, kStart + 14 * kSecondsPerDay));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ComputeFeatures);

// The CPU blend's pooled recent level over a batch of N series (one day of 5-minute samples
// each): a sort and a convex hull per series, then a bisection over the batch.
void BM_PooledRecentCpu(benchmark::State& state) {
  std::vector<UsageSeries> batch;
  for (int64_t i = 0; i < state.range(0); ++i) batch.push_back(make_series(static_cast<uint32_t>(1000 + i), 2));
  for (auto _ : state) benchmark::DoNotOptimize(pooled_recent_cpu(batch, kStart + 2 * kSecondsPerDay, 0.05));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["us_per_container"] = benchmark::Counter(
      static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate | benchmark::Counter::kInvert,
      benchmark::Counter::kIs1000);
}
BENCHMARK(BM_PooledRecentCpu)->Arg(16)->Arg(4096)->UseRealTime();

// The CPU blend's pooled forecast level over a batch of N predictions (four forecast points each):
// a small hull per series, then a bisection over the batch.
void BM_PooledForecastCpu(benchmark::State& state) {
  const auto& m = model();
  std::vector<Prediction> predicted;
  m.predict(rows(static_cast<size_t>(state.range(0))), predicted);
  for (auto _ : state) benchmark::DoNotOptimize(pooled_forecast_cpu(predicted, m.metadata(), 0.05));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["us_per_container"] = benchmark::Counter(
      static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate | benchmark::Counter::kInvert,
      benchmark::Counter::kIs1000);
}
BENCHMARK(BM_PooledForecastCpu)->Arg(16)->Arg(4096)->UseRealTime();

}  // namespace
}  // namespace sizeguard
