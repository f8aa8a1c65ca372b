// The CronJob's choice of model from the cluster's own history (model_choice.h): baseline,
// bundled default, a newly trained and gated model kept as the last good one, and the last
// good model when training fails.
#include "recommender/model_choice.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

namespace sizeguard {
namespace {

constexpr int64_t kStart = 1714521600;  // 2024-05-01T00:00:00Z: after the bundled model's training days (2013)
const std::filesystem::path kDefault = std::filesystem::path(SIZEGUARD_SOURCE_DIR) / "recommender/models/default";

std::vector<UsageSeries> history(double days, int count = 6) {
  std::mt19937 rng(3);
  std::lognormal_distribution<double> noise(0, 0.4);
  std::vector<UsageSeries> out;
  for (int i = 0; i < count; ++i) {
    UsageSeries s;
    s.key = {"ns", "Deployment", "app" + std::to_string(i), "main"};
    for (int64_t t = kStart; t < kStart + static_cast<int64_t>(days * kSecondsPerDay); t += 300)
      s.samples.push_back({t, 0.1 * (i + 1) * noise(rng), 3e8 * (i + 1) * (1 + 0.05 * noise(rng))});
    out.push_back(std::move(s));
  }
  return out;
}

struct Store {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("sizeguard-store-" + std::to_string(::getpid()));
  Store() { std::filesystem::remove_all(dir); }
  ~Store() { std::filesystem::remove_all(dir); }
};

ModelChoiceOptions options(const Store& store) {
  ModelChoiceOptions o;
  o.store = store.dir;
  o.default_model = kDefault;
  o.min_train_days = 8;
  o.min_default_days = 1;
  o.train.max_rounds = 20;
  o.train.validation_days = 2;
  o.train.nthread = 2;
  return o;
}

TEST(ModelChoice, TooLittleHistoryUsesTheBaselineThenTheBundledDefault) {
  Store store;
  const QuantileModel bundled = QuantileModel::load(kDefault, 1);
  const ModelChoice tiny = choose_model(history(0.5), options(store));
  EXPECT_EQ(tiny.source, ModelSource::baseline);
  EXPECT_FALSE(tiny.policy.cpu_from_model);
  EXPECT_FALSE(tiny.policy.memory_from_model);
  const ModelChoice some = choose_model(history(4.5), options(store));
  EXPECT_EQ(some.source, ModelSource::bundled_default);
  EXPECT_EQ(some.model.version(), bundled.version());
  EXPECT_NEAR(some.history_days, 4.5, 0.01);
  // The bundled model is gated again on this cluster's last days (2-4 of 4).
  EXPECT_EQ(some.model.metadata().gate_first_day, 2);
  EXPECT_EQ(some.model.metadata().gate_last_day, 4);
  EXPECT_NE(some.reason.find("gated on days 2-4 here"), std::string::npos) << some.reason;
  EXPECT_EQ(some.policy.cpu_from_model, some.model.metadata().cpu_gate.use_model);
  EXPECT_FALSE(std::filesystem::exists(store.dir / "current"));  // nothing trained, nothing kept
}

TEST(ModelChoice, TrainsGatesAndKeepsTheLastGoodModel) {
  Store store;
  const auto data = history(10);
  const ModelChoice first = choose_model(data, options(store));
  const auto& m = first.model.metadata();
  ASSERT_TRUE(m.cpu_gate.decided) << first.reason;
  if (m.cpu_gate.use_model || m.memory_gate.use_model) {
    // Won somewhere: kept as the last good model, with its gate.
    EXPECT_EQ(first.source, ModelSource::trained) << first.reason;
    EXPECT_EQ(QuantileModel::load(store.dir / "current", 1).version(), first.model.version());
  } else {
    EXPECT_NE(first.source, ModelSource::trained) << first.reason;
  }
  // A run whose training fails (here: no origin has enough history) keeps the last good model.
  const auto kept = first.source == ModelSource::trained ? first.model.version() : std::string();
  ModelChoiceOptions failing = options(store);
  failing.train.min_history_samples = 1000000;
  const ModelChoice second = choose_model(data, failing);
  EXPECT_NE(second.reason.find("training failed"), std::string::npos) << second.reason;
  if (!kept.empty()) {
    EXPECT_EQ(second.source, ModelSource::last_good);
    EXPECT_EQ(second.model.version(), kept);
  } else {
    EXPECT_EQ(second.source, ModelSource::bundled_default);
  }
  // Without a last good model it is the bundled default.
  std::filesystem::remove_all(store.dir);
  const ModelChoice third = choose_model(data, failing);
  EXPECT_EQ(third.source, ModelSource::bundled_default);
  EXPECT_NE(third.reason.find("no last good model"), std::string::npos) << third.reason;
}

}  // namespace
}  // namespace sizeguard
