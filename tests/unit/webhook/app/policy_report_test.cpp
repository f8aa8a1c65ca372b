// PolicyReports built from audits (pure): one per namespace, deterministic, summary counts,
// right-sizing as rule "rightsizing" with its properties, and the size bound.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "webhook/app/background_audit.h"

namespace sizeguard {
namespace {

ObjectAudit audit(const std::string& ns, const std::string& name, std::vector<AuditResult> results) {
  ObjectAudit a;
  a.kind = "Deployment";
  a.api_version = "apps/v1";
  a.namespace_ = ns;
  a.name = name;
  a.uid = "uid-" + name;
  a.results = std::move(results);
  return a;
}

AuditResult result(const std::string& policy, const std::string& outcome, Mode mode = Mode::Enforce) {
  return {policy, "resources", outcome, mode, outcome == "pass" ? "" : "container app has no cpu request",
          outcome == "pass" ? "" : "MissingRequest", outcome == "fail" && mode == Mode::Enforce};
}

TEST(PolicyReports, OnePerNamespaceWithSummaryAndSortedResults) {
  std::vector<ObjectAudit> audits = {audit("shop", "web", {result("b", "fail"), result("a", "pass")}),
                                     audit("shop", "api", {result("a", "warn", Mode::Warn)}),
                                     audit("ops", "tool", {result("a", "error")})};
  ObjectAudit owned = audit("shop", "web-5d8f", {result("a", "fail")});
  owned.skipped = "owned by a controller";
  audits.push_back(owned);
  const auto reports = build_policy_reports(audits);
  ASSERT_EQ(reports.size(), 2u);
  const Json& shop = reports.at("shop");
  EXPECT_EQ(shop["apiVersion"], "wgpolicyk8s.io/v1alpha2");
  EXPECT_EQ(shop["kind"], "PolicyReport");
  EXPECT_EQ(shop["metadata"], Json({{"name", "sizeguard-audit"}, {"namespace", "shop"},
                                    {"labels", {{"app.kubernetes.io/managed-by", "sizeguard"}}}}));
  EXPECT_EQ(shop["summary"], Json({{"pass", 1}, {"fail", 1}, {"warn", 1}, {"error", 0}, {"skip", 0}}));
  ASSERT_EQ(shop["results"].size(), 3u);  // the skipped object has none
  // By kind, name, policy, rule: api before web, and web's policy a before b.
  EXPECT_EQ(shop["results"][0]["resources"][0]["name"], "api");
  EXPECT_EQ(shop["results"][1]["policy"], "a");
  EXPECT_EQ(shop["results"][2]["policy"], "b");
  EXPECT_EQ(shop["results"][2]["properties"], Json({{"mode", "enforce"}, {"reason", "MissingRequest"}}));
  EXPECT_EQ(shop["results"][1]["message"], "passed");
  EXPECT_EQ(reports.at("ops")["summary"]["error"], 1);

  // The same audits in another order make the same reports: nothing to write.
  std::reverse(audits.begin(), audits.end());
  EXPECT_EQ(build_policy_reports(audits), reports);
}

TEST(PolicyReports, RightsizingIsARuleWithCurrentRecommendedSavingsColdStartAndConfidence) {
  ObjectAudit a = audit("shop", "web", {});
  AuditSizing sizing;
  sizing.policy = "rightsizing";
  sizing.mode = Mode::Audit;
  sizing.workload = "shop/Deployment/web";
  sizing.changes = {{"app", "cpu", "request", "1", "250m"}, {"app", "memory", "request", "1Gi", "256Mi"},
                    {"sidecar", "cpu", "limit", "500m", ""}};
  sizing.cpu_before = 1.0;
  sizing.cpu_after = 0.25;
  sizing.memory_before = 1024.0 * 1024 * 1024;
  sizing.memory_after = 256.0 * 1024 * 1024;
  sizing.replicas = 3;
  sizing.confidence = 0.8;
  a.rightsizing = sizing;
  const auto reports = build_policy_reports({a});
  const Json& r = reports.at("shop")["results"][0];
  EXPECT_EQ(r["rule"], "rightsizing");
  EXPECT_EQ(r["policy"], "rightsizing");
  EXPECT_EQ(r["result"], "warn");
  EXPECT_EQ(r["scored"], false);
  const Json& p = r["properties"];
  EXPECT_EQ(p["current"], "app: cpu request 1, memory request 1Gi; sidecar: cpu limit 500m");
  EXPECT_EQ(p["recommended"], "app: cpu request 250m, memory request 256Mi; sidecar: cpu limit none");
  EXPECT_EQ(p["savings"], "cpu 2.250 cores, memory 2304Mi");
  EXPECT_EQ(p["cpuSavingsCores"], "2.250");
  EXPECT_EQ(p["memorySavingsBytes"], "2415919104");
  EXPECT_EQ(p["coldStart"], "false");
  EXPECT_EQ(p["confidence"], "0.80");
  EXPECT_EQ(p["mode"], "audit");
  EXPECT_EQ(p["replicas"], "3");
  for (const auto& [key, value] : p.items()) EXPECT_TRUE(value.is_string()) << key;  // the CRD: map of strings

  // The violations gauge counts it as the report does: a warn.
  ObjectAudit other = audit("shop", "api", {result("requirements", "fail"), result("floor", "pass")});
  EXPECT_EQ(count_violations({a, other}), (std::map<ViolationKey, int>{{{"requirements", "resources", "shop"}, 1},
                                                                       {{"rightsizing", "rightsizing", "shop"}, 1}}));

  // Requests that already match: a pass, and no violation.
  a.rightsizing->changes.clear();
  EXPECT_EQ(build_policy_reports({a}).at("shop")["results"][0]["result"], "pass");
  EXPECT_TRUE(count_violations({a}).empty());
}

TEST(PolicyReports, ClusterScopedObjectsGoToTheClusterPolicyReport) {
  ObjectAudit node = audit("", "gpu-pool", {result("a", "fail")});
  node.kind = "NodePool";
  const auto reports = build_policy_reports({node, audit("shop", "web", {result("a", "pass")})});
  ASSERT_EQ(reports.size(), 2u);
  const Json& cluster = reports.at("");
  EXPECT_EQ(cluster["kind"], "ClusterPolicyReport");
  EXPECT_EQ(cluster["metadata"], Json({{"name", "sizeguard-audit"}, {"labels", {{"app.kubernetes.io/managed-by", "sizeguard"}}}}));
  EXPECT_FALSE(cluster["results"][0]["resources"][0].contains("namespace"));
  EXPECT_EQ(reports.at("shop")["kind"], "PolicyReport");
}

TEST(PolicyReports, AHugeNamespaceKeepsItsFindingsAndDropsPasses) {
  std::vector<ObjectAudit> audits;
  for (int i = 0; i < 4000; ++i) audits.push_back(audit("big", "w" + std::to_string(i), {result("a", "pass")}));
  audits.push_back(audit("big", "bad", {result("a", "fail")}));
  const Json report = build_policy_reports(audits).at("big");
  ASSERT_EQ(report["results"].size(), 1u);
  EXPECT_EQ(report["summary"]["fail"], 1);
  EXPECT_EQ(report["summary"]["pass"], 0);
  EXPECT_EQ(report["metadata"]["annotations"]["sizeguard.io/omitted-results"].get<std::string>().substr(0, 12),
            "4000 of 4001");

  // Small enough: everything, no annotation.
  audits.resize(100);
  const Json small = build_policy_reports(audits).at("big");
  EXPECT_EQ(small["results"].size(), 100u);
  EXPECT_FALSE(small["metadata"].contains("annotations"));
}

TEST(PolicyReports, FindingsBeyondTheSizeBoundAreCutAndCounted) {
  std::vector<ObjectAudit> audits;
  for (int i = 0; i < 6000; ++i) {
    AuditResult r = result("a", "fail");
    r.message = std::string(200, 'x');
    audits.push_back(audit("big", "w" + std::to_string(100000 + i), {r}));
  }
  const Json report = build_policy_reports(audits).at("big");
  EXPECT_LT(report.dump().size(), 1024u * 1024 + 4096);  // etcd's limit is 1.5 MiB
  EXPECT_GT(report["results"].size(), 1000u);
  EXPECT_LT(report["results"].size(), 6000u);
  EXPECT_EQ(report["summary"]["fail"], report["results"].size());
  EXPECT_EQ(report["results"][0]["resources"][0]["name"], "w100000");  // the first ones in order stay
  const std::string omitted = report["metadata"]["annotations"]["sizeguard.io/omitted-results"];
  EXPECT_EQ(omitted.substr(0, omitted.find(' ')), std::to_string(6000 - report["results"].size()));
}

}  // namespace
}  // namespace sizeguard
