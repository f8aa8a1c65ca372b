// The recommendations snapshot (recommend.h): quantities and JSON round trip, loader errors,
// the decision it records.
#include "recommender/recommend.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sizeguard {
namespace {

TEST(Snapshot, QuantitiesAndJsonRoundTrip) {
  Recommendation r;
  r.cpu_cores = 0.25;
  r.memory_bytes = 512.0 * 1048576;
  r.confidence = 0.8;
  r.explanation = {{"cpu:cpu_p95_24h", 0.1234567}, {"memory:mem_max_7d", -0.05}};
  const auto c = to_container_recommendation(r);
  EXPECT_EQ(c.cpu, "250m");
  EXPECT_EQ(c.memory, "512Mi");
  Recommendation big = r;
  big.cpu_cores = 2.0;
  big.memory_bytes = 1073741824.0;
  big.cold_start = true;
  EXPECT_EQ(to_container_recommendation(big).cpu, "2");
  EXPECT_EQ(to_container_recommendation(big).memory, "1Gi");

  std::vector<UsageSeries> series(2);
  series[0].key = {"team-a", "Deployment", "web", "app"};
  series[1].key = {"team-a", "StatefulSet", "db", "pg"};
  const auto snap = make_snapshot(series, {r, big}, "xgb-123", 1374364800);
  EXPECT_EQ(snap.generated_at, "2013-07-21T00:00:00Z");
  const auto text = snapshot_to_json(snap);
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["modelVersion"], "xgb-123");
  EXPECT_EQ(j["recommendations"]["team-a/Deployment/web/app"]["cpu"], "250m");
  EXPECT_EQ(j["recommendations"]["team-a/StatefulSet/db/pg"]["coldStart"], true);
  EXPECT_EQ(j["recommendations"]["team-a/Deployment/web/app"]["explanation"][0]["feature"], "cpu:cpu_p95_24h");

  const auto path = std::filesystem::temp_directory_path() / ("sizeguard-snap-" + std::to_string(::getpid()) + ".json");
  save_recommendations(snap, path);
  const auto back = load_recommendations(path);
  std::filesystem::remove(path);
  EXPECT_EQ(back.model_version, snap.model_version);
  EXPECT_EQ(back.generated_at, snap.generated_at);
  ASSERT_EQ(back.recommendations.size(), 2u);
  const auto& web = back.recommendations.at("team-a/Deployment/web/app");
  EXPECT_EQ(web.cpu, "250m");
  EXPECT_DOUBLE_EQ(web.cpu_cores, 0.25);
  EXPECT_DOUBLE_EQ(web.memory_bytes, 512.0 * 1048576);
  EXPECT_DOUBLE_EQ(web.confidence, 0.8);
  EXPECT_FALSE(web.cold_start);
  ASSERT_EQ(web.explanation.size(), 2u);
  EXPECT_NEAR(web.explanation[0].contribution, 0.1235, 1e-12);  // 4 decimals in the file
  EXPECT_EQ(snapshot_to_json(back), text);
}

TEST(Snapshot, LoaderErrorsAreClear) {
  auto error_of = [](const std::string& text) {
    try {
      parse_recommendations(text, "recs.json");
    } catch (const SnapshotError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("{").find("recs.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"modelVersion": 1e400})").find("recs.json: not valid JSON"), std::string::npos);
  EXPECT_EQ(error_of(R"({"generatedAt": "x", "recommendations": {}})"), "recs.json: missing string field 'modelVersion'");
  EXPECT_EQ(error_of(R"({"modelVersion": "v", "generatedAt": "x"})"), "recs.json: missing object field 'recommendations'");
  const std::string head = R"({"modelVersion": "v", "generatedAt": "x", "recommendations": )";
  EXPECT_EQ(error_of(head + R"({"a/b/c": {"cpu": "1", "memory": "1Mi"}}})"),
            "recs.json: recommendations[\"a/b/c\"]: key must be namespace/kind/name/container");
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"memory": "1Mi"}}})"), "recs.json: recommendations[\"a/b/c/d\"]: missing 'cpu'");
  EXPECT_NE(error_of(head + R"({"a/b/c/d": {"cpu": "lots", "memory": "1Mi"}}})")
                .find("recommendations[\"a/b/c/d\"].cpu: bad quantity 'lots'"),
            std::string::npos);
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"cpu": "1", "memory": "1Mi", "confidence": 2}}})"),
            "recs.json: recommendations[\"a/b/c/d\"].confidence: expected a number in [0, 1]");
  EXPECT_EQ(error_of(head + R"({"a/b/c/d": {"cpu": "1", "memory": "-1Mi"}}})"),
            "recs.json: recommendations[\"a/b/c/d\"].memory: must be positive, got '-1Mi'");
  EXPECT_EQ(error_of(head + R"({}})"), "no error");
  EXPECT_THROW(load_recommendations("/nonexistent/recs.json"), SnapshotError);
}

// The snapshot says what shipped per resource and why, so the report can show the gate's
// decision; a forced fallback (too little history) is not credited to the gate.
TEST(Snapshot, DecisionSaysWhichSourceShippedAndWhy) {
  ModelMetadata meta;
  meta.calibrated_cpu_margin = 2.5, meta.calibrated_memory_margin = 1.1;
  meta.cpu_gate = {true, true, true, 0.62, 0.60, 1.2, 0.52, 1.4};       // blend won
  meta.memory_gate = {true, false, false, 0.80, 0.78, 1.05, 0.79, 1.0};  // vpa won
  meta.gate_first_day = 17, meta.gate_last_day = 20;
  const RecommendationPolicy policy = shipped_policy(meta);
  std::vector<UsageSeries> series(1);
  series[0].key = {"team-a", "Deployment", "web", "app"};
  series[0].samples.push_back({1372636800, 0.5, 1e9});  // 2013-07-01T00:00Z: day 1
  std::vector<Recommendation> recs(3);
  recs[0].cpu_from_model = true, recs[0].memory_from_model = false, recs[0].memory_at_request = true;
  recs[1].cpu_from_model = false, recs[1].memory_from_model = false, recs[1].out_of_distribution = true;
  recs[2].cold_start = true;
  const SnapshotDecision d = describe_decision(meta, policy, recs, series, "bundled-default: 3.0 days of history");
  EXPECT_EQ(d.cpu.source, "blend");
  EXPECT_DOUBLE_EQ(d.cpu.margin, 1.4);
  EXPECT_TRUE(d.cpu.gated);
  EXPECT_DOUBLE_EQ(d.cpu.blend_slack, 0.52);
  EXPECT_EQ(d.cpu.baseline_series, 1u);  // the out-of-distribution series
  EXPECT_EQ(d.memory.source, "baseline");
  EXPECT_DOUBLE_EQ(d.memory.margin, 1.05);
  EXPECT_EQ(d.memory.baseline_series, 0u);  // all of memory is vpa by the gate, none "anyway"
  EXPECT_EQ(d.cold_start, 1u);
  EXPECT_EQ(d.gate_days, "2013-07-17..2013-07-20");
  const auto lines = decision_summary(d);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "cpu: blend x1.40 (slack at matched risk on 2013-07-17..2013-07-20: model 62.0%, blend 52.0%, "
                      "vpa 60.0%); 1 series on vpa (out of distribution)");
  EXPECT_EQ(lines[1].rfind("memory: vpa baseline x1.05 (", 0), 0u) << lines[1];
  EXPECT_EQ(d.memory_at_request, 1u);
  EXPECT_NE(lines[1].find("; 1 series held at their request (new or back after a pause)"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[0].find("held at"), std::string::npos);  // a memory floor, never CPU

  RecommendationSnapshot snap;
  snap.model_version = "xgb-1", snap.generated_at = "2013-07-21T00:00:00Z", snap.decision = d;
  const auto back = parse_recommendations(snapshot_to_json(snap));
  ASSERT_TRUE(back.decision);
  EXPECT_EQ(back.decision->model, d.model);
  EXPECT_EQ(back.decision->cpu.source, "blend");
  EXPECT_DOUBLE_EQ(back.decision->cpu.model_slack, 0.62);
  EXPECT_EQ(back.decision->gate_days, d.gate_days);
  EXPECT_EQ(back.decision->memory_at_request, 1u);
  EXPECT_EQ(snapshot_to_json(back), snapshot_to_json(snap));
  EXPECT_FALSE(parse_recommendations(R"({"modelVersion": "v", "generatedAt": "x", "recommendations": {}})").decision);

  // Too little history: every resource forced to vpa; the gate's numbers do not explain that.
  RecommendationPolicy forced = policy;
  forced.cpu_from_model = forced.memory_from_model = false;
  const SnapshotDecision f = describe_decision(meta, forced, recs, series, "baseline: 0.5 days of history");
  EXPECT_EQ(f.cpu.source, "baseline");
  EXPECT_FALSE(f.cpu.gated);
  EXPECT_TRUE(f.gate_days.empty() || f.memory.gated);
  EXPECT_NE(decision_summary(f)[0].find("(not gated)"), std::string::npos);

  try {
    parse_recommendations(R"({"modelVersion": "v", "generatedAt": "x", "recommendations": {},
                              "decision": {"cpu": {"source": "magic"}, "memory": {"source": "model"}}})",
                          "recs.json");
    FAIL() << "an unknown source loaded";
  } catch (const SnapshotError& e) {
    EXPECT_STREQ(e.what(), "recs.json: decision.cpu.source: expected \"model\", \"blend\" or \"baseline\"");
  }
}

}  // namespace
}  // namespace sizeguard
