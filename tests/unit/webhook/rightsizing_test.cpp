// Right-sizing at /mutate on the real apiserver fixtures and on hand-made objects: every
// patch is applied to the object and the result checked, as the apiserver would.
#include "webhook/app/rightsizing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "support/fixtures.h"
#include "webhook/app/handlers.h"
#include "webhook/devcerts.h"

namespace sizeguard {
namespace {

using ::testing::HasSubstr;

PolicySet policy_set(const std::string& rightsizing, const std::string& extra_policies = "") {
  const std::string yaml = "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: rs}\nspec:\n  rightsizing:\n" +
                           rightsizing + extra_policies;
  PolicyLoad load = parse_policies(yaml, "rs.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  PolicySet set;
  set.policies = std::move(load.policies);
  return set;
}

// A snapshot as `sizeguard recommend` writes it.
std::shared_ptr<const RecommendationSnapshot> snapshot(const std::map<std::string, std::pair<std::string, std::string>>& recs) {
  Json json = {{"modelVersion", "xgb-test"}, {"generatedAt", "2026-11-20T00:00:00Z"}, {"recommendations", Json::object()}};
  for (const auto& [key, value] : recs) {
    json["recommendations"][key] = {{"cpu", value.first},
                                    {"memory", value.second},
                                    {"confidence", 0.8},
                                    {"coldStart", false},
                                    {"explanation", {{{"feature", "cpu:cpu_p95_7d"}, {"contribution", 0.42}},
                                                     {{"feature", "cpu:cpu_max_24h"}, {"contribution", -0.1}}}}};
  }
  return std::make_shared<const RecommendationSnapshot>(parse_recommendations(json.dump(), "test"));
}

AdmissionRequest fixture(const std::string& name) {
  auto decoded = decode_admission_review(test::load_apiserver_fixture(name));
  return std::get<AdmissionRequest>(decoded);
}

Json container(const std::string& name, Json resources) {
  return {{"name", name}, {"image", "shop/" + name + ":1"}, {"resources", std::move(resources)}};
}

// Containers as vectors: a braced {container(...)} passed as Json is an array under GCC but
// a copy of the one object under clang.
AdmissionRequest deployment_request(std::vector<Json> containers, std::vector<Json> init_containers = {},
                                    Json annotations = Json::object(), Operation op = Operation::Create) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "u1";
  r.kind = {"apps", "v1", "Deployment"};
  r.resource = {"apps", "v1", "deployments"};
  r.namespace_ = "shop";
  r.name = "web";
  r.operation = op;
  r.object = {{"apiVersion", "apps/v1"},
              {"kind", "Deployment"},
              {"metadata", {{"name", "web"}, {"namespace", "shop"}, {"annotations", annotations}}},
              {"spec", {{"replicas", 3}, {"template", {{"spec", {{"containers", containers}}}}}}}};
  if (!init_containers.empty()) r.object["spec"]["template"]["spec"]["initContainers"] = Json(init_containers);
  if (op == Operation::Update) r.old_object = r.object;
  return r;
}

class Rightsizing : public ::testing::Test {
 protected:
  RightsizingResult run(const AdmissionRequest& r, const PolicySet& set, std::shared_ptr<const RecommendationSnapshot> recs) {
    RightsizingInputs inputs{std::move(recs), nullptr, ""};
    return rightsize(r, set, state_, inputs, EvaluationOptions{Mode::Enforce, {}});
  }
  // The object after the patch, as the apiserver would store it.
  static Json patched(const AdmissionRequest& r, const RightsizingResult& result) { return r.object.patch(result.patch); }

  FileClusterState state_ = FileClusterState(std::vector<Json>{
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "shop"}}}},
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "webhook-test"}}}},
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "quiet"}, {"labels", {{"sizeguard.io/rightsize", "off"}}}}}},
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "watching"}, {"labels", {{"sizeguard.io/rightsize", "audit"}}}}}}});
};

TEST_F(Rightsizing, DeploymentCreateInTemplatesModeFromTheRealFixture) {
  const AdmissionRequest r = fixture("deployment-create.json");
  auto result = run(r, policy_set("    target: templates\n"), snapshot({{"webhook-test/Deployment/demo/app", {"250m", "300Mi"}}}));
  ASSERT_TRUE(result.applies);
  EXPECT_EQ(result.mode, Mode::Enforce);
  const Json after = patched(r, result);
  const Json& resources = after["spec"]["template"]["spec"]["containers"][0]["resources"];
  EXPECT_EQ(resources["requests"]["cpu"], "250m");
  EXPECT_EQ(resources["requests"]["memory"], "300Mi");
  EXPECT_EQ(resources["limits"]["memory"], "300Mi");  // memory default: equalToRequest
  EXPECT_FALSE(resources["limits"].contains("cpu"));  // keepRatio with no limit keeps none
  // Everything else is untouched.
  Json without = after;
  without["spec"]["template"]["spec"]["containers"][0]["resources"] = r.object["spec"]["template"]["spec"]["containers"][0]["resources"];
  without["metadata"]["annotations"].erase(kRightsizedAnnotation);
  if (without["metadata"]["annotations"].empty()) without["metadata"].erase("annotations");
  EXPECT_EQ(without, r.object);

  const Json explanation = Json::parse(after["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>());
  EXPECT_EQ(explanation["model"], "xgb-test");
  EXPECT_EQ(explanation["containers"]["app"]["cpu"]["request"], Json({"", "250m"}));
  EXPECT_EQ(explanation["containers"]["app"]["top"][0]["feature"], "cpu:cpu_p95_7d");
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_EQ(result.warnings[0],
            "sizeguard: container app: cpu request none → 250m; memory request none → 300Mi, limit none → 300Mi "
            "(model xgb-test, confidence 0.80)");
  // In pods mode (the default) the template is left as written.
  EXPECT_FALSE(run(r, policy_set("    target: pods\n"), snapshot({{"webhook-test/Deployment/demo/app", {"250m", "300Mi"}}})).applies);
}

TEST_F(Rightsizing, PodFromTheReplicaSetTakesItsDeploymentsRecommendation) {
  const AdmissionRequest r = fixture("pod-create-from-replicaset.json");
  ASSERT_TRUE(r.name.empty()) << "controllers send only generateName";
  auto result = run(r, policy_set("    target: pods\n"), snapshot({{"webhook-test/Deployment/demo/app", {"120m", "200Mi"}}}));
  ASSERT_TRUE(result.applies);
  EXPECT_EQ(result.workload, "webhook-test/Deployment/demo");
  const Json after = patched(r, result);
  EXPECT_EQ(after["spec"]["containers"][0]["resources"]["requests"]["cpu"], "120m");
  EXPECT_EQ(after["spec"]["containers"][0]["resources"]["requests"]["memory"], "200Mi");
  EXPECT_TRUE(after["metadata"]["annotations"].contains(kRightsizedAnnotation));
}

// Kubernetes rejects objects whose annotations total more than 256 KiB: a Pod with
// thousands of containers must still be admitted, so the explanation is bounded while
// every container is still right-sized.
TEST_F(Rightsizing, ExplanationOfAHugePodStaysWithinTheAnnotationLimit) {
  Json containers = Json::array();
  for (int i = 0; i < 5000; ++i) containers.push_back(container("c" + std::to_string(i), {{"requests", {{"cpu", "2"}}}}));
  const AdmissionRequest r = deployment_request(containers);
  std::map<std::string, std::pair<std::string, std::string>> recs;
  for (int i = 0; i < 5000; ++i) recs["shop/Deployment/web/c" + std::to_string(i)] = {"250m", "300Mi"};
  auto result = run(r, policy_set("    target: templates\n"), snapshot(recs));
  ASSERT_TRUE(result.applies);
  const Json after = patched(r, result);
  for (int i : {0, 2500, 4999}) EXPECT_EQ(after["spec"]["template"]["spec"]["containers"][i]["resources"]["requests"]["cpu"], "250m");
  const std::string annotation = after["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>();
  EXPECT_LT(annotation.size(), 64u * 1024);
  const Json explanation = Json::parse(annotation);
  EXPECT_TRUE(explanation["containers"].contains("c0"));
  ASSERT_TRUE(explanation.contains("omittedContainers"));
  EXPECT_EQ(explanation["containers"].size() + explanation["omittedContainers"].get<size_t>(), 5000u);
}

// Through the handler, a huge Pod's answer and audit line stay bounded: 50 warnings, the
// first 200 changes with the rest counted, and the multi-megabyte patch summarised.
TEST_F(Rightsizing, HugePodGetsBoundedWarningsAndAuditRecord) {
  const auto dir = make_private_temp_directory("sizeguard-rightsizing");
  AuditLog audit((dir / "audit.log").string());
  Json containers = Json::array();
  std::map<std::string, std::pair<std::string, std::string>> recs;
  for (int i = 0; i < 3000; ++i) {
    containers.push_back(container("c" + std::to_string(i), {{"requests", {{"cpu", "2"}, {"memory", "1Gi"}}}}));
    recs["shop/Deployment/web/c" + std::to_string(i)] = {"250m", "300Mi"};
  }
  auto set = std::make_shared<const PolicySet>(policy_set("    target: templates\n"));
  auto snap = snapshot(recs);
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &state_;
  context.rightsizing = [snap] { return RightsizingInputs{snap, nullptr, ""}; };
  context.audit = &audit;

  const AdmissionResponse response = mutate(deployment_request(containers), context);
  ASSERT_FALSE(response.patch.empty());
  EXPECT_GT(response.patch.size(), 6000u) << "the patch itself is whole";
  ASSERT_EQ(response.warnings.size(), 50u);
  EXPECT_THAT(response.warnings[0], HasSubstr("container c0: cpu request 2 → 250m"));
  EXPECT_THAT(response.warnings.back(), HasSubstr("and 2951 more warnings"));

  std::ifstream in(dir / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_LT(line.size(), 128u * 1024);
  const Json rightsizing = Json::parse(line)["rightsizing"];
  ASSERT_EQ(rightsizing["changes"].size(), 200u);
  EXPECT_EQ(rightsizing["changes"][0]["container"], "c0");
  EXPECT_EQ(rightsizing["changes"].size() + rightsizing["omittedChanges"].get<size_t>(), 9000u);  // cpu request, memory request and limit each
  EXPECT_FALSE(rightsizing.contains("patch"));
  EXPECT_EQ(rightsizing["patchOmitted"]["operations"].get<size_t>(), response.patch.size());
  EXPECT_GT(rightsizing["patchOmitted"]["bytes"].get<size_t>(), 64u * 1024);
  std::filesystem::remove_all(dir);
}

TEST_F(Rightsizing, DryRunAndServerSideApplyGetTheSamePatch) {
  const auto set = policy_set("    target: templates\n");
  for (const char* name : {"deployment-create-dryrun.json", "deployment-create-server-side-apply.json"}) {
    const AdmissionRequest r = fixture(name);
    auto result = run(r, set, snapshot({{r.namespace_ + "/Deployment/" + r.name + "/app", {"250m", "300Mi"}}}));
    EXPECT_FALSE(result.cold_start) << name;
    ASSERT_TRUE(result.applies) << name;
    const Json after = patched(r, result);
    for (const auto& c : after["spec"]["template"]["spec"]["containers"]) {
      if (c["name"] != "app") continue;
      EXPECT_EQ(c["resources"]["requests"]["cpu"], "250m") << name;
    }
  }
}

TEST_F(Rightsizing, RunningOnItsOwnOutputChangesNothing) {
  const AdmissionRequest r = fixture("deployment-create.json");
  const auto recs = snapshot({{"webhook-test/Deployment/demo/app", {"250m", "300Mi"}}});
  const auto set = policy_set("    target: templates\n");
  auto first = run(r, set, recs);
  AdmissionRequest again = r;
  again.object = patched(r, first);
  auto second = run(again, set, recs);
  EXPECT_TRUE(second.changes.empty());
  EXPECT_TRUE(second.patch.empty()) << second.patch.dump();
}

struct LimitCase {
  std::string strategy;     // YAML for limits.cpu
  Json before;              // container resources
  Json expected_limits;     // after
};

class RightsizingLimits : public Rightsizing, public ::testing::WithParamInterface<LimitCase> {};

TEST_P(RightsizingLimits, EachStrategy) {
  const auto& c = GetParam();
  auto set = policy_set("    target: templates\n    minChangePercent: 0\n    limits:\n      cpu: " + c.strategy + "\n      memory: unchanged\n");
  auto r = deployment_request({container("web", c.before)});
  auto result = run(r, set, snapshot({{"shop/Deployment/web/web", {"500m", "256Mi"}}}));
  const Json after = patched(r, result);
  const Json& resources = after["spec"]["template"]["spec"]["containers"][0]["resources"];
  EXPECT_EQ(resources["requests"]["cpu"], "500m");
  EXPECT_EQ(resources.value("limits", Json::object()), c.expected_limits) << c.strategy;
}

INSTANTIATE_TEST_SUITE_P(Strategies, RightsizingLimits, ::testing::Values(
    // keepRatio: 1 -> 2 was 1:2, so 500m -> 1.
    LimitCase{"keepRatio", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"cpu", "1"}, {"memory", "1Gi"}}},
    LimitCase{"{ratio: 3}", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"cpu", "1500m"}, {"memory", "1Gi"}}},
    LimitCase{"equalToRequest", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"cpu", "500m"}, {"memory", "1Gi"}}},
    LimitCase{"none", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"memory", "1Gi"}}},
    LimitCase{"unchanged", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"cpu", "2"}, {"memory", "1Gi"}}},
    // Never a limit below the request: an unchanged 200m limit is raised to 500m.
    LimitCase{"unchanged", {{"requests", {{"cpu", "100m"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "200m"}, {"memory", "1Gi"}}}},
              {{"cpu", "500m"}, {"memory", "1Gi"}}}));

TEST_F(Rightsizing, SmallChangesAreSkipped) {
  auto set = policy_set("    target: templates\n    minChangePercent: 10\n");
  auto r = deployment_request({container("web", {{"requests", {{"cpu", "480m"}, {"memory", "256Mi"}}}})});
  // cpu 480m -> 500m is 4%: skipped; memory 256Mi -> 512Mi: changed.
  auto result = run(r, set, snapshot({{"shop/Deployment/web/web", {"500m", "512Mi"}}}));
  ASSERT_EQ(result.changes.size(), 2u);  // memory request and its equal limit
  EXPECT_EQ(result.changes[0].resource, "memory");
}

TEST_F(Rightsizing, ClampsAndSaysSo) {
  // Halving at most; and a validating policy caps memory at 1Gi: the recommendation is
  // clamped so /validate will accept what /mutate produced.
  auto set = policy_set("    target: templates\n    maxDecreasePercent: 50\n",
                        "---\napiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: caps}\nspec:\n  resources:\n    max: {memory: 1Gi}\n");
  auto r = deployment_request({container("web", {{"requests", {{"cpu", "2"}, {"memory", "512Mi"}}}})});
  auto result = run(r, set, snapshot({{"shop/Deployment/web/web", {"100m", "4Gi"}}}));
  const Json after = patched(r, result);
  const Json& requests = after["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"];
  EXPECT_EQ(requests["cpu"], "1");
  EXPECT_EQ(requests["memory"], "1Gi");
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_THAT(result.warnings[0], HasSubstr("cpu request 2 → 1 (clamped to maxDecreasePercent 50)"));
  EXPECT_THAT(result.warnings[0], HasSubstr("memory request 512Mi → 1Gi, limit none → 1Gi (clamped to the maximum of policy caps)"));
}

TEST_F(Rightsizing, InitContainersSidecarsAndBareContainers) {
  Json sidecar = container("proxy", Json::object());
  sidecar["restartPolicy"] = "Always";
  auto r = deployment_request({container("web", Json::object())}, {container("migrate", Json::object()), sidecar});
  auto set = policy_set("    target: templates\n");
  auto result = run(r, set, snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}},
                                      {"shop/Deployment/web/migrate", {"50m", "64Mi"}},
                                      {"shop/Deployment/web/proxy", {"20m", "32Mi"}}}));
  const Json after = patched(r, result);
  const Json& spec = after["spec"]["template"]["spec"];
  EXPECT_EQ(spec["initContainers"][0]["resources"]["requests"]["cpu"], "50m");
  EXPECT_EQ(spec["initContainers"][1]["resources"]["requests"]["memory"], "32Mi");
  EXPECT_EQ(spec["containers"][0]["resources"]["requests"]["cpu"], "300m");
  // A container with no "resources" key at all gets one.
  Json no_key = container("web", Json::object());
  no_key.erase("resources");
  auto bare = deployment_request({no_key});
  auto bare_result = run(bare, set, snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}}}));
  EXPECT_EQ(patched(bare, bare_result)["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "300m");
}

TEST_F(Rightsizing, GpusAreNeverTouched) {
  auto r = deployment_request({container("train", {{"requests", {{"cpu", "4"}, {"nvidia.com/gpu", "2"}}},
                                                   {"limits", {{"nvidia.com/gpu", "2"}}}})});
  auto result = run(r, policy_set("    target: templates\n"), snapshot({{"shop/Deployment/web/train", {"2", "8Gi"}}}));
  const Json after = patched(r, result);
  const Json& resources = after["spec"]["template"]["spec"]["containers"][0]["resources"];
  EXPECT_EQ(resources["requests"]["nvidia.com/gpu"], "2");
  EXPECT_EQ(resources["limits"]["nvidia.com/gpu"], "2");
  EXPECT_EQ(resources["requests"]["cpu"], "2");
  for (const auto& op : result.patch) EXPECT_EQ(op["path"].get<std::string>().find("nvidia.com"), std::string::npos);
}

TEST_F(Rightsizing, OptOutsAndModesPerWorkloadAndNamespace) {
  const auto recs = snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}}});
  const auto set = policy_set("    target: templates\n");
  EXPECT_FALSE(run(deployment_request({container("web", Json::object())}, {}, {{"sizeguard.io/rightsize", "off"}}), set, recs).applies);
  auto audit = run(deployment_request({container("web", Json::object())}, {}, {{"sizeguard.io/rightsize", "audit"}}), set, recs);
  ASSERT_TRUE(audit.applies);
  EXPECT_EQ(audit.mode, Mode::Audit);
  EXPECT_THAT(audit.warnings.at(0), HasSubstr("[audit, not applied] container web"));
  auto in_quiet = deployment_request({container("web", Json::object())});
  in_quiet.namespace_ = "quiet";
  EXPECT_FALSE(run(in_quiet, set, snapshot({{"quiet/Deployment/web/web", {"300m", "256Mi"}}})).applies);
  auto in_watching = deployment_request({container("web", Json::object())});
  in_watching.namespace_ = "watching";
  EXPECT_EQ(run(in_watching, set, snapshot({{"watching/Deployment/web/web", {"300m", "256Mi"}}})).mode, Mode::Audit);
  // The workload annotation wins over the namespace label.
  auto forced = deployment_request({container("web", Json::object())}, {}, {{"sizeguard.io/rightsize", "enforce"}});
  forced.namespace_ = "watching";
  EXPECT_EQ(run(forced, set, snapshot({{"watching/Deployment/web/web", {"300m", "256Mi"}}})).mode, Mode::Enforce);
}

TEST_F(Rightsizing, AuditModeThroughTheHandlerChangesNothingAndReportsEverything) {
  const auto dir = make_private_temp_directory("sizeguard-rightsizing");
  Metrics metrics;
  describe_handler_metrics(metrics);
  AuditLog audit((dir / "audit.log").string());
  RecommendationReport report(metrics);
  auto set = std::make_shared<const PolicySet>(policy_set("    target: templates\n    mode: audit\n"));
  auto recs = snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}}});
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &state_;
  context.rightsizing = [recs] { return RightsizingInputs{recs, nullptr, ""}; };
  context.report = &report;
  context.metrics = &metrics;
  context.audit = &audit;

  const AdmissionRequest r = deployment_request({container("web", {{"requests", {{"cpu", "2"}, {"memory", "1Gi"}}}})});
  AdmissionResponse response = mutate(r, context);
  EXPECT_TRUE(response.allowed);
  EXPECT_TRUE(response.patch.is_null() || response.patch.empty()) << "audit mode must not patch";
  ASSERT_FALSE(response.warnings.empty());
  EXPECT_THAT(response.warnings[0], HasSubstr("[audit, not applied] container web: cpu request 2 → 300m"));

  std::ifstream in(dir / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const Json record = Json::parse(line);
  EXPECT_EQ(record["webhook"], "mutate");
  EXPECT_EQ(record["rightsizing"]["mode"], "audit");
  ASSERT_TRUE(record["rightsizing"]["wouldPatch"].is_array());
  EXPECT_FALSE(record["rightsizing"]["wouldPatch"].empty());

  const Json table = report.table();
  ASSERT_EQ(table["workloads"].size(), 1u);
  EXPECT_DOUBLE_EQ(table["workloads"][0]["cpuCores"]["current"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(table["workloads"][0]["cpuCores"]["recommended"].get<double>(), 0.3);
  const std::string rendered = metrics.render();
  EXPECT_THAT(rendered, HasSubstr("sizeguard_recommendation_cpu_cores{namespace=\"shop\",value=\"current\"} 6"));
  EXPECT_THAT(rendered, HasSubstr("sizeguard_recommendation_cpu_cores{namespace=\"shop\",value=\"recommended\"} 0.9"));
  EXPECT_THAT(rendered, HasSubstr("sizeguard_rightsizing_total{mode=\"audit\",result=\"reported\"} 1"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sizeguard
