// Existing objects judged with admission's decision code: the objects are the ones a real
// kube-apiserver sent in its AdmissionReviews (tests/fixtures/admission-apiserver-1.28).
#include "webhook/app/existing_audit.h"

#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "support/fixtures.h"

namespace sizeguard {
namespace {

using ::testing::HasSubstr;

PolicySet policies(const std::string& yaml) {
  PolicyLoad load = parse_policies(yaml, "test.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  PolicySet set;
  set.policies = std::move(load.policies);
  return set;
}

AdmissionRequest fixture(const std::string& name) {
  return std::get<AdmissionRequest>(decode_admission_review(test::load_apiserver_fixture(name)));
}

// As a LIST returns it: no apiVersion or kind on the items.
Json as_listed(Json object) {
  object.erase("apiVersion");
  object.erase("kind");
  return object;
}

Json namespace_object(const std::string& name, Json labels = Json::object()) {
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}, {"labels", labels}}}};
}

const std::string kRequirements = R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: requirements}
spec:
  mode: enforce
  resources:
    required: {requests: [cpu, memory], limits: [memory]}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: floor}
spec:
  mode: warn
  match: {kinds: [Deployment, StatefulSet]}
  replicas: {min: 3}
)";

const AuditedResource& resource(const char* kind) { return *audited_resource(kind); }

TEST(ExistingAudit, SameResultsAsAdmissionOfTheCreate) {
  const PolicySet set = policies(kRequirements);
  FileClusterState state(std::vector<Json>{namespace_object("webhook-test"), namespace_object("capture")});
  for (const char* name : {"deployment-create.json", "statefulset-create.json", "pod-create-kubectl-run.json",
                           "cronjob-create.json", "job-create.json"}) {
    SCOPED_TRACE(name);
    const AdmissionRequest admitted = fixture(name);
    const Decision decision = evaluate_policies(admitted, set, state, {});
    const ObjectAudit audit =
        audit_existing_object(as_listed(admitted.object), resource(admitted.kind.kind.c_str()), {&set, &state, {}, {}});
    ASSERT_FALSE(audit.skipped) << *audit.skipped;
    ASSERT_EQ(audit.results.size(), decision.outcomes.size());
    for (size_t i = 0; i < audit.results.size(); ++i) {
      EXPECT_EQ(audit.results[i].policy, decision.outcomes[i].policy);
      EXPECT_EQ(audit.results[i].rule, decision.outcomes[i].rule);
    }
    EXPECT_EQ(audit.denies(), !decision.allowed());
  }
}

TEST(ExistingAudit, FindingsCarryMessagesReasonsAndReportResults) {
  const PolicySet set = policies(kRequirements);
  FileClusterState state(std::vector<Json>{namespace_object("webhook-test")});
  // The fixture's Deployment: 1 replica, a container without requests.
  const ObjectAudit audit = audit_existing_object(as_listed(fixture("deployment-create.json").object),
                                                  resource("Deployment"), {&set, &state, {}, {}});
  ASSERT_EQ(audit.results.size(), 2u);
  EXPECT_EQ(audit.name, "demo");
  EXPECT_EQ(audit.namespace_, "webhook-test");
  EXPECT_EQ(audit.results[0].policy, "requirements");
  EXPECT_EQ(audit.results[0].result, "fail");
  EXPECT_EQ(audit.results[0].reason, "MissingRequest,MissingLimit");
  EXPECT_THAT(audit.results[0].message, HasSubstr("has no cpu request"));
  EXPECT_TRUE(audit.results[0].denies);
  EXPECT_EQ(audit.results[1].policy, "floor");
  EXPECT_EQ(audit.results[1].result, "warn");
  EXPECT_EQ(audit.results[1].reason, "ReplicasBelowMin");
  EXPECT_FALSE(audit.results[1].denies);
  EXPECT_TRUE(audit.denies());
}

TEST(ExistingAudit, ControllerOwnedAndTerminatedObjectsAreSkipped) {
  const PolicySet set = policies(kRequirements);
  FileClusterState state(std::vector<Json>{namespace_object("webhook-test")});
  Json pod = fixture("pod-create-from-replicaset.json").object;
  pod["metadata"]["name"] = "demo-6f8547b4f8-abcde";
  const ObjectAudit owned = audit_existing_object(pod, resource("Pod"), {&set, &state, {}, {}});
  ASSERT_TRUE(owned.skipped);
  EXPECT_EQ(*owned.skipped, "owned by a controller");
  EXPECT_TRUE(owned.results.empty());

  Json done = fixture("pod-create-kubectl-run.json").object;
  done["status"] = {{"phase", "Succeeded"}};
  const ObjectAudit terminated = audit_existing_object(done, resource("Pod"), {&set, &state, {}, {}});
  ASSERT_TRUE(terminated.skipped);
  EXPECT_THAT(*terminated.skipped, HasSubstr("Succeeded"));
}

Json gpu_pod(const std::string& name, int gpus) {
  Json pod = fixture("pod-create-kubectl-run.json").object;
  pod["metadata"]["name"] = name;
  pod["metadata"]["namespace"] = "ml-a";
  pod["spec"]["containers"][0]["resources"] = {{"limits", {{"nvidia.com/gpu", gpus}}}};
  pod["status"] = {{"phase", "Running"}};
  return pod;
}

TEST(ExistingAudit, ARunningPodCountsOnceAgainstItsNamespaceGpuQuota) {
  const PolicySet set = policies(R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: gpu}
spec:
  gpu: {namespaceTotal: 16}
)");
  // Two running pods of 8 GPUs: exactly the quota. Counting the audited pod among the
  // active pods and again as the pod being admitted would see 24.
  const Json a = gpu_pod("a", 8), b = gpu_pod("b", 8);
  FileClusterState state(std::vector<Json>{namespace_object("ml-a"), a, b});
  const ObjectAudit audit = audit_existing_object(as_listed(a), resource("Pod"), {&set, &state, {}, {}});
  ASSERT_EQ(audit.results.size(), 1u);
  EXPECT_EQ(audit.results[0].result, "pass") << audit.results[0].message;

  // A third pod would be over it: the audit says so about it.
  const Json c = gpu_pod("c", 2);
  FileClusterState over(std::vector<Json>{namespace_object("ml-a"), a, b, c});
  const ObjectAudit third = audit_existing_object(as_listed(c), resource("Pod"), {&set, &over, {}, {}});
  ASSERT_EQ(third.results.size(), 1u);
  EXPECT_EQ(third.results[0].result, "fail");
  EXPECT_THAT(third.results[0].message, HasSubstr("16 of 16 GPUs in use, this pod asks 2"));
}

std::shared_ptr<const RecommendationSnapshot> snapshot(const std::string& key, const std::string& cpu,
                                                       const std::string& memory) {
  Json json = {{"modelVersion", "xgb-test"}, {"generatedAt", "2026-11-20T00:00:00Z"}};
  json["recommendations"][key] = {{"cpu", cpu}, {"memory", memory}, {"confidence", 0.7}, {"coldStart", false}};
  return std::make_shared<const RecommendationSnapshot>(parse_recommendations(json.dump(), "test"));
}

TEST(ExistingAudit, RightsizingOfAWorkloadIsWhatItsPodsWouldGet) {
  // target: pods (the default): admission sizes the Pods the StatefulSet makes, so the
  // audit reports those numbers for the StatefulSet.
  const PolicySet set = policies(R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: rs}
spec:
  rightsizing: {mode: audit}
)");
  const AdmissionRequest sts = fixture("statefulset-create.json");  // capture/db: cpu 1, memory 2Gi
  const std::string container = sts.object["spec"]["template"]["spec"]["containers"][0]["name"];
  FileClusterState state(std::vector<Json>{namespace_object("capture")});
  ExistingAuditInputs inputs{&set, &state, {snapshot("capture/StatefulSet/db/" + container, "250m", "1Gi"), nullptr, ""}, {}};
  const ObjectAudit audit = audit_existing_object(as_listed(sts.object), resource("StatefulSet"), inputs);
  ASSERT_TRUE(audit.rightsizing);
  const AuditSizing& sizing = *audit.rightsizing;
  EXPECT_EQ(sizing.policy, "rs");
  EXPECT_EQ(sizing.mode, Mode::Audit);
  EXPECT_EQ(sizing.workload, "capture/StatefulSet/db");
  EXPECT_FALSE(sizing.cold_start);
  ASSERT_TRUE(sizing.confidence);
  EXPECT_DOUBLE_EQ(*sizing.confidence, 0.7);
  ASSERT_FALSE(sizing.changes.empty());
  EXPECT_EQ(sizing.changes[0].container, container);
  EXPECT_EQ(sizing.changes[0].resource, "cpu");
  EXPECT_EQ(sizing.changes[0].field, "request");
  EXPECT_EQ(sizing.changes[0].current, "1");
  EXPECT_EQ(sizing.changes[0].recommended, "250m");
  const int64_t replicas = sts.object["spec"].value("replicas", 1);
  EXPECT_EQ(sizing.replicas, replicas);
  EXPECT_DOUBLE_EQ(sizing.cpu_savings(), 0.75 * static_cast<double>(replicas));

  // Without a snapshot or a model there is nothing to size with.
  const ObjectAudit none = audit_existing_object(as_listed(sts.object), resource("StatefulSet"), {&set, &state, {}, {}});
  EXPECT_FALSE(none.rightsizing);
}

// An HPA's minReplicas below a replica floor is what scales the workload under it: the audit
// finds it as admission of the HPA would, and has nothing to right-size there.
TEST(ExistingAudit, AnHpaIsJudgedByTheReplicaRulesAndNotSized) {
  const PolicySet set = policies(R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: floor}
spec:
  mode: warn
  replicas: {min: 3}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: rs}
spec:
  rightsizing: {mode: audit}
)");
  const AdmissionRequest hpa = fixture("hpa-v2-create-kubectl-autoscale.json");  // capture/web, 2..6
  ASSERT_NE(audited_resource("HorizontalPodAutoscaler"), nullptr);
  EXPECT_EQ(audited_resource("HorizontalPodAutoscaler")->collection_path(), "/apis/autoscaling/v2/horizontalpodautoscalers");
  FileClusterState state(std::vector<Json>{namespace_object("capture")});
  ExistingAuditInputs inputs{&set, &state, {snapshot("capture/Deployment/web/app", "250m", "1Gi"), nullptr, ""}, {}};
  const ObjectAudit audit = audit_existing_object(as_listed(hpa.object), resource("HorizontalPodAutoscaler"), inputs);
  ASSERT_FALSE(audit.skipped) << *audit.skipped;
  EXPECT_EQ(audit.api_version, "autoscaling/v2");
  const Decision decision = evaluate_policies(hpa, set, state, {});
  ASSERT_EQ(audit.results.size(), decision.outcomes.size());
  auto floor = std::find_if(audit.results.begin(), audit.results.end(), [](const AuditResult& r) { return r.policy == "floor"; });
  ASSERT_NE(floor, audit.results.end());
  EXPECT_EQ(floor->result, "warn");
  EXPECT_EQ(floor->reason, "ReplicasBelowMin");
  EXPECT_THAT(floor->message, HasSubstr("spec.minReplicas"));
  EXPECT_FALSE(audit.rightsizing);

  Json raised = hpa.object;
  raised["spec"]["minReplicas"] = 3;
  const ObjectAudit ok = audit_existing_object(as_listed(raised), resource("HorizontalPodAutoscaler"), inputs);
  for (const auto& r : ok.results) EXPECT_EQ(r.result, "pass") << r.policy << ": " << r.message;
}

TEST(ExistingAudit, SynthesizedCreateCarriesKindAndNoUser) {
  const AdmissionRequest r = synthesize_create(as_listed(fixture("cronjob-create.json").object), resource("CronJob"));
  EXPECT_EQ(r.operation, Operation::Create);
  EXPECT_EQ(r.kind.group, "batch");
  EXPECT_EQ(r.kind.kind, "CronJob");
  EXPECT_EQ(r.resource.resource, "cronjobs");
  EXPECT_EQ(r.object["apiVersion"], "batch/v1");
  EXPECT_EQ(r.namespace_, "capture");
  EXPECT_EQ(r.name, "nightly");
  EXPECT_TRUE(r.user_info.username.empty());
  EXPECT_EQ(resource("Pod").collection_path(), "/api/v1/pods");
  EXPECT_EQ(resource("CronJob").collection_path(), "/apis/batch/v1/cronjobs");
  EXPECT_EQ(audited_resource("ConfigMap"), nullptr);
}

}  // namespace
}  // namespace sizeguard
