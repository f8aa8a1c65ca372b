#include "policies/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "support/fixtures.h"

namespace sizeguard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

PolicySet policies(const std::string& yaml) {
  PolicyLoad load = parse_policies(yaml, "test.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  PolicySet set;
  set.policies = std::move(load.policies);
  return set;
}

std::string policy(const std::string& name, const std::string& spec) {
  return "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n" + spec;
}

Json container(const std::string& name, Json resources = Json::object()) {
  return {{"name", name}, {"image", "nginx"}, {"resources", std::move(resources)}};
}

// Containers as a vector: a braced {container(...)} passed as Json is an array under GCC but
// a copy of the one object under clang.
Json deployment(Json replicas, std::vector<Json> containers, Json labels = Json::object()) {
  Json object = {{"apiVersion", "apps/v1"},
                 {"kind", "Deployment"},
                 {"metadata", {{"name", "web"}, {"namespace", "team-a"}, {"labels", labels}}},
                 {"spec", {{"template", {{"spec", {{"containers", containers}}}}}}}};
  if (!replicas.is_null()) object["spec"]["replicas"] = replicas;
  return object;
}

Json pod(Json spec, const std::string& ns = "team-a") {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", "p"}, {"namespace", ns}}},
          {"spec", std::move(spec)},
          {"status", {{"phase", "Running"}}}};
}

AdmissionRequest request_for(Json object, Operation op = Operation::Create) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "u";
  const std::string api_version = object.value("apiVersion", "v1");
  const auto slash = api_version.find('/');
  r.kind = {slash == std::string::npos ? "" : api_version.substr(0, slash),
            slash == std::string::npos ? api_version : api_version.substr(slash + 1), object.value("kind", "")};
  r.request_kind = r.kind;
  std::string resource = object.value("kind", "");
  for (auto& c : resource) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  r.resource = {r.kind.group, r.kind.version, resource + "s"};
  r.name = object["metadata"].value("name", "");
  r.namespace_ = object["metadata"].value("namespace", "");
  r.operation = op;
  if (op == Operation::Delete) r.old_object = std::move(object);
  else r.object = std::move(object);
  return r;
}

Json namespace_object(const std::string& name, Json labels) {
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}, {"labels", std::move(labels)}}}};
}

FileClusterState cluster(std::vector<Json> objects) { return FileClusterState(std::move(objects)); }

struct Evaluation {
  Decision decision;
  std::vector<std::string> reasons;  // cause reasons of the findings, in order
};

Evaluation evaluate(const AdmissionRequest& request, const PolicySet& set, ClusterState& state,
                    Mode default_mode = Mode::Enforce) {
  Evaluation e{evaluate_policies(request, set, state, EvaluationOptions{default_mode, {}}), {}};
  for (const auto& f : e.decision.findings) e.reasons.push_back(f.cause.reason);
  return e;
}

// Namespace team-a exists with no labels unless a test says otherwise.
class Engine : public ::testing::Test {
 protected:
  FileClusterState state_ = cluster({namespace_object("team-a", Json::object())});
};

// --- replicas -------------------------------------------------------------------------

TEST_F(Engine, ReplicasBelowMinDeniesWithCauseAndField) {
  auto set = policies(policy("floor", "  replicas: {min: 2, max: 10}\n"));
  auto e = evaluate(request_for(deployment(1, {container("app")})), set, state_);
  EXPECT_FALSE(e.decision.allowed());
  ASSERT_EQ(e.decision.findings.size(), 1u);
  const auto& f = e.decision.findings[0];
  EXPECT_EQ(f.cause.reason, "ReplicasBelowMin");
  EXPECT_EQ(f.cause.field, "spec.replicas");
  EXPECT_EQ(f.cause.message, "spec.replicas is 1, below the minimum of 2 (policy floor)");
  EXPECT_EQ(f.policy, "floor");
  EXPECT_EQ(f.rule, "replicas");
  ASSERT_EQ(e.decision.outcomes.size(), 1u);
  EXPECT_EQ(e.decision.outcomes[0].result, "deny");
}

TEST_F(Engine, DeploymentWithoutReplicasMeansOne) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n"));
  EXPECT_THAT(evaluate(request_for(deployment(nullptr, {container("app")})), set, state_).reasons,
              ElementsAre("ReplicasBelowMin"));
  EXPECT_TRUE(evaluate(request_for(deployment(2, {container("app")})), set, state_).decision.allowed());
}

TEST_F(Engine, ReplicasAboveMax) {
  auto set = policies(policy("cap", "  replicas: {max: 10}\n"));
  auto e = evaluate(request_for(deployment(11, {container("app")})), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ReplicasAboveMax"});
  EXPECT_EQ(e.decision.findings[0].cause.message, "spec.replicas is 11, above the maximum of 10 (policy cap)");
  EXPECT_TRUE(evaluate(request_for(deployment(10, {container("app")})), set, state_).decision.allowed());
}

TEST_F(Engine, ReplicaRulesIgnoreKindsWithoutReplicas) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n"));
  Json daemonset = deployment(nullptr, {container("app")});
  daemonset["kind"] = "DaemonSet";
  auto e = evaluate(request_for(daemonset), set, state_);
  EXPECT_TRUE(e.decision.allowed());
  EXPECT_TRUE(e.decision.outcomes.empty());
  EXPECT_TRUE(evaluate(request_for(pod({{"containers", {container("app")}}})), set, state_).decision.allowed());
}

TEST_F(Engine, DeleteIsNotAReplicaChange) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n"));
  EXPECT_TRUE(evaluate(request_for(deployment(0, {container("app")}), Operation::Delete), set, state_).decision.allowed());
}

TEST_F(Engine, ScaleSubresourceFromTheRealFixture) {
  // The fixture scales deployment webhook-test/demo to 3; the parent's labels come from
  // cluster state because a Scale carries none.
  auto decoded = decode_admission_review(test::load_apiserver_fixture("scale-update.json"));
  ASSERT_TRUE(std::holds_alternative<AdmissionRequest>(decoded));
  const auto& request = std::get<AdmissionRequest>(decoded);
  ASSERT_EQ(request.sub_resource, "scale");
  Json parent = deployment(2, {container("app")}, {{"tier", "critical"}});
  parent["metadata"]["name"] = request.name;
  parent["metadata"]["namespace"] = request.namespace_;
  FileClusterState state = cluster({namespace_object(request.namespace_, Json::object()), parent});

  auto set = policies(policy("critical-floor", "  match:\n    kinds: [Deployment]\n    objectSelector: {matchLabels: {tier: critical}}\n  replicas: {min: 4}\n"));
  auto e = evaluate(request, set, state);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ReplicasBelowMin"});
  EXPECT_EQ(e.decision.findings[0].cause.message, "spec.replicas is 3, below the minimum of 4 (policy critical-floor)");

  // Another tier: the selector does not match the parent, so nothing applies.
  parent["metadata"]["labels"]["tier"] = "batch";
  FileClusterState other = cluster({namespace_object(request.namespace_, Json::object()), parent});
  EXPECT_TRUE(evaluate(request, set, other).decision.findings.empty());

  // No parent to read: not evaluated, reported, allowed by default (not a quota rule).
  FileClusterState empty = cluster({namespace_object(request.namespace_, Json::object())});
  auto missing = evaluate(request, set, empty);
  EXPECT_TRUE(missing.decision.allowed());
  ASSERT_EQ(missing.reasons, std::vector<std::string>{"ClusterStateUnavailable"});
  EXPECT_THAT(missing.decision.findings[0].cause.message, HasSubstr("labels of the scaled Deployment"));
  EXPECT_EQ(missing.decision.outcomes[0].result, "error");
}

TEST_F(Engine, ScaleToZero) {
  auto decoded = decode_admission_review(test::load_apiserver_fixture("scale-update.json"));
  auto request = std::get<AdmissionRequest>(decoded);
  request.object["spec"]["replicas"] = 0;
  auto set = policies(policy("floor", "  replicas: {min: 1}\n"));
  FileClusterState state = cluster({namespace_object(request.namespace_, Json::object())});
  auto e = evaluate(request, set, state);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ReplicasBelowMin"});
  EXPECT_EQ(e.decision.findings[0].cause.message, "spec.replicas is 0, below the minimum of 1 (policy floor)");
}

Json hpa(Json spec) {
  return {{"apiVersion", "autoscaling/v2"},
          {"kind", "HorizontalPodAutoscaler"},
          {"metadata", {{"name", "web"}, {"namespace", "team-a"}}},
          {"spec", std::move(spec)}};
}

TEST_F(Engine, HpaMinAndMaxReplicas) {
  auto set = policies(policy("floor", "  match: {kinds: [Deployment]}\n  replicas: {min: 2, max: 20}\n"));
  const Json target = {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", "web"}};
  // No minReplicas means 1 (the apiserver's default): below the floor. Matched through the target's kind.
  auto e = evaluate(request_for(hpa({{"scaleTargetRef", target}, {"maxReplicas", 10}})), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ReplicasBelowMin"});
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.minReplicas");
  e = evaluate(request_for(hpa({{"scaleTargetRef", target}, {"minReplicas", 3}, {"maxReplicas", 30}}), Operation::Update),
               set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ReplicasAboveMax"});
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.maxReplicas");
  EXPECT_TRUE(evaluate(request_for(hpa({{"scaleTargetRef", target}, {"minReplicas", 2}, {"maxReplicas", 20}})), set, state_)
                  .decision.allowed());
  // An HPA targeting a StatefulSet is not matched by kinds: [Deployment].
  Json sts_target = target;
  sts_target["kind"] = "StatefulSet";
  EXPECT_TRUE(evaluate(request_for(hpa({{"scaleTargetRef", sts_target}, {"maxReplicas", 10}})), set, state_)
                  .decision.findings.empty());
}

// --- GPUs ------------------------------------------------------------------------------

Json gpu_container(const std::string& name, Json limits) { return container(name, {{"limits", std::move(limits)}}); }

TEST_F(Engine, GpuPerContainerAndPerPodWithMigWeights) {
  auto set = policies(policy("gpus", R"(  gpu:
    resources:
      - {name: nvidia.com/gpu}
      - {name: nvidia.com/mig-1g.10gb, weight: 0.125}
    maxPerContainer: 2
    maxPerPod: 3
)"));
  // 2 GPUs + 8 slices of 1/8 = 3 in one container: above per container, equal to per pod.
  auto e = evaluate(request_for(pod({{"containers", {gpu_container("train", {{"nvidia.com/gpu", "2"}, {"nvidia.com/mig-1g.10gb", 8}})}}})),
                    set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_EQ(e.decision.findings[0].cause.message,
            "container train asks 3 GPUs, above the maximum of 2 per container (policy gpus)");
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.containers[0].resources");

  // Two containers of 2: each fine, the pod (4) is not.
  e = evaluate(request_for(pod({{"containers", {gpu_container("a", {{"nvidia.com/gpu", 2}}),
                                               gpu_container("b", {{"nvidia.com/gpu", 2}})}}})),
               set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_EQ(e.decision.findings[0].cause.message, "each pod asks 4 GPUs, above the maximum of 3 per pod (policy gpus)");
}

TEST_F(Engine, GpuPodFootprintCountsInitContainersAndSidecarsAsTheSchedulerDoes) {
  auto set = policies(policy("gpus", "  gpu: {maxPerPod: 2}\n"));
  // An init container of 2 runs alone before the app (1): peak 2, allowed.
  Json spec = {{"initContainers", {gpu_container("warmup", {{"nvidia.com/gpu", 2}})}},
               {"containers", {gpu_container("app", {{"nvidia.com/gpu", 1}})}}};
  EXPECT_TRUE(evaluate(request_for(pod(spec)), set, state_).decision.allowed());
  // A native sidecar (restartPolicy: Always) keeps running next to the app: 1 + 2 = 3.
  Json sidecar = gpu_container("proxy", {{"nvidia.com/gpu", 2}});
  sidecar["restartPolicy"] = "Always";
  spec["initContainers"] = Json::array({sidecar});
  auto e = evaluate(request_for(pod(spec)), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_THAT(e.decision.findings[0].cause.message, HasSubstr("each pod asks 3 GPUs"));
}

TEST_F(Engine, GpuPerWorkloadIsReplicasTimesPerPodAndJobsUseParallelism) {
  auto set = policies(policy("gpus", "  gpu: {maxPerWorkload: 8}\n"));
  auto e = evaluate(request_for(deployment(5, {gpu_container("app", {{"nvidia.com/gpu", 2}})})), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_EQ(e.decision.findings[0].cause.message,
            "5 pods x 2 GPUs = 10 GPUs, above the maximum of 8 per workload (policy gpus)");
  EXPECT_TRUE(evaluate(request_for(deployment(4, {gpu_container("app", {{"nvidia.com/gpu", 2}})})), set, state_)
                  .decision.allowed());
  Json job = deployment(nullptr, {gpu_container("app", {{"nvidia.com/gpu", 1}})});
  job["apiVersion"] = "batch/v1";
  job["kind"] = "Job";
  job["spec"]["parallelism"] = 9;
  e = evaluate(request_for(job), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.parallelism");
}

TEST_F(Engine, GpuNamespaceTotalCountsActivePodsPlusThePodInHand) {
  auto set = policies(policy("ml-quota", "  match: {namespaces: [ml-*]}\n  gpu: {namespaceTotal: 16}\n"));
  std::vector<Json> cluster = {namespace_object("ml-team", Json::object())};
  for (int i = 0; i < 7; ++i) cluster.push_back(pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 2}})}}}, "ml-team"));
  Json done = pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 8}})}}}, "ml-team");
  done["status"]["phase"] = "Succeeded";  // finished pods hold nothing
  cluster.push_back(done);
  FileClusterState state = ::sizeguard::cluster(cluster);

  auto e = evaluate(request_for(pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 4}})}}}, "ml-team")), set, state);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"GPUQuotaExceeded"});
  EXPECT_EQ(e.decision.findings[0].cause.message,
            "namespace ml-team: 14 of 16 GPUs in use, this pod asks 4 (policy ml-quota)");
  EXPECT_TRUE(evaluate(request_for(pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 2}})}}}, "ml-team")), set, state)
                  .decision.allowed());
  // Other namespaces are not matched; pods without GPUs never need the count.
  EXPECT_TRUE(evaluate(request_for(pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 40}})}}})), set, state_)
                  .decision.findings.empty());
}

TEST_F(Engine, GpuQuotaDeniesWhenStateIsUnavailableUnlessToldOtherwise) {
  UnavailableClusterState down("GET /api/v1/namespaces/ml-team/pods: timeout");
  const Json gpu_pod = pod({{"containers", {gpu_container("c", {{"nvidia.com/gpu", 1}})}}}, "ml-team");
  auto set = policies(policy("ml-quota", "  gpu: {namespaceTotal: 16}\n"));
  auto e = evaluate(request_for(gpu_pod), set, down);
  EXPECT_FALSE(e.decision.allowed());
  ASSERT_EQ(e.reasons, std::vector<std::string>{"ClusterStateUnavailable"});
  EXPECT_THAT(e.decision.findings[0].cause.message, HasSubstr("cluster state unavailable"));
  EXPECT_THAT(e.decision.findings[0].cause.message, HasSubstr("timeout"));

  set = policies(policy("ml-quota", "  onClusterStateError: allow\n  gpu: {namespaceTotal: 16}\n"));
  e = evaluate(request_for(gpu_pod), set, down);
  EXPECT_TRUE(e.decision.allowed());
  EXPECT_EQ(e.reasons, std::vector<std::string>{"ClusterStateUnavailable"});
  EXPECT_EQ(e.decision.outcomes[0].result, "error");

  // Warn mode never denies, even on a state error.
  set = policies(policy("ml-quota", "  mode: warn\n  gpu: {namespaceTotal: 16}\n"));
  EXPECT_TRUE(evaluate(request_for(gpu_pod), set, down).decision.allowed());
}

// --- resource requirements ------------------------------------------------------------

TEST_F(Engine, RequiredRequestsAndLimitsOnEveryContainerButEphemeral) {
  auto set = policies(policy("req", "  resources:\n    required: {requests: [cpu, memory], limits: [memory]}\n"));
  Json spec = {{"initContainers", {container("init", {{"requests", {{"cpu", "100m"}, {"memory", "64Mi"}}},
                                                      {"limits", {{"memory", "64Mi"}}}})}},
               {"containers", {container("app", {{"limits", {{"cpu", "1"}, {"memory", "1Gi"}}}}),
                               container("bare")}},
               {"ephemeralContainers", {container("debug")}}};
  auto e = evaluate(request_for(pod(spec)), set, state_);
  // "app" has limits only: the apiserver defaults requests from limits, so it passes.
  EXPECT_THAT(e.reasons, ElementsAre("MissingRequest", "MissingRequest", "MissingLimit"));
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.containers[1].resources.requests.cpu");
  EXPECT_EQ(e.decision.findings[0].cause.message, "container bare has no cpu request (policy req)");
  EXPECT_EQ(e.decision.findings[2].cause.field, "spec.containers[1].resources.limits.memory");
}

TEST_F(Engine, RequiredRequestsFromTheRealDeploymentFixture) {
  auto decoded = decode_admission_review(test::load_apiserver_fixture("deployment-create.json"));
  const auto& request = std::get<AdmissionRequest>(decoded);
  FileClusterState state = cluster({namespace_object(request.namespace_, Json::object())});
  auto set = policies(policy("req", "  resources:\n    required: {requests: [cpu]}\n"));
  auto e = evaluate(request, set, state);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"MissingRequest"});
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.template.spec.containers[0].resources.requests.cpu");
}

TEST_F(Engine, InitContainersAndSidecarsAreCheckedWithTheirOwnPaths) {
  auto set = policies(policy("req", "  resources:\n    required: {requests: [memory]}\n"));
  Json sidecar = container("proxy");
  sidecar["restartPolicy"] = "Always";
  Json d = deployment(2, {container("app", {{"requests", {{"memory", "1Gi"}}}})});
  d["spec"]["template"]["spec"]["initContainers"] = Json::array({sidecar});
  auto e = evaluate(request_for(d), set, state_);
  ASSERT_EQ(e.reasons, std::vector<std::string>{"MissingRequest"});
  EXPECT_EQ(e.decision.findings[0].cause.message, "sidecar proxy has no memory request (policy req)");
  EXPECT_EQ(e.decision.findings[0].cause.field, "spec.template.spec.initContainers[0].resources.requests.memory");
}

TEST_F(Engine, LimitRatioAndMinMax) {
  auto set = policies(policy("shape", R"(  resources:
    maxLimitRequestRatio: {cpu: 4, memory: 2}
    min: {cpu: 50m}
    max: {memory: 8Gi}
)"));
  auto e = evaluate(request_for(deployment(1, {container("app", {{"requests", {{"cpu", "10m"}, {"memory", "1Gi"}}},
                                                                 {"limits", {{"cpu", "1"}, {"memory", "16Gi"}}}})})),
                    set, state_);
  EXPECT_THAT(e.reasons, ElementsAre("LimitRatioExceeded", "LimitRatioExceeded", "ResourceBelowMin", "ResourceAboveMax"));
  EXPECT_EQ(e.decision.findings[0].cause.message, "container app: cpu limit 1 is more than 4 x its request 10m (policy shape)");
  EXPECT_EQ(e.decision.findings[2].cause.message, "container app: cpu request 10m is below the minimum of 50m (policy shape)");
  EXPECT_EQ(e.decision.findings[3].cause.field, "spec.template.spec.containers[0].resources.limits.memory");
  // Exactly at the ratio and the bounds passes.
  EXPECT_TRUE(evaluate(request_for(deployment(1, {container("app", {{"requests", {{"cpu", "250m"}, {"memory", "4Gi"}}},
                                                                    {"limits", {{"cpu", "1"}, {"memory", "8Gi"}}}})})),
                       set, state_)
                  .decision.allowed());
}

// Issue 17: quantities past 2^63-1 are exact, so the bounds and ratios hold there too (a
// capped 12E passed max 10E; as doubles, 1e401 over 1e400 was inf over inf).
TEST_F(Engine, HugeQuantitiesAreComparedExactly) {
  auto set = policies(policy("shape", "  resources:\n    maxLimitRequestRatio: {cpu: 4}\n    max: {memory: 10E}\n"));
  auto e = evaluate(request_for(deployment(1, {container("app", {{"requests", {{"cpu", "1e400"}, {"memory", "12E"}}},
                                                                 {"limits", {{"cpu", "1e401"}}}})})),
                    set, state_);
  EXPECT_THAT(e.reasons, ElementsAre("LimitRatioExceeded", "ResourceAboveMax"));
  EXPECT_THAT(e.decision.findings[1].cause.message, HasSubstr("memory request 12E"));
  EXPECT_TRUE(evaluate(request_for(deployment(1, {container("app", {{"requests", {{"cpu", "1e400"}, {"memory", "10E"}}},
                                                                    {"limits", {{"cpu", "4e400"}}}})})),
                       set, state_)
                  .decision.allowed());
}

TEST_F(Engine, PodUpdatesAreNotCheckedForResources) {
  // Pod resources are immutable: an old non-compliant pod must still accept label edits.
  auto set = policies(policy("req", "  resources:\n    required: {requests: [cpu]}\n"));
  EXPECT_TRUE(evaluate(request_for(pod({{"containers", {container("app")}}}), Operation::Update), set, state_)
                  .decision.findings.empty());
}

// --- matching, modes and precedence -----------------------------------------------------

TEST_F(Engine, MatchByNamespaceGlobKindOperationAndExclude) {
  auto set = policies(policy("p", R"(  match:
    namespaces: ["team-*"]
    kinds: [Deployment]
    operations: [UPDATE]
  exclude:
    objectSelector: {matchLabels: {sizeguard.io/skip: "true"}}
  replicas: {min: 2}
)"));
  const Json d = deployment(1, {container("app")});
  EXPECT_TRUE(evaluate(request_for(d, Operation::Create), set, state_).decision.findings.empty());
  EXPECT_EQ(evaluate(request_for(d, Operation::Update), set, state_).reasons, std::vector<std::string>{"ReplicasBelowMin"});
  Json skipped = deployment(1, {container("app")}, {{"sizeguard.io/skip", "true"}});
  EXPECT_TRUE(evaluate(request_for(skipped, Operation::Update), set, state_).decision.findings.empty());
  Json elsewhere = d;
  elsewhere["metadata"]["namespace"] = "prod";
  FileClusterState state = cluster({namespace_object("prod", Json::object())});
  EXPECT_TRUE(evaluate(request_for(elsewhere, Operation::Update), set, state).decision.findings.empty());
}

TEST_F(Engine, NamespaceSelectorReadsNamespaceLabels) {
  auto set = policies(policy("prod-floor", R"(  match:
    namespaceSelector:
      matchLabels: {environment: production}
      matchExpressions: [{key: team, operator: NotIn, values: [sre]}]
  replicas: {min: 2}
)"));
  FileClusterState prod = cluster({namespace_object("team-a", {{"environment", "production"}, {"team", "web"}})});
  FileClusterState sre = cluster({namespace_object("team-a", {{"environment", "production"}, {"team", "sre"}})});
  FileClusterState dev = cluster({namespace_object("team-a", {{"environment", "dev"}})});
  const auto request = request_for(deployment(1, {container("app")}));
  EXPECT_EQ(evaluate(request, set, prod).reasons, std::vector<std::string>{"ReplicasBelowMin"});
  EXPECT_TRUE(evaluate(request, set, sre).decision.findings.empty());
  EXPECT_TRUE(evaluate(request, set, dev).decision.findings.empty());
  // Unknown labels: the policy is reported as not evaluated, never silently passed.
  UnavailableClusterState down("connection refused");
  auto e = evaluate(request, set, down);
  EXPECT_TRUE(e.decision.allowed());
  EXPECT_EQ(e.reasons, std::vector<std::string>{"ClusterStateUnavailable"});
}

TEST_F(Engine, ModePrecedenceGlobalThenPolicyThenNamespaceLabel) {
  const auto request = request_for(deployment(1, {container("app")}));
  auto no_mode = policies(policy("p", "  replicas: {min: 2}\n"));
  auto warn_policy = policies(policy("p", "  mode: warn\n  replicas: {min: 2}\n"));

  // Global default.
  EXPECT_FALSE(evaluate(request, no_mode, state_, Mode::Enforce).decision.allowed());
  auto e = evaluate(request, no_mode, state_, Mode::Audit);
  EXPECT_TRUE(e.decision.allowed());
  EXPECT_EQ(e.decision.findings[0].mode, Mode::Audit);
  EXPECT_EQ(e.decision.outcomes[0].result, "audit");
  // The policy's spec.mode beats the global default.
  e = evaluate(request, warn_policy, state_, Mode::Enforce);
  EXPECT_TRUE(e.decision.allowed());
  EXPECT_EQ(e.decision.findings[0].mode, Mode::Warn);
  EXPECT_EQ(e.decision.outcomes[0].result, "warn");
  // The namespace label beats both.
  FileClusterState labelled = cluster({namespace_object("team-a", {{"sizeguard.io/mode", "enforce"}})});
  e = evaluate(request, warn_policy, labelled, Mode::Audit);
  EXPECT_FALSE(e.decision.allowed());
  EXPECT_EQ(e.decision.findings[0].mode, Mode::Enforce);
  FileClusterState audit_ns = cluster({namespace_object("team-a", {{"sizeguard.io/mode", "audit"}})});
  EXPECT_TRUE(evaluate(request, no_mode, audit_ns, Mode::Enforce).decision.allowed());
  // A bad label value is ignored and said so.
  FileClusterState bad = cluster({namespace_object("team-a", {{"sizeguard.io/mode", "off"}})});
  e = evaluate(request, no_mode, bad, Mode::Enforce);
  EXPECT_FALSE(e.decision.allowed());
  ASSERT_EQ(e.decision.notes.size(), 1u);
  EXPECT_THAT(e.decision.notes[0], HasSubstr("invalid sizeguard.io/mode label \"off\""));
}

TEST_F(Engine, SeveralPoliciesEachReportTheirOwnOutcome) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n") + "---\n" +
                      policy("req", "  mode: warn\n  resources:\n    required: {requests: [cpu]}\n") + "---\n" +
                      policy("gpus", "  gpu: {maxPerPod: 1}\n"));
  auto e = evaluate(request_for(deployment(3, {container("app")})), set, state_);
  EXPECT_TRUE(e.decision.allowed());
  ASSERT_EQ(e.decision.outcomes.size(), 3u);
  EXPECT_EQ(e.decision.outcomes[0].policy, "floor");
  EXPECT_EQ(e.decision.outcomes[0].result, "pass");
  EXPECT_EQ(e.decision.outcomes[1].result, "warn");
  EXPECT_EQ(e.decision.outcomes[2].rule, "gpu");
  EXPECT_EQ(e.decision.outcomes[2].result, "pass");
}

TEST_F(Engine, ConnectAndEmptyObjectsAreLeftAlone) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n"));
  auto request = request_for(deployment(1, {container("app")}));
  request.operation = Operation::Connect;
  EXPECT_TRUE(evaluate(request, set, state_).decision.outcomes.empty());
}

// --- objects a controller owns ---------------------------------------------------------------

AdmissionRequest fixture_request(const std::string& name) {
  auto decoded = decode_admission_review(test::load_apiserver_fixture(name));
  EXPECT_TRUE(std::holds_alternative<AdmissionRequest>(decoded)) << name;
  return std::get<AdmissionRequest>(decoded);
}

// The example policy as shipped, so the example itself is what lets rollouts through.
PolicySet example_policies(const std::string& file) {
  const auto repository = test::apiserver_fixture_dir().parent_path().parent_path().parent_path();
  return policies(test::read_file(repository / "policies" / "examples" / file));
}

TEST_F(Engine, TheExampleReplicaFloorLetsADeploymentRolloutThrough) {
  auto set = example_policies("production-replica-floor.yaml");
  // Namespace capture in production, and Deployment web (a Scale's labels are its parent's).
  const Json web = fixture_request("validate-deployment-update-kubectl-set-image.json").old_object;
  FileClusterState state = cluster({namespace_object("capture", {{"environment", "production"}}), web});
  // The deployment controller's requests during a rollout of Deployment web: the new
  // ReplicaSet is created with 1 replica and the old one scaled down, below the floor of 2.
  for (const char* name : {"replicaset-create-by-deployment-controller.json",
                           "validate-replicaset-create-by-deployment-controller.json",
                           "replicaset-scale-down-by-deployment-controller.json",
                           "validate-replicaset-scale-down-by-deployment-controller.json",
                           "validate-replicaset-scale-up-by-deployment-controller.json",
                           "validate-replicaset-scale-up-proportional-by-deployment-controller.json",
                           "validate-replicaset-update-annotations-by-deployment-controller.json"}) {
    AdmissionRequest request = fixture_request(name);
    auto e = evaluate(request, set, state);
    EXPECT_TRUE(e.decision.allowed()) << name;
    EXPECT_TRUE(e.decision.findings.empty()) << name;
  }
  AdmissionRequest created = fixture_request("validate-replicaset-create-by-deployment-controller.json");
  ASSERT_EQ(created.object["spec"]["replicas"], 1);
  AdmissionRequest scaled_to_zero = fixture_request("validate-replicaset-scale-down-by-deployment-controller.json");
  scaled_to_zero.object["spec"]["replicas"] = 0;
  EXPECT_TRUE(evaluate(scaled_to_zero, set, state).decision.findings.empty());

  // A bare ReplicaSet (no controller owns it) is still judged, and so is one whose owner
  // reference is not a controller's.
  AdmissionRequest bare = created;
  bare.object["metadata"].erase("ownerReferences");
  EXPECT_THAT(evaluate(bare, set, state).reasons, ElementsAre("ReplicasBelowMin"));
  AdmissionRequest not_controller = created;
  not_controller.object["metadata"]["ownerReferences"][0]["controller"] = false;
  EXPECT_THAT(evaluate(not_controller, set, state).reasons, ElementsAre("ReplicasBelowMin"));

  // The Deployment itself below the floor is still denied (the real set-image UPDATE, 3 -> 1 replica).
  AdmissionRequest deployment_update = fixture_request("validate-deployment-update-kubectl-set-image.json");
  EXPECT_TRUE(evaluate(deployment_update, set, state).decision.allowed());
  deployment_update.object["spec"]["replicas"] = 1;
  EXPECT_THAT(evaluate(deployment_update, set, state).reasons, ElementsAre("ReplicasBelowMin"));
  // And so is `kubectl scale deployment web --replicas=1`.
  AdmissionRequest scale = fixture_request("validate-deployment-scale-update-kubectl-scale.json");
  scale.object["spec"]["replicas"] = 1;
  EXPECT_THAT(evaluate(scale, set, state).reasons, ElementsAre("ReplicasBelowMin"));
}

TEST_F(Engine, ScaleOfAnOwnedReplicaSetIsJudgedByItsParentsOwner) {
  auto set = policies(policy("floor", "  replicas: {min: 2}\n"));
  AdmissionRequest owned = fixture_request("validate-replicaset-create-by-deployment-controller.json");
  Json replicaset = owned.object;
  // `kubectl scale replicaset <name> --replicas=1`: a Scale of the ReplicaSet, whose owner is
  // only on the ReplicaSet itself (read from cluster state).
  AdmissionRequest scale = fixture_request("validate-deployment-scale-update-kubectl-scale.json");
  scale.resource.resource = "replicasets";
  scale.name = replicaset["metadata"]["name"].get<std::string>();
  scale.object["spec"]["replicas"] = 1;
  FileClusterState with_owner = cluster({namespace_object("capture", Json::object()), replicaset});
  auto e = evaluate(scale, set, with_owner);
  EXPECT_TRUE(e.decision.findings.empty());
  EXPECT_TRUE(e.decision.outcomes.empty());
  replicaset["metadata"].erase("ownerReferences");
  FileClusterState bare = cluster({namespace_object("capture", Json::object()), replicaset});
  EXPECT_THAT(evaluate(scale, set, bare).reasons, ElementsAre("ReplicasBelowMin"));
  // The parent cannot be read: judged, not waved through.
  FileClusterState unknown = cluster({namespace_object("capture", Json::object())});
  EXPECT_THAT(evaluate(scale, set, unknown).reasons, ElementsAre("ReplicasBelowMin"));
}

TEST_F(Engine, ResourceRulesJudgeAnOwnedWorkloadsTemplateAtItsOwnerButPodsAlways) {
  auto set = policies(policy("storage", "  resources:\n    required: {requests: [ephemeral-storage]}\n"));
  AdmissionRequest created = fixture_request("validate-replicaset-create-by-deployment-controller.json");
  FileClusterState state = cluster({namespace_object("capture", Json::object())});
  EXPECT_TRUE(evaluate(created, set, state).decision.findings.empty());
  AdmissionRequest bare = created;
  bare.object["metadata"].erase("ownerReferences");
  EXPECT_THAT(evaluate(bare, set, state).reasons, ElementsAre("MissingRequest"));
  // Pods are where resources are taken: judged even when a controller creates them.
  AdmissionRequest pod_by_replicaset = fixture_request("validate-pod-create-from-replicaset.json");
  FileClusterState pod_state = cluster({namespace_object(pod_by_replicaset.namespace_, Json::object())});
  EXPECT_THAT(evaluate(pod_by_replicaset, set, pod_state).reasons, ElementsAre("MissingRequest"));
}

}  // namespace
}  // namespace sizeguard
