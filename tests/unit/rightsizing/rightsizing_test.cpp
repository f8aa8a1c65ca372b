// Right-sizing at /mutate on the real apiserver fixtures and on hand-made objects: every
// patch is applied to the object and the result checked, as the apiserver would.
#include "rightsizing/rightsizing.h"

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
#include "kube/workload.h"

namespace sizeguard {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

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

// A snapshot whose entries carry extra fields (memoryPeak, oomKilled, coldStart).
std::shared_ptr<const RecommendationSnapshot> snapshot_with(const Json& entries) {
  Json json = {{"modelVersion", "xgb-test"}, {"generatedAt", "2026-11-20T00:00:00Z"}, {"recommendations", Json::object()}};
  for (const auto& [key, value] : entries.items()) {
    Json entry = {{"confidence", 0.8}, {"coldStart", false}};
    entry.update(value);
    json["recommendations"][key] = entry;
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
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "capture"}}}},
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "capture-reinvoke"}}}},
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
  // Memory default: the limit stays as written (none); CPU keepRatio with no limit keeps none.
  EXPECT_FALSE(resources.contains("limits"));
  // Everything else is untouched.
  Json without = after;
  without["spec"]["template"]["spec"]["containers"][0]["resources"] = r.object["spec"]["template"]["spec"]["containers"][0]["resources"];
  without["metadata"]["annotations"].erase(kRightsizedAnnotation);
  if (without["metadata"]["annotations"].empty()) without["metadata"].erase("annotations");
  // The record is on the template too, so Pods made from it are recognised.
  EXPECT_EQ(without["spec"]["template"]["metadata"]["annotations"][kRightsizedAnnotation], after["metadata"]["annotations"][kRightsizedAnnotation]);
  without["spec"]["template"]["metadata"].erase("annotations");
  EXPECT_EQ(without, r.object);

  const Json explanation = Json::parse(after["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>());
  EXPECT_EQ(explanation["model"], "xgb-test");
  EXPECT_EQ(explanation["containers"]["app"]["cpu"]["request"], Json({"", "250m"}));
  EXPECT_EQ(explanation["containers"]["app"]["top"][0]["feature"], "cpu:cpu_p95_7d");
  ASSERT_EQ(result.warnings.size(), 1u);
  EXPECT_EQ(result.warnings[0],
            "sizeguard: container app: cpu request none → 250m; memory request none → 300Mi "
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
// thousands of containers must still be admitted, so the explanation is bounded. A change
// the annotation cannot record would be cut again on reinvocation, so containers past the
// budget are left as written and counted.
TEST_F(Rightsizing, ExplanationOfAHugePodStaysWithinTheAnnotationLimit) {
  Json containers = Json::array();
  for (int i = 0; i < 5000; ++i) containers.push_back(container("c" + std::to_string(i), {{"requests", {{"cpu", "2"}}}}));
  const AdmissionRequest r = deployment_request(containers);
  std::map<std::string, std::pair<std::string, std::string>> recs;
  for (int i = 0; i < 5000; ++i) recs["shop/Deployment/web/c" + std::to_string(i)] = {"250m", "300Mi"};
  auto result = run(r, policy_set("    target: templates\n"), snapshot(recs));
  ASSERT_TRUE(result.applies);
  const Json after = patched(r, result);
  EXPECT_EQ(after["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "250m");
  EXPECT_EQ(after["spec"]["template"]["spec"]["containers"][4999]["resources"]["requests"]["cpu"], "2");
  const std::string annotation = after["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>();
  EXPECT_LT(annotation.size(), 64u * 1024);
  const Json explanation = Json::parse(annotation);
  EXPECT_TRUE(explanation["containers"].contains("c0"));
  ASSERT_TRUE(explanation.contains("omittedContainers"));
  EXPECT_EQ(explanation["containers"].size() + explanation["omittedContainers"].get<size_t>(), 5000u);
  size_t changed = 0;
  for (const auto& c : after["spec"]["template"]["spec"]["containers"]) changed += c["resources"]["requests"]["cpu"] == "250m";
  EXPECT_EQ(changed, explanation["containers"].size());
  // Run again on its own output: what sizeguard wrote is never cut again (containers left
  // out the first time may be sized now, once).
  AdmissionRequest again = r;
  again.object = after;
  // (The memory requests were absent: their `before` is empty, never dereferenced.)
  for (const auto& change : run(again, policy_set("    target: templates\n"), snapshot(recs)).changes) {
    if (change.resource == "memory") {
      EXPECT_FALSE(change.before) << change.container;
      continue;
    }
    ASSERT_TRUE(change.before) << change.container;
    EXPECT_EQ(change.before->to_string(), "2") << change.container;
  }
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

  const AdmissionRequest request = deployment_request(containers);
  const RightsizingResult direct = run(request, *set, snap);
  const size_t changed = direct.changes.size() / 2;  // cpu and memory request each
  ASSERT_GT(changed, 100u);
  const AdmissionResponse response = mutate(request, context);
  ASSERT_FALSE(response.patch.empty());
  EXPECT_GT(response.patch.size(), 2 * changed) << "the patch itself is whole";
  ASSERT_EQ(response.warnings.size(), 50u);
  EXPECT_THAT(response.warnings[0], HasSubstr("container c0: cpu request 2 → 250m"));
  // One warning per changed container and one saying how many were left out.
  EXPECT_THAT(response.warnings.back(), HasSubstr("and " + std::to_string(changed + 1 - 49) + " more warnings"));

  std::ifstream in(dir / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_LT(line.size(), 128u * 1024);
  const Json rightsizing = Json::parse(line)["rightsizing"];
  ASSERT_EQ(rightsizing["changes"].size(), 200u);
  EXPECT_EQ(rightsizing["changes"][0]["container"], "c0");
  EXPECT_EQ(rightsizing["changes"].size() + rightsizing["omittedChanges"].get<size_t>(), 2 * changed);
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
    // equalToRequest would cut the limit 2 -> 500m (75%) while the request loses 50%: a
    // limit is never cut by more than its request, so 1.
    LimitCase{"equalToRequest", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}},
              {{"cpu", "1"}, {"memory", "1Gi"}}},
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
  ASSERT_EQ(result.changes.size(), 1u);  // the memory request
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
  EXPECT_THAT(result.warnings[0], HasSubstr("memory request 512Mi → 1Gi (clamped to the maximum of policy caps)"));
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

// A Pod a controller made: the apiserver would hand the per-container warning to the
// controller, which only logs it; it stays in the annotation and the audit line. A Pod
// created directly (kubectl run) keeps its warning.
TEST_F(Rightsizing, ControllerMadePodsGetNoPerContainerWarning) {
  const auto dir = make_private_temp_directory("sizeguard-rightsizing");
  AuditLog audit((dir / "audit.log").string());
  auto set = std::make_shared<const PolicySet>(policy_set("    target: pods\n"));
  auto recs = snapshot({{"webhook-test/Deployment/demo/app", {"120m", "200Mi"}},
                        {"webhook-test/Pod/user-pod/user-pod", {"120m", "200Mi"}}});
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &state_;
  context.rightsizing = [recs] { return RightsizingInputs{recs, nullptr, ""}; };
  context.audit = &audit;

  const AdmissionResponse owned = mutate(fixture("pod-create-from-replicaset.json"), context);
  ASSERT_FALSE(owned.patch.is_null() || owned.patch.empty()) << "the Pod is still right-sized";
  EXPECT_TRUE(owned.warnings.empty()) << ::testing::PrintToString(owned.warnings);
  std::ifstream in(dir / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const Json record = Json::parse(line);
  ASSERT_EQ(record["warnings"].size(), 1u) << line;
  EXPECT_THAT(record["warnings"][0].get<std::string>(), HasSubstr("container app: cpu request"));

  const AdmissionResponse direct = mutate(fixture("pod-create-kubectl-run.json"), context);
  ASSERT_FALSE(direct.patch.is_null() || direct.patch.empty());
  ASSERT_EQ(direct.warnings.size(), 1u) << ::testing::PrintToString(direct.warnings);
  EXPECT_THAT(direct.warnings[0], HasSubstr("container user-pod: cpu request"));
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


// --- Right-sizing that cannot hurt a workload (issue #15) ------------------------------

AdmissionRequest pod_request(std::vector<Json> containers, Json pod_resources = nullptr) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "p1";
  r.kind = {"", "v1", "Pod"};
  r.resource = {"", "v1", "pods"};
  r.namespace_ = "shop";
  r.name = "web";
  r.operation = Operation::Create;
  r.object = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", "web"}, {"namespace", "shop"}}},
              {"spec", {{"containers", containers}}}};
  if (!pod_resources.is_null()) r.object["spec"]["resources"] = std::move(pod_resources);
  return r;
}

const Json& resources_of(const Json& object, size_t i = 0) {
  const Json& spec = object.contains("spec") && object["spec"].contains("template") ? object["spec"]["template"]["spec"] : object["spec"];
  return spec["containers"][i]["resources"];
}

// The apiserver's rules for the fields right-sizing writes, checked on the object before
// and after: requests within limits, containers within pod-level resources, Guaranteed
// stays Guaranteed, whole CPUs stay whole there. Returns what is broken.
std::vector<std::string> apiserver_violations(const Json& pod_spec_before, const Json& pod_spec_after) {
  std::vector<std::string> out;
  auto q = [](const Json& resources, const char* field, const char* name) { return resource_quantity(resources, field, name); };
  auto each = [](const Json& spec, auto&& f) {
    for (const char* list : {"initContainers", "containers"}) {
      for (const auto& c : spec.value(list, Json::array())) f(c, std::string(list) == "initContainers" && c.value("restartPolicy", "") != "Always");
    }
  };
  auto qos_guaranteed = [&](const Json& spec) {
    bool all = true;
    each(spec, [&](const Json& c, bool) {
      const Json& r = c.value("resources", Json::object());
      for (const char* name : {"cpu", "memory"}) {
        auto lim = q(r, "limits", name), req = q(r, "requests", name);
        if (!lim || (req && *req != *lim)) all = false;
      }
    });
    return all;
  };
  const Json& pod = pod_spec_after.value("resources", Json::object());
  for (const char* name : {"cpu", "memory"}) {
    int64_t sum = 0;
    each(pod_spec_after, [&](const Json& c, bool init) {
      const Json& r = c.value("resources", Json::object());
      auto lim = q(r, "limits", name), req = q(r, "requests", name);
      if (req && lim && *req > *lim) out.push_back(c["name"].get<std::string>() + ": " + name + " request above limit");
      if (auto pl = q(pod, "limits", name); pl && lim && *lim > *pl) out.push_back(c["name"].get<std::string>() + ": limit above pod-level");
      if (!req) req = lim;
      if (req && !init) sum += req->milli_value();
    });
    if (auto pr = q(pod, "requests", name); pr && sum > pr->milli_value()) out.push_back(std::string(name) + ": sum above pod-level request");
  }
  if (qos_guaranteed(pod_spec_before)) {
    if (!qos_guaranteed(pod_spec_after)) out.push_back("Guaranteed lost");
    std::vector<int64_t> before, after;
    each(pod_spec_before, [&](const Json& c, bool) { before.push_back(q(c.value("resources", Json::object()), "limits", "cpu")->milli_value()); });
    each(pod_spec_after, [&](const Json& c, bool) {
      auto l = q(c.value("resources", Json::object()), "limits", "cpu");
      after.push_back(l ? l->milli_value() : -1);
    });
    for (size_t i = 0; i < before.size() && i < after.size(); ++i) {
      if (before[i] % 1000 == 0 && after[i] % 1000 != 0) out.push_back("integer CPU lost");
    }
  }
  return out;
}

Json pod_spec_of(const Json& object, const AdmissionRequest& r) {
  return object.at(Json::json_pointer(*pod_spec_pointer(workload_kind_from(r.kind.kind))));
}

// The issue's reinvocation: `kubectl run` cpu 2 / memory 2Gi, right-sized in the first call,
// then the same CREATE again (another webhook changed a label in between). The second call
// sees sizeguard's own values and must leave them: one bounded cut per admission.
TEST_F(Rightsizing, ReinvocationWithTheRealFixturesCutsOnce) {
  const auto set = policy_set("    target: pods\n    maxDecreasePercent: 50\n    min: {cpu: 10m, memory: 32Mi}\n");
  const auto recs = snapshot({{"capture-reinvoke/Pod/reinvoked/app", {"250m", "256Mi"}}});
  const AdmissionRequest first = fixture("pod-create-reinvocation-call-1.json");
  auto one = run(first, set, recs);
  const Json after_one = patched(first, one);
  EXPECT_EQ(resources_of(after_one)["requests"]["cpu"], "1");
  EXPECT_EQ(resources_of(after_one)["requests"]["memory"], "1Gi");
  EXPECT_EQ(resources_of(after_one)["limits"]["memory"], "2Gi") << "no peak in the snapshot: the memory limit stays";

  AdmissionRequest second = fixture("pod-create-reinvocation-call-2.json");
  ASSERT_NE(second.uid, first.uid) << "each call is its own AdmissionReview";
  second.object = second.object.patch(one.patch);  // what the apiserver sends on reinvocation
  auto two = run(second, set, recs);
  EXPECT_TRUE(two.patch.empty()) << two.patch.dump();
  EXPECT_TRUE(two.changes.empty());

  // Another webhook between the calls set a cpu limit: the request is still sizeguard's, so
  // its original stays the bound and nothing is cut again.
  AdmissionRequest limited = second;
  limited.object["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1";
  for (const auto& change : run(limited, set, recs).changes) EXPECT_NE(change.field, "request") << change.resource;

  // A third pass (re-creating the Pod from its own YAML) changes nothing either.
  AdmissionRequest again = second;
  again.object = patched(second, two);
  EXPECT_TRUE(run(again, set, recs).patch.empty());

  // The record says what the values were and what was applied.
  const Json record = Json::parse(after_one["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>());
  EXPECT_EQ(record["containers"]["app"]["cpu"]["request"], Json({"2", "1"}));
  EXPECT_EQ(record["containers"]["app"]["cpu"]["recommended"], "250m");
  EXPECT_FALSE(record["containers"]["app"]["memory"].contains("limit")) << "an unchanged limit is not recorded";
}

TEST_F(Rightsizing, ReinvocationWithoutHistoryNeverCuts) {
  const auto set = policy_set("    target: pods\n    maxDecreasePercent: 50\n");
  const auto empty = snapshot({});
  const AdmissionRequest first = fixture("pod-create-reinvocation-call-1.json");
  auto one = run(first, set, empty);
  EXPECT_TRUE(one.cold_start);
  EXPECT_TRUE(one.patch.empty()) << one.patch.dump();
  AdmissionRequest second = fixture("pod-create-reinvocation-call-2.json");
  EXPECT_TRUE(run(second, set, empty).patch.empty());
}

// The issue's frontend: four ordinary UPDATEs took 100m/100Mi to 10m/32Mi. Now the first
// admission cuts within the bounds and every later one recognises the values.
TEST_F(Rightsizing, RepeatedUpdatesDoNotRatchet) {
  const auto set = policy_set("    target: templates\n    maxDecreasePercent: 50\n    min: {cpu: 10m, memory: 32Mi}\n");
  const auto recs = snapshot({{"shop/Deployment/web/frontend", {"10m", "32Mi"}}});
  AdmissionRequest r = deployment_request({container("frontend", {{"requests", {{"cpu", "100m"}, {"memory", "100Mi"}}}})}, {},
                                          Json::object(), Operation::Update);
  auto first = run(r, set, recs);
  r.object = patched(r, first);
  EXPECT_EQ(resources_of(r.object)["requests"]["cpu"], "50m");
  EXPECT_EQ(resources_of(r.object)["requests"]["memory"], "50Mi");
  for (int i = 0; i < 4; ++i) {
    r.old_object = r.object;
    auto next = run(r, set, recs);
    EXPECT_TRUE(next.patch.empty()) << "update " << i << ": " << next.patch.dump();
  }
  // Without history the same updates change nothing at all.
  AdmissionRequest cold = deployment_request({container("frontend", {{"requests", {{"cpu", "100m"}, {"memory", "100Mi"}}}})}, {},
                                             Json::object(), Operation::Update);
  EXPECT_TRUE(run(cold, set, snapshot({})).patch.empty());
}

// A user who really changes the values starts a new line: the bounds hold against theirs.
TEST_F(Rightsizing, AUsersNewValuesAreTheNewOriginal) {
  const auto set = policy_set("    target: templates\n    maxDecreasePercent: 50\n");
  const auto recs = snapshot({{"shop/Deployment/web/web", {"100m", "256Mi"}}});
  AdmissionRequest r = deployment_request({container("web", {{"requests", {{"cpu", "1"}, {"memory", "256Mi"}}}})});
  r.object = patched(r, run(r, set, recs));
  EXPECT_EQ(resources_of(r.object)["requests"]["cpu"], "500m");
  r.object["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "4";
  auto result = run(r, set, recs);
  EXPECT_EQ(resources_of(patched(r, result))["requests"]["cpu"], "2");
  const Json record = Json::parse(patched(r, result)["metadata"]["annotations"][kRightsizedAnnotation].get<std::string>());
  EXPECT_EQ(record["containers"]["web"]["cpu"]["request"], Json({"4", "2"}));
}

// target both: a Pod made from a right-sized template carries the record and is not cut
// a second time.
TEST_F(Rightsizing, PodFromARightsizedTemplateIsNotCutAgain) {
  const auto set = policy_set("    target: both\n    maxDecreasePercent: 50\n");
  const auto recs = snapshot({{"shop/Deployment/web/web", {"100m", "64Mi"}}});
  const AdmissionRequest d = deployment_request({container("web", {{"requests", {{"cpu", "2"}, {"memory", "1Gi"}}}})});
  const Json deployment = patched(d, run(d, set, recs));
  EXPECT_EQ(resources_of(deployment)["requests"]["cpu"], "1");
  AdmissionRequest pod = pod_request({});
  pod.name = "";
  pod.object["metadata"] = deployment["spec"]["template"].value("metadata", Json::object());
  pod.object["metadata"]["generateName"] = "web-5d9f4db5b9-";
  pod.object["metadata"]["namespace"] = "shop";
  pod.object["metadata"]["labels"] = {{"pod-template-hash", "5d9f4db5b9"}};
  pod.object["metadata"]["ownerReferences"] = {{{"kind", "ReplicaSet"}, {"name", "web-5d9f4db5b9"}, {"controller", true}}};
  pod.object["spec"] = deployment["spec"]["template"]["spec"];
  auto result = run(pod, set, recs);
  EXPECT_EQ(result.workload, "shop/Deployment/web");
  EXPECT_TRUE(result.patch.empty()) << result.patch.dump();
}

// The GPU model server of the issue: no cpu/memory spec, no history. It got limits.memory
// 282Mi; now it is left alone, and other containers only get missing requests filled.
TEST_F(Rightsizing, ColdStartNeverCutsNorAddsLimits) {
  const auto set = policy_set("    target: pods\n");
  const auto empty = snapshot({});
  auto gpu = pod_request({container("server", {{"limits", {{"nvidia.com/gpu", "1"}}}})});
  auto gpu_result = run(gpu, set, empty);
  EXPECT_TRUE(gpu_result.patch.empty()) << gpu_result.patch.dump();
  EXPECT_THAT(::testing::PrintToString(gpu_result.notes), HasSubstr("coldStart.accelerators"));
  // Opting in fills the requests, still without a limit.
  auto opted = run(gpu, policy_set("    target: pods\n    coldStart: {accelerators: true}\n"), empty);
  const Json opted_resources = resources_of(patched(gpu, opted));
  EXPECT_TRUE(opted_resources["requests"].contains("memory"));
  EXPECT_FALSE(opted_resources["limits"].contains("memory"));

  auto mixed = pod_request({container("web", {{"requests", {{"cpu", "2"}}}, {"limits", {{"memory", "1Gi"}}}}),
                            container("bare", Json::object())});
  auto result = run(mixed, set, empty);
  EXPECT_TRUE(result.cold_start);
  const Json after = patched(mixed, result);
  EXPECT_EQ(resources_of(after, 0), mixed.object["spec"]["containers"][0]["resources"]) << "existing values are never lowered";
  EXPECT_TRUE(resources_of(after, 1)["requests"].contains("cpu")) << "a missing request is filled";
  EXPECT_FALSE(resources_of(after, 1).contains("limits")) << "no limit is invented";
  EXPECT_THAT(result.warnings.at(0), HasSubstr("cold start"));
  // A snapshot entry marked coldStart is a guess too.
  auto guessed = run(mixed, set, snapshot_with({{"shop/Pod/web/web", {{"cpu", "100m"}, {"memory", "64Mi"}, {"coldStart", true}}}}));
  EXPECT_EQ(resources_of(patched(mixed, guessed), 0), mixed.object["spec"]["containers"][0]["resources"]);
}

// The issue's memory limit 1000Mi → 65Mi: limits have their own bounds.
TEST_F(Rightsizing, LimitsAreNeverCutMoreThanTheirRequest) {
  const auto keep = policy_set("    target: pods\n    maxDecreasePercent: 50\n    limits: {cpu: equalToRequest, memory: equalToRequest}\n");
  auto r = pod_request({container("web", {{"requests", {{"cpu", "1"}, {"memory", "100Mi"}}}, {"limits", {{"cpu", "4"}, {"memory", "1000Mi"}}}})});
  // No peak in the snapshot: the memory limit stays as written.
  auto no_peak = patched(r, run(r, keep, snapshot({{"shop/Pod/web/web", {"100m", "65Mi"}}})));
  EXPECT_EQ(resources_of(no_peak)["requests"]["cpu"], "500m");
  EXPECT_EQ(resources_of(no_peak)["limits"]["cpu"], "2") << "cut by at most maxDecreasePercent";
  EXPECT_EQ(resources_of(no_peak)["requests"]["memory"], "65Mi");
  EXPECT_EQ(resources_of(no_peak)["limits"]["memory"], "1000Mi");
  // With a peak the limit may come down, to the peak-based bound and no more than the request's cut.
  auto peak = patched(r, run(r, keep, snapshot_with({{"shop/Pod/web/web", {{"cpu", "100m"}, {"memory", "65Mi"}, {"memoryPeak", "60Mi"}}}})));
  EXPECT_EQ(resources_of(peak)["requests"]["memory"], "65Mi");
  EXPECT_EQ(resources_of(peak)["limits"]["memory"], "650Mi") << "1000Mi x (65/100): the request's own cut";
  // The default for memory is no longer equalToRequest: the limit stays.
  auto defaults = patched(r, run(r, policy_set("    target: pods\n"), snapshot({{"shop/Pod/web/web", {"1", "65Mi"}}})));
  EXPECT_EQ(resources_of(defaults)["limits"]["memory"], "1000Mi");
}

TEST_F(Rightsizing, IntegerCpuGuaranteedPodsStayThatWay) {
  const auto set = policy_set("    target: pods\n    maxDecreasePercent: 50\n");
  auto one_cpu = pod_request({container("worker", {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}, {"limits", {{"cpu", "1"}, {"memory", "1Gi"}}}})});
  auto result = run(one_cpu, set, snapshot({{"shop/Pod/web/worker", {"300m", "200Mi"}}}));
  EXPECT_TRUE(result.patch.empty()) << "1 CPU stays 1 CPU, memory has no peak: " << result.patch.dump();
  auto four = pod_request({container("worker", {{"requests", {{"cpu", "4"}, {"memory", "1Gi"}}}, {"limits", {{"cpu", "4"}, {"memory", "1Gi"}}}})});
  auto recs = snapshot_with({{"shop/Pod/web/worker", {{"cpu", "300m"}, {"memory", "200Mi"}, {"memoryPeak", "400Mi"}}}});
  const Json after = patched(four, run(four, set, recs));
  EXPECT_EQ(resources_of(after)["requests"]["cpu"], "2");
  EXPECT_EQ(resources_of(after)["limits"]["cpu"], "2");
  EXPECT_EQ(resources_of(after)["requests"]["memory"], "512Mi");
  EXPECT_EQ(resources_of(after)["limits"]["memory"], "512Mi");
  EXPECT_TRUE(apiserver_violations(pod_spec_of(four.object, four), pod_spec_of(after, four)).empty());
}

TEST_F(Rightsizing, MemoryIsNeverCutBelowTheRecentPeakNorAfterAnOomKill) {
  const auto set = policy_set("    target: pods\n");
  auto r = pod_request({container("web", {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}})});
  auto peak = patched(r, run(r, set, snapshot_with({{"shop/Pod/web/web", {{"cpu", "1"}, {"memory", "200Mi"}, {"memoryPeak", "700Mi"}}}})));
  EXPECT_EQ(resources_of(peak)["requests"]["memory"], "700Mi");
  auto oom = run(r, set, snapshot_with({{"shop/Pod/web/web", {{"cpu", "1"}, {"memory", "200Mi"}, {"oomKilled", true}}}}));
  EXPECT_EQ(resources_of(patched(r, oom))["requests"]["memory"], "1229Mi") << "1Gi x 1.2, rounded up";
  EXPECT_THAT(oom.warnings.at(0), HasSubstr("OOM"));
}

// Kubernetes 1.34 pod-level resources: containers must fit inside them.
TEST_F(Rightsizing, PodLevelResourcesAreRespected) {
  const auto set = policy_set("    target: pods\n");
  const Json pod_level = {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}, {"limits", {{"cpu", "1"}, {"memory", "1Gi"}}}};
  auto r = pod_request({container("a", {{"requests", {{"cpu", "400m"}}}}), container("b", {{"requests", {{"cpu", "400m"}}}})}, pod_level);
  // Raising both to 600m would add up to more than the pod's 1 CPU: left alone, and said.
  auto up = run(r, set, snapshot({{"shop/Pod/web/a", {"600m", "64Mi"}}, {"shop/Pod/web/b", {"600m", "64Mi"}}}));
  EXPECT_TRUE(up.patch.empty()) << up.patch.dump();
  ASSERT_EQ(up.warnings.size(), 1u);
  EXPECT_THAT(up.warnings[0], HasSubstr("pod-level request 1"));
  // Cuts fit and are made.
  auto down = run(r, set, snapshot({{"shop/Pod/web/a", {"200m", "64Mi"}}, {"shop/Pod/web/b", {"200m", "64Mi"}}}));
  const Json after = patched(r, down);
  EXPECT_EQ(resources_of(after, 0)["requests"]["cpu"], "200m");
  EXPECT_TRUE(apiserver_violations(r.object["spec"], after["spec"]).empty());
  // Without history nothing is filled next to pod-level resources.
  EXPECT_TRUE(run(pod_request({container("a", Json::object())}, pod_level), set, snapshot({})).patch.empty());
}

TEST_F(Rightsizing, ImmutableFieldsAreNeverPatched) {
  const auto set = policy_set("    target: both\n");
  const AdmissionRequest job = fixture("job-update-kubectl-label.json");
  ASSERT_EQ(job.operation, Operation::Update);
  auto result = run(job, set, snapshot({{"capture/Job/batch-once/" + job.object["spec"]["template"]["spec"]["containers"][0]["name"].get<std::string>(),
                                         {"100m", "256Mi"}}}));
  EXPECT_TRUE(result.patch.empty()) << "a Job's pod template is immutable: " << result.patch.dump();
  // A Pod UPDATE (its container resources are immutable in 1.28) is never patched.
  AdmissionRequest pod = fixture("pod-create-kubectl-run.json");
  pod.operation = Operation::Update;
  pod.old_object = pod.object;
  EXPECT_TRUE(run(pod, set, snapshot({{"webhook-test/Pod/user-pod/" + pod.object["spec"]["containers"][0]["name"].get<std::string>(), {"100m", "256Mi"}}})).patch.empty());
}

// Every request in the fixtures and a set of tricky manifests, with aggressive
// recommendations and without any: what right-sizing produces is what the apiserver accepts.
TEST_F(Rightsizing, EveryPatchedObjectPassesTheApiserversRules) {
  std::vector<AdmissionRequest> requests;
  for (const auto& path : test::apiserver_fixtures()) {
    if (path.filename().string().starts_with("validate-")) continue;
    auto decoded = decode_admission_review(test::read_file(path));
    if (auto* r = std::get_if<AdmissionRequest>(&decoded)) requests.push_back(*r);
  }
  const Json guaranteed_res = {{"requests", {{"cpu", "2"}, {"memory", "1Gi"}}}, {"limits", {{"cpu", "2"}, {"memory", "1Gi"}}}};
  requests.push_back(pod_request({container("g1", guaranteed_res), container("g2", guaranteed_res)}));
  requests.push_back(pod_request({container("a", {{"requests", {{"cpu", "500m"}, {"memory", "512Mi"}}}}),
                                  container("b", {{"limits", {{"cpu", "500m"}, {"memory", "512Mi"}}}})},
                                 {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}, {"limits", {{"cpu", "1"}, {"memory", "1Gi"}}}}));
  requests.push_back(pod_request({container("gpu", {{"limits", {{"nvidia.com/gpu", "1"}}}}),
                                  container("lim", {{"requests", {{"cpu", "100m"}, {"memory", "100Mi"}}}, {"limits", {{"cpu", "200m"}, {"memory", "1000Mi"}}}})}));
  requests.push_back(deployment_request({container("web", {{"limits", {{"cpu", "1"}, {"memory", "64Mi"}}}})}, {container("init", guaranteed_res)}));

  size_t patched_objects = 0;
  for (const char* peak : {"", "10Mi"}) {
    for (const auto& r : requests) {
      if (r.object.is_null() || !pod_spec_pointer(workload_kind_from(r.kind.kind))) continue;
      Json entries = Json::object();
      for (const auto& c : containers(r.object, workload_kind_from(r.kind.kind))) {
        for (const char* owner : {"Pod/", "Deployment/", "StatefulSet/", "Job/", "CronJob/", "ReplicaSet/"}) {
          const std::string name = r.name.empty() ? "x" : r.name;
          Json e = {{"cpu", "5m"}, {"memory", "16Mi"}};
          if (*peak) e["memoryPeak"] = peak;
          entries[r.namespace_ + "/" + owner + name + "/" + c.name] = e;
          for (const char* workload : {"demo", "web", "db", "nightly"}) entries[r.namespace_ + "/" + owner + workload + "/" + c.name] = e;
        }
      }
      for (const auto& recs : {snapshot_with(entries), snapshot({})}) {
        for (const char* rules : {"    target: both\n    maxDecreasePercent: 50\n",
                                  "    target: both\n    limits: {cpu: equalToRequest, memory: equalToRequest}\n",
                                  "    target: both\n    limits: {cpu: {ratio: 2}, memory: keepRatio}\n"}) {
          auto result = run(r, policy_set(rules), recs);
          if (result.patch.empty()) continue;
          ++patched_objects;
          const std::string what = r.kind.kind + " " + std::string(to_string(r.operation)) + " " + r.namespace_ + "/" + r.name;
          const Json after = patched(r, result);
          const bool create_only = r.kind.kind == "Pod" || r.kind.kind == "Job";
          EXPECT_TRUE(r.operation == Operation::Create || !create_only) << what << ": a Pod's resources and a Job's template are immutable";
          EXPECT_THAT(apiserver_violations(pod_spec_of(r.object, r), pod_spec_of(after, r)), ::testing::IsEmpty()) << what << " " << rules;
          // And it is idempotent: the output right-sized again is left alone.
          AdmissionRequest again = r;
          again.object = after;
          EXPECT_TRUE(run(again, policy_set(rules), recs).patch.empty()) << what << " " << rules;
        }
      }
    }
  }
  EXPECT_GT(patched_objects, 20u);
}


// Audit numbers count only what can exist: no dry runs; a controller-made Pod counts for
// its workload, times the workload's replicas.
TEST_F(Rightsizing, ReportCountsNoDryRunsAndPodsThroughTheirWorkload) {
  Metrics metrics;
  RecommendationReport report(metrics);
  FileClusterState state(std::vector<Json>{
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "webhook-test"}}}},
      {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"metadata", {{"name", "demo"}, {"namespace", "webhook-test"}}}, {"spec", {{"replicas", 10}}}}});
  const auto set = policy_set("    target: pods\n");
  const auto recs = snapshot({{"webhook-test/Deployment/demo/app", {"120m", "200Mi"}}});
  AdmissionRequest pod = fixture("pod-create-from-replicaset.json");
  auto result = rightsize(pod, set, state, RightsizingInputs{recs, nullptr, ""}, EvaluationOptions{Mode::Enforce, {}});
  EXPECT_EQ(result.replicas, 10);
  AdmissionRequest dry = pod;
  dry.dry_run = true;
  report.record(dry, result);
  EXPECT_TRUE(report.table()["workloads"].empty()) << "a dry run creates nothing";
  report.record(pod, result);
  const Json table = report.table();
  ASSERT_EQ(table["workloads"].size(), 1u);
  EXPECT_EQ(table["workloads"][0]["kind"], "Deployment");
  EXPECT_EQ(table["workloads"][0]["name"], "demo");
  EXPECT_EQ(table["workloads"][0]["replicas"], 10);
  EXPECT_THAT(metrics.render(), HasSubstr("sizeguard_recommendation_cpu_cores{namespace=\"webhook-test\",value=\"recommended\"} 1.2"));
}

TEST(RecommendationSnapshot, PeakAndOomKillRoundTripAndOldSnapshotsStillLoad) {
  UsageSeries series;
  series.key = {"shop", "Deployment", "web", "app"};
  const int64_t day = 86400;
  series.samples = {{0, 0.1, 900.0 * 1048576}, {10 * day, 0.1, 300.0 * 1048576}, {12 * day, 0.1, 400.5 * 1048576}};
  Recommendation rec;
  rec.cpu_cores = 0.1;
  rec.memory_bytes = 256.0 * 1048576;
  RecommendationSnapshot s = make_snapshot({series}, {rec}, "xgb-test", 0);
  EXPECT_DOUBLE_EQ(s.recommendations["shop/Deployment/web/app"].memory_peak_bytes, 401.0 * 1048576)
      << "the last 7 days only (the 900Mi of day 0 is older), rounded up to Mi";
  s.recommendations["shop/Deployment/web/app"].oom_killed = true;
  const std::string text = snapshot_to_json(s);
  EXPECT_THAT(text, HasSubstr("\"memoryPeak\": \"401Mi\""));
  const RecommendationSnapshot back = parse_recommendations(text);
  EXPECT_DOUBLE_EQ(back.recommendations.at("shop/Deployment/web/app").memory_peak_bytes, 401.0 * 1048576);
  EXPECT_TRUE(back.recommendations.at("shop/Deployment/web/app").oom_killed);
  const auto old = parse_recommendations(R"({"modelVersion": "v", "generatedAt": "t", "recommendations": {"a/b/c/d": {"cpu": "1", "memory": "1Gi"}}})");
  EXPECT_EQ(old.recommendations.at("a/b/c/d").memory_peak_bytes, 0);
  EXPECT_FALSE(old.recommendations.at("a/b/c/d").oom_killed);
  EXPECT_THROW(parse_recommendations(R"({"modelVersion": "v", "generatedAt": "t", "recommendations": {"a/b/c/d": {"cpu": "1", "memory": "1Gi", "oomKilled": 1}}})"),
               SnapshotError);
}

TEST(RightsizingPolicy, ColdStartAcceleratorsIsABoolean) {
  auto load = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: rs}\nspec:\n  rightsizing:\n    coldStart: {accelerators: yes-please}\n", "rs.yaml");
  ASSERT_FALSE(load.ok());
  EXPECT_THAT(::testing::PrintToString(load.errors), HasSubstr("spec.rightsizing.coldStart.accelerators"));
  auto defaults = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: rs}\nspec:\n  rightsizing: {}\n", "rs.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults.policies[0].rightsizing->cold_start_accelerators);
  EXPECT_EQ(defaults.policies[0].rightsizing->memory_limit.strategy, LimitStrategy::Unchanged);
}


// The gauges are recomputed for the namespace a review touched; a namespace whose last row
// goes away (a denied CREATE) loses its series, the others keep theirs.
TEST_F(Rightsizing, ReportGaugesFollowTheRowsOfEachNamespace) {
  Metrics metrics;
  RecommendationReport report(metrics);
  const auto set = policy_set("    target: templates\n");
  const auto recs = snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}}, {"dev/Deployment/web/web", {"300m", "256Mi"}}});
  const AdmissionRequest shop = deployment_request({container("web", {{"requests", {{"cpu", "2"}}}})});
  AdmissionRequest dev = shop;
  dev.namespace_ = "dev";
  dev.object["metadata"]["namespace"] = "dev";
  report.record(shop, run(shop, set, recs));
  report.validated(shop, true);
  report.record(dev, run(dev, set, recs));
  std::string text = metrics.render();
  EXPECT_THAT(text, HasSubstr("sizeguard_recommendation_cpu_cores{namespace=\"dev\",value=\"recommended\"}"));
  EXPECT_THAT(text, HasSubstr("sizeguard_recommendation_workloads{namespace=\"dev\",mode=\"enforce\"} 1"));
  const std::string shop_cpu = "sizeguard_recommendation_cpu_cores{namespace=\"shop\",value=\"current\"}";
  ASSERT_THAT(text, HasSubstr(shop_cpu));
  const std::string shop_line = text.substr(text.find(shop_cpu), text.find('\n', text.find(shop_cpu)) - text.find(shop_cpu));
  report.validated(dev, false);
  text = metrics.render();
  EXPECT_THAT(text, Not(HasSubstr("namespace=\"dev\""))) << text;
  EXPECT_THAT(text, HasSubstr(shop_line + "\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_recommendation_workloads{namespace=\"shop\",mode=\"enforce\"} 1"));
  // Recording the same numbers again changes nothing.
  report.record(shop, run(shop, set, recs));
  EXPECT_EQ(metrics.render(), text);
}

TEST_F(Rightsizing, ReportForgetsWhatTheValidatingWebhookDenied) {
  Metrics metrics;
  RecommendationReport report(metrics);
  const auto set = policy_set("    target: templates\n");
  const auto recs = snapshot({{"shop/Deployment/web/web", {"300m", "256Mi"}}});
  const AdmissionRequest created = deployment_request({container("web", {{"requests", {{"cpu", "2"}}}})});
  report.record(created, run(created, set, recs));
  report.validated(created, true);
  // A later UPDATE with new values is denied: the numbers of the created object stay.
  const AdmissionRequest update = deployment_request({container("web", {{"requests", {{"cpu", "8"}}}})}, {}, Json::object(), Operation::Update);
  report.record(update, run(update, set, recs));
  EXPECT_DOUBLE_EQ(report.table()["workloads"][0]["cpuCores"]["current"].get<double>(), 8.0);
  report.validated(update, false);
  EXPECT_DOUBLE_EQ(report.table()["workloads"][0]["cpuCores"]["current"].get<double>(), 2.0);
  // A denied CREATE leaves nothing behind.
  AdmissionRequest other = deployment_request({container("web", {{"requests", {{"cpu", "2"}}}})});
  other.name = "other";
  other.object["metadata"]["name"] = "other";
  report.record(other, run(other, set, snapshot({{"shop/Deployment/other/web", {"300m", "256Mi"}}})));
  ASSERT_EQ(report.table()["workloads"].size(), 2u);
  report.validated(other, false);
  ASSERT_EQ(report.table()["workloads"].size(), 1u);
  EXPECT_EQ(report.table()["workloads"][0]["name"], "web");
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

// Shapes the apiserver will refuse (resources or requests not an object, two containers of
// one name): right-sizing patches nothing there and claims nothing in warnings or the
// annotation, and says why.
TEST_F(Rightsizing, MalformedContainersAreLeftAloneAndNothingIsClaimed) {
  auto set = policy_set("    target: templates\n");
  auto recs = snapshot({{"shop/Deployment/web/web", {"100m", "128Mi"}}, {"shop/Deployment/web/side", {"100m", "128Mi"}}});
  for (const Json& resources : {Json("x"), Json(5), Json::array({1}), Json{{"requests", 5}}, Json{{"requests", "2"}},
                                Json{{"requests", {{"cpu", "2"}}}, {"limits", Json::array()}}}) {
    auto r = deployment_request({container("web", resources)});
    auto result = run(r, set, recs);
    EXPECT_TRUE(result.changes.empty()) << resources.dump();
    EXPECT_EQ(result.patch, Json::array()) << resources.dump();
    EXPECT_TRUE(result.warnings.empty()) << resources.dump() << ": " << ::testing::PrintToString(result.warnings);
    EXPECT_THAT(::testing::PrintToString(result.notes), HasSubstr("container web")) << resources.dump();
  }
  // Two containers named web: one annotation entry could not tell them apart.
  auto twins = deployment_request({container("web", {{"requests", {{"cpu", "2"}}}}),
                                   container("web", {{"requests", {{"cpu", "1"}}}}),
                                   container("side", {{"requests", {{"cpu", "2"}}}})});
  auto result = run(twins, set, recs);
  EXPECT_TRUE(result.changes.empty());
  EXPECT_EQ(result.patch, Json::array());
  EXPECT_THAT(::testing::PrintToString(result.notes), HasSubstr("share the name web"));
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

// Issue 17: quantities beyond 2^63-1 are exact, as in the apiserver: a "12E" request is
// reported as 12E (not a capped 9223372036854775807), and sums of huge requests never wrap.
TEST_F(Rightsizing, HugeQuantitiesStayExactAndNeverWrap) {
  const auto set = policy_set("    target: pods\n");
  auto huge = pod_request({container("web", {{"requests", {{"cpu", "1"}, {"memory", "12E"}}}})});
  auto cut = run(huge, set, snapshot({{"shop/Pod/web/web", {"1", "32Gi"}}}));
  ASSERT_EQ(cut.warnings.size(), 1u);
  EXPECT_THAT(cut.warnings[0], HasSubstr("memory request 12E → 32Gi"));
  EXPECT_EQ(resources_of(patched(huge, cut))["requests"]["memory"], "32Gi");

  // Two requests of 6E add up to 12E, more than the pod-level 9E: left alone, and said. As
  // int64 milli-units the sum overflowed (and wrapped below the pod-level request).
  const Json pod_level = {{"requests", {{"cpu", "9E"}}}};
  auto r = pod_request({container("a", {{"requests", {{"cpu", "5E"}}}}), container("b", {{"requests", {{"cpu", "5E"}}}})}, pod_level);
  auto up = run(r, set, snapshot({{"shop/Pod/web/a", {"6E", "64Mi"}}, {"shop/Pod/web/b", {"6E", "64Mi"}}}));
  EXPECT_TRUE(up.patch.empty()) << up.patch.dump();
  ASSERT_EQ(up.warnings.size(), 1u);
  EXPECT_THAT(up.warnings[0], HasSubstr("pod-level request 9E"));
}

}  // namespace
}  // namespace sizeguard
