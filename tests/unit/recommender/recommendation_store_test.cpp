// The recommendations snapshot store: loads, keeps the last good snapshot when the file
// breaks (a truncated write), and picks up the next good one.
#include "recommender/recommendation_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "recommender/publish.h"
#include "webhook/devcerts.h"
#include "webhook/readiness.h"

namespace sizeguard {
namespace {

std::string snapshot_json(const std::string& cpu) {
  return R"({"modelVersion":"xgb-1","generatedAt":"2026-11-20T00:00:00Z","recommendations":{"shop/Deployment/web/app":)"
         R"({"cpu":")" + cpu + R"(","memory":"256Mi","confidence":0.9,"coldStart":false,"explanation":[]}}})";
}

// The store's status as `serve` wires it: component "recommendations" of the readiness.
RecommendationStore::StatusCallback reports_to(Readiness& readiness) {
  return [&readiness](bool ready, const std::string& reason) { readiness.set("recommendations", ready, reason); };
}

TEST(RecommendationStore, KeepsTheLastGoodSnapshotAndReportsWhy) {
  const auto dir = make_private_temp_directory("sizeguard-recs");
  const auto path = dir / "recommendations.json";
  std::ofstream(path) << snapshot_json("250m");
  Metrics metrics;
  Readiness readiness;
  RecommendationStore store(path, metrics, reports_to(readiness));
  EXPECT_EQ(store.current(), nullptr);
  EXPECT_EQ(store.reload(), "");
  ASSERT_NE(store.current(), nullptr);
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "250m");
  EXPECT_TRUE(readiness.report().ready);

  // Truncated mid-write: an error, the previous snapshot stays, readiness says degraded.
  const std::string full = snapshot_json("500m");
  std::ofstream(path) << full.substr(0, full.size() / 2);
  EXPECT_THAT(store.reload(), ::testing::Not(::testing::IsEmpty()));
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "250m");
  EXPECT_TRUE(readiness.report().ready);
  EXPECT_THAT(readiness.report().text, ::testing::HasSubstr("recommendations: ok (degraded: last reload failed"));
  EXPECT_THAT(metrics.render(), ::testing::HasSubstr("sizeguard_recommendations_last_reload_success 0"));

  std::ofstream(path) << full;
  EXPECT_EQ(store.reload(), "");
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "500m");
  EXPECT_THAT(readiness.report().text, ::testing::HasSubstr("recommendations: ok\n"));
  EXPECT_EQ(store.reload(), "") << "unchanged file: nothing to do";
  std::filesystem::remove_all(dir);
}

TEST(RecommendationStore, AReplacedFileIsReloadedWhenItsTimesAndSizeAreTheSame) {
  // Polls skip reading when the file's stat did not change; a new file (a ConfigMap's ..data
  // swap, a rename over it) with the same size and modification time must still be seen.
  const auto dir = make_private_temp_directory("sizeguard-recs");
  const auto path = dir / "recommendations.json";
  std::ofstream(path) << snapshot_json("250m");
  const auto old_time = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  std::filesystem::last_write_time(path, old_time);
  Metrics metrics;
  RecommendationStore store(path, metrics);
  // Stats are trusted only 2 s after the last change (a second write could share its clock
  // tick): both reloads below happen past that, so the second one decides by the stat alone.
  const auto past_the_racy_window = [] { std::this_thread::sleep_for(std::chrono::milliseconds(2100)); };
  past_the_racy_window();
  EXPECT_EQ(store.reload(), "");
  EXPECT_EQ(store.reload(), "") << "unchanged";
  const auto next = dir / "next.json";
  std::ofstream(next) << snapshot_json("500m");
  std::filesystem::last_write_time(next, old_time);
  std::filesystem::rename(next, path);
  past_the_racy_window();
  EXPECT_EQ(store.reload(), "");
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "500m");
  std::filesystem::remove_all(dir);
}

TEST(RecommendationStore, AMissingFileIsNotReadyUntilItAppears) {
  const auto dir = make_private_temp_directory("sizeguard-recs");
  Metrics metrics;
  Readiness readiness;
  RecommendationStore store(dir / "nope.json", metrics, reports_to(readiness));
  EXPECT_THAT(store.reload(), ::testing::HasSubstr("cannot read"));
  EXPECT_FALSE(readiness.report().ready);
  std::ofstream(dir / "nope.json") << snapshot_json("100m");
  EXPECT_EQ(store.reload(), "");
  EXPECT_TRUE(readiness.report().ready);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

TEST(RecommendationStore, ReadsTheGzippedKeyThePublisherWritesForLargeSnapshots) {
  const auto dir = make_private_temp_directory("sizeguard-recs");
  Metrics metrics;
  RecommendationStore store(dir / "recommendations.json", metrics);
  std::ofstream(dir / "recommendations.json.gz", std::ios::binary) << gzip_compress(snapshot_json("750m"));
  EXPECT_EQ(store.reload(), "");
  ASSERT_NE(store.current(), nullptr);
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "750m");
  // Truncated gzip: an error naming the file, the snapshot stays.
  const std::string gz = gzip_compress(snapshot_json("900m"));
  std::ofstream(dir / "recommendations.json.gz", std::ios::binary) << gz.substr(0, gz.size() / 2);
  EXPECT_THAT(store.reload(), ::testing::HasSubstr("corrupt or truncated gzip"));
  EXPECT_EQ(store.current()->recommendations.at("shop/Deployment/web/app").cpu, "750m");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sizeguard
