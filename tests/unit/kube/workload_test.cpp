#include "kube/workload.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "support/fixtures.h"

namespace sizeguard {
namespace {

// Every kind with its wire name, where its pod spec / template metadata / replicas live.
struct KindExpectation {
  WorkloadKind kind;
  const char* name;
  std::optional<std::string> spec_pointer;
  std::optional<std::string> metadata_pointer;
  std::optional<std::string> replicas_pointer;
};

const std::vector<KindExpectation>& all_kinds() {
  static const std::vector<KindExpectation> kinds{
      {WorkloadKind::Pod, "Pod", "/spec", "/metadata", std::nullopt},
      {WorkloadKind::Deployment, "Deployment", "/spec/template/spec", "/spec/template/metadata", "/spec/replicas"},
      {WorkloadKind::StatefulSet, "StatefulSet", "/spec/template/spec", "/spec/template/metadata", "/spec/replicas"},
      {WorkloadKind::DaemonSet, "DaemonSet", "/spec/template/spec", "/spec/template/metadata", std::nullopt},
      {WorkloadKind::ReplicaSet, "ReplicaSet", "/spec/template/spec", "/spec/template/metadata", "/spec/replicas"},
      {WorkloadKind::ReplicationController, "ReplicationController", "/spec/template/spec", "/spec/template/metadata",
       "/spec/replicas"},
      {WorkloadKind::Job, "Job", "/spec/template/spec", "/spec/template/metadata", "/spec/parallelism"},
      {WorkloadKind::CronJob, "CronJob", "/spec/jobTemplate/spec/template/spec",
       "/spec/jobTemplate/spec/template/metadata", std::nullopt},
      {WorkloadKind::Scale, "Scale", std::nullopt, std::nullopt, "/spec/replicas"},
      {WorkloadKind::HorizontalPodAutoscaler, "HorizontalPodAutoscaler", std::nullopt, std::nullopt, std::nullopt},
      {WorkloadKind::Other, "Other", std::nullopt, std::nullopt, std::nullopt},
  };
  return kinds;
}

// A pod spec with one of each container type, in the order the apiserver serializes them.
Json full_pod_spec() {
  return Json::parse(R"({
    "initContainers": [
      {"name": "setup", "image": "busybox"},
      {"name": "proxy", "image": "envoy", "restartPolicy": "Always"},
      {"name": "migrate", "image": "busybox", "restartPolicy": "OnFailure"}
    ],
    "containers": [
      {"name": "app", "image": "nginx"},
      {"name": "worker", "image": "nginx"}
    ],
    "ephemeralContainers": [
      {"name": "debugger", "image": "busybox", "targetContainerName": "app"}
    ]
  })");
}

// Wraps a pod spec into an object of the given kind, at the kind's pod spec location.
Json object_with_pod_spec(WorkloadKind kind, const Json& pod_spec) {
  Json object = {{"apiVersion", "v1"},
                 {"kind", std::string(to_string(kind))},
                 {"metadata", {{"name", "demo"}, {"namespace", "default"}}}};
  const auto pointer = pod_spec_pointer(kind);
  if (pointer) object[Json::json_pointer(*pointer)] = pod_spec;
  return object;
}

struct ExpectedContainer {
  const char* name;
  ContainerType type;
  const char* list;
  int index;
};

const std::vector<ExpectedContainer>& full_pod_spec_expectation() {
  static const std::vector<ExpectedContainer> expected{
      {"setup", ContainerType::Init, "initContainers", 0},
      {"proxy", ContainerType::Sidecar, "initContainers", 1},
      {"migrate", ContainerType::Init, "initContainers", 2},
      {"app", ContainerType::Regular, "containers", 0},
      {"worker", ContainerType::Regular, "containers", 1},
      {"debugger", ContainerType::Ephemeral, "ephemeralContainers", 0},
  };
  return expected;
}

// Each ref's pointer resolves (with nlohmann's own resolver) to the very node it carries.
void expect_refs_resolve(const Json& object, const std::vector<ContainerRef>& refs) {
  for (const auto& ref : refs) {
    SCOPED_TRACE(ref.pointer);
    ASSERT_NE(ref.node, nullptr);
    const Json* resolved = nullptr;
    ASSERT_NO_THROW(resolved = &object.at(Json::json_pointer(ref.pointer)));
    EXPECT_EQ(resolved, ref.node) << "node does not point into the document";
    EXPECT_EQ(*resolved, *ref.node);
    ASSERT_TRUE(ref.node->is_object());
    if (ref.node->contains("name")) {
      EXPECT_EQ(ref.node->at("name"), ref.name);
    }
  }
}

// --- kind names ---------------------------------------------------------------------

TEST(WorkloadKindTest, NamesRoundTrip) {
  for (const auto& expected : all_kinds()) {
    SCOPED_TRACE(expected.name);
    EXPECT_EQ(to_string(expected.kind), expected.name);
    if (expected.kind != WorkloadKind::Other) {
      EXPECT_EQ(workload_kind_from(expected.name), expected.kind);
      EXPECT_EQ(workload_kind_from(to_string(expected.kind)), expected.kind);
    }
  }
}

TEST(WorkloadKindTest, UnknownKindsAreOther) {
  EXPECT_EQ(workload_kind_from("ConfigMap"), WorkloadKind::Other);
  EXPECT_EQ(workload_kind_from(""), WorkloadKind::Other);
  EXPECT_EQ(workload_kind_from("pod"), WorkloadKind::Other);          // kinds are case-sensitive
  EXPECT_EQ(workload_kind_from("deployment"), WorkloadKind::Other);
  EXPECT_EQ(workload_kind_from("Deployments"), WorkloadKind::Other);  // resource name, not kind
  EXPECT_EQ(workload_kind_from(" Pod"), WorkloadKind::Other);
  EXPECT_EQ(to_string(workload_kind_from("ConfigMap")), "Other");
}

TEST(WorkloadKindTest, ContainerTypeNames) {
  EXPECT_EQ(to_string(ContainerType::Regular), "container");
  EXPECT_EQ(to_string(ContainerType::Init), "initContainer");
  EXPECT_EQ(to_string(ContainerType::Sidecar), "sidecar");
  EXPECT_EQ(to_string(ContainerType::Ephemeral), "ephemeralContainer");
}

// --- pointers per kind --------------------------------------------------------------

TEST(WorkloadPointersTest, PodSpecPointerPerKind) {
  for (const auto& expected : all_kinds()) {
    SCOPED_TRACE(expected.name);
    EXPECT_EQ(pod_spec_pointer(expected.kind), expected.spec_pointer);
  }
}

TEST(WorkloadPointersTest, PodMetadataPointerPerKind) {
  for (const auto& expected : all_kinds()) {
    SCOPED_TRACE(expected.name);
    EXPECT_EQ(pod_metadata_pointer(expected.kind), expected.metadata_pointer);
  }
}

TEST(WorkloadPointersTest, ReplicasPointerPerKind) {
  for (const auto& expected : all_kinds()) {
    SCOPED_TRACE(expected.name);
    EXPECT_EQ(replicas_pointer(expected.kind), expected.replicas_pointer);
  }
}

TEST(WorkloadPointersTest, PodSpecAndMetadataAreSiblings) {
  // For template kinds the metadata pointer is the spec pointer with the last token swapped.
  for (const auto& expected : all_kinds()) {
    if (!expected.spec_pointer) continue;
    SCOPED_TRACE(expected.name);
    const std::string& spec = *expected.spec_pointer;
    ASSERT_TRUE(expected.metadata_pointer.has_value());
    EXPECT_EQ(spec.substr(0, spec.rfind('/')) + "/metadata", *expected.metadata_pointer);
  }
}

// --- containers() -------------------------------------------------------------------

class WorkloadContainersPerKind : public ::testing::TestWithParam<WorkloadKind> {};

TEST_P(WorkloadContainersPerKind, FindsEveryContainerWithTypeAndPointer) {
  const WorkloadKind kind = GetParam();
  const Json object = object_with_pod_spec(kind, full_pod_spec());
  const auto refs = containers(object, kind);
  const auto& expected = full_pod_spec_expectation();
  const std::string spec = *pod_spec_pointer(kind);

  ASSERT_EQ(refs.size(), expected.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(refs[i].name, expected[i].name);
    EXPECT_EQ(refs[i].type, expected[i].type) << to_string(refs[i].type);
    EXPECT_EQ(refs[i].pointer, spec + "/" + expected[i].list + "/" + std::to_string(expected[i].index));
  }
  expect_refs_resolve(object, refs);
}

INSTANTIATE_TEST_SUITE_P(WorkloadPodSpecKinds, WorkloadContainersPerKind,
                         ::testing::Values(WorkloadKind::Pod, WorkloadKind::Deployment, WorkloadKind::StatefulSet,
                                           WorkloadKind::DaemonSet, WorkloadKind::ReplicaSet,
                                           WorkloadKind::ReplicationController, WorkloadKind::Job,
                                           WorkloadKind::CronJob),
                         [](const ::testing::TestParamInfo<WorkloadKind>& info) {
                           return std::string(to_string(info.param));
                         });

TEST(WorkloadContainersTest, CronJobUsesJobTemplate) {
  const Json cronjob = Json::parse(R"({
    "apiVersion": "batch/v1", "kind": "CronJob",
    "metadata": {"name": "nightly"},
    "spec": {
      "schedule": "0 3 * * *",
      "jobTemplate": {"spec": {"template": {
        "metadata": {"labels": {"job": "nightly"}},
        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "backup", "image": "busybox"}]}
      }}}
    }
  })");
  const auto refs = containers(cronjob, WorkloadKind::CronJob);
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "backup");
  EXPECT_EQ(refs[0].type, ContainerType::Regular);
  EXPECT_EQ(refs[0].pointer, "/spec/jobTemplate/spec/template/spec/containers/0");
  expect_refs_resolve(cronjob, refs);

  // Read as a Job (wrong kind), the CronJob has no /spec/template/spec.
  EXPECT_TRUE(containers(cronjob, WorkloadKind::Job).empty());
}

TEST(WorkloadContainersTest, OnlyRestartPolicyAlwaysMakesASidecar) {
  const Json pod = Json::parse(R"({
    "kind": "Pod",
    "spec": {
      "initContainers": [
        {"name": "always", "restartPolicy": "Always"},
        {"name": "lower", "restartPolicy": "always"},
        {"name": "never", "restartPolicy": "Never"},
        {"name": "not-a-string", "restartPolicy": true},
        {"name": "none"}
      ],
      "containers": [{"name": "app", "restartPolicy": "Always"}],
      "ephemeralContainers": [{"name": "debug", "restartPolicy": "Always"}]
    }
  })");
  const auto refs = containers(pod, WorkloadKind::Pod);
  ASSERT_EQ(refs.size(), 7u);
  EXPECT_EQ(refs[0].type, ContainerType::Sidecar);
  EXPECT_EQ(refs[1].type, ContainerType::Init);
  EXPECT_EQ(refs[2].type, ContainerType::Init);
  EXPECT_EQ(refs[3].type, ContainerType::Init);
  EXPECT_EQ(refs[4].type, ContainerType::Init);
  EXPECT_EQ(refs[5].type, ContainerType::Regular);    // restartPolicy only matters on init containers
  EXPECT_EQ(refs[6].type, ContainerType::Ephemeral);
  expect_refs_resolve(pod, refs);
}

TEST(WorkloadContainersTest, NodesPointIntoTheCallersDocument) {
  Json pod = object_with_pod_spec(WorkloadKind::Pod, full_pod_spec());
  const auto refs = containers(pod, WorkloadKind::Pod);
  ASSERT_FALSE(refs.empty());
  EXPECT_EQ(refs.front().node, &pod["spec"]["initContainers"][0]);
  EXPECT_EQ(refs.back().node, &pod["spec"]["ephemeralContainers"][0]);
  // A change through the document is visible through the ref (no copy was taken).
  pod["spec"]["initContainers"][0]["image"] = "changed";
  EXPECT_EQ(refs.front().node->at("image"), "changed");
}

TEST(WorkloadContainersTest, KindsWithoutPodSpecHaveNoContainers) {
  // Even if the object happens to carry containers where a Pod would.
  const Json object = object_with_pod_spec(WorkloadKind::Pod, full_pod_spec());
  EXPECT_TRUE(containers(object, WorkloadKind::Scale).empty());
  EXPECT_TRUE(containers(object, WorkloadKind::HorizontalPodAutoscaler).empty());
  EXPECT_TRUE(containers(object, WorkloadKind::Other).empty());
}

TEST(WorkloadContainersTest, MissingOrMistypedPiecesAreSkipped) {
  EXPECT_TRUE(containers(Json(), WorkloadKind::Pod).empty());
  EXPECT_TRUE(containers(Json::object(), WorkloadKind::Deployment).empty());
  EXPECT_TRUE(containers(Json::array(), WorkloadKind::Deployment).empty());
  EXPECT_TRUE(containers(Json::parse(R"({"spec": null})"), WorkloadKind::Pod).empty());
  EXPECT_TRUE(containers(Json::parse(R"({"spec": {"template": "x"}})"), WorkloadKind::Deployment).empty());
  EXPECT_TRUE(containers(Json::parse(R"({"spec": {"template": {"spec": []}}})"), WorkloadKind::Deployment).empty());
  EXPECT_TRUE(containers(Json::parse(R"({"spec": {"containers": {"name": "x"}}})"), WorkloadKind::Pod).empty());

  // Non-object entries are skipped but keep their index in the pointers of the others;
  // a container without a string name gets an empty name.
  const Json pod = Json::parse(R"({"spec": {"containers": ["junk", {"name": "app"}, {"name": 7}, {}]}})");
  const auto refs = containers(pod, WorkloadKind::Pod);
  ASSERT_EQ(refs.size(), 3u);
  EXPECT_EQ(refs[0].name, "app");
  EXPECT_EQ(refs[0].pointer, "/spec/containers/1");
  EXPECT_EQ(refs[1].name, "");
  EXPECT_EQ(refs[1].pointer, "/spec/containers/2");
  EXPECT_EQ(refs[2].name, "");
  EXPECT_EQ(refs[2].pointer, "/spec/containers/3");
  for (const auto& ref : refs) {
    EXPECT_EQ(&pod.at(Json::json_pointer(ref.pointer)), ref.node);
  }
}

// --- replicas() ---------------------------------------------------------------------

Json with_spec(const char* spec_json) {
  return Json{{"metadata", {{"name", "demo"}}}, {"spec", Json::parse(spec_json)}};
}

TEST(WorkloadReplicasTest, ReplicatedKindsDefaultToOne) {
  for (WorkloadKind kind : {WorkloadKind::Deployment, WorkloadKind::StatefulSet, WorkloadKind::ReplicaSet,
                            WorkloadKind::ReplicationController}) {
    SCOPED_TRACE(std::string(to_string(kind)));
    EXPECT_EQ(replicas(with_spec(R"({"template": {}})"), kind), 1);
    EXPECT_EQ(replicas(with_spec(R"({"replicas": 0})"), kind), 0);
    EXPECT_EQ(replicas(with_spec(R"({"replicas": 5})"), kind), 5);
  }
}

TEST(WorkloadReplicasTest, DeploymentWithoutSpecReplicasIsOne) {
  EXPECT_EQ(replicas(with_spec("{}"), WorkloadKind::Deployment), 1);
  EXPECT_EQ(replicas(Json::parse(R"({"metadata": {"name": "x"}})"), WorkloadKind::Deployment), 1);
}

TEST(WorkloadReplicasTest, DeploymentExplicitZeroIsZero) {
  const auto value = replicas(with_spec(R"({"replicas": 0})"), WorkloadKind::Deployment);
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, 0);
}

TEST(WorkloadReplicasTest, LargeValuesAreKept) {
  EXPECT_EQ(replicas(with_spec(R"({"replicas": 2147483647})"), WorkloadKind::Deployment), 2147483647);
  EXPECT_EQ(replicas(with_spec(R"({"replicas": 4294967296})"), WorkloadKind::StatefulSet), 4294967296LL);
}

TEST(WorkloadReplicasTest, ScaleReadsSpecReplicas) {
  const Json scale = Json::parse(R"({
    "apiVersion": "autoscaling/v1", "kind": "Scale",
    "metadata": {"name": "demo", "namespace": "default"},
    "spec": {"replicas": 7},
    "status": {"replicas": 2, "selector": "app=demo"}
  })");
  EXPECT_EQ(replicas(scale, WorkloadKind::Scale), 7);
  EXPECT_EQ(replicas(with_spec(R"({"replicas": 0})"), WorkloadKind::Scale), 0);
}

TEST(WorkloadReplicasTest, ScaleWithoutSpecReplicasIsZero) {
  // Not spelled out in workload.h; workload.cpp: "a Scale without spec.replicas means 0".
  EXPECT_EQ(replicas(with_spec("{}"), WorkloadKind::Scale), 0);
}

TEST(WorkloadReplicasTest, ScaleFixtureFromTheRepo) {
  const Json review = Json::parse(test::load_test_fixture("admission-apiserver-1.28/scale-update.json"));
  const Json& scale = review.at("request").at("object");
  ASSERT_EQ(scale.at("kind"), "Scale");
  EXPECT_EQ(replicas(scale, WorkloadKind::Scale), scale.at("spec").at("replicas").get<int64_t>());
  EXPECT_TRUE(containers(scale, WorkloadKind::Scale).empty());
}

TEST(WorkloadReplicasTest, JobReportsParallelism) {
  EXPECT_EQ(replicas(with_spec(R"({"parallelism": 4, "completions": 10})"), WorkloadKind::Job), 4);
  EXPECT_EQ(replicas(with_spec(R"({"completions": 10})"), WorkloadKind::Job), 1);
  EXPECT_EQ(replicas(with_spec(R"({"parallelism": 0})"), WorkloadKind::Job), 0);
  // Job has no spec.replicas; a stray one is ignored.
  EXPECT_EQ(replicas(with_spec(R"({"replicas": 9})"), WorkloadKind::Job), 1);
}

TEST(WorkloadReplicasTest, KindsWithoutReplicasAreNullopt) {
  const Json object = with_spec(R"({"replicas": 3, "parallelism": 3})");
  for (WorkloadKind kind : {WorkloadKind::Pod, WorkloadKind::DaemonSet, WorkloadKind::CronJob,
                            WorkloadKind::HorizontalPodAutoscaler, WorkloadKind::Other}) {
    SCOPED_TRACE(std::string(to_string(kind)));
    EXPECT_EQ(replicas(object, kind), std::nullopt);
    EXPECT_EQ(replicas(Json::object(), kind), std::nullopt);
  }
}

TEST(WorkloadReplicasTest, HorizontalPodAutoscalerHasNoReplicas) {
  const Json hpa = Json::parse(R"({
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "demo"},
    "spec": {"minReplicas": 2, "maxReplicas": 10,
             "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}}
  })");
  EXPECT_EQ(replicas(hpa, WorkloadKind::HorizontalPodAutoscaler), std::nullopt);
  EXPECT_TRUE(containers(hpa, WorkloadKind::HorizontalPodAutoscaler).empty());
}

TEST(WorkloadReplicasTest, NonObjectIsNullopt) {
  // DELETE requests carry a null object.
  EXPECT_EQ(replicas(Json(), WorkloadKind::Deployment), std::nullopt);
  EXPECT_EQ(replicas(Json::array(), WorkloadKind::Scale), std::nullopt);
}

TEST(WorkloadReplicasTest, NonIntegerReplicasFallBackToDefault) {
  // Behaviour of workload.cpp (not stated in workload.h): a non-integer value counts as absent.
  EXPECT_EQ(replicas(with_spec(R"({"replicas": "3"})"), WorkloadKind::Deployment), 1);
  EXPECT_EQ(replicas(with_spec(R"({"replicas": 2.5})"), WorkloadKind::Deployment), 1);
  EXPECT_EQ(replicas(with_spec(R"({"replicas": null})"), WorkloadKind::Deployment), 1);
  EXPECT_EQ(replicas(Json::parse(R"({"spec": 3})"), WorkloadKind::Deployment), 1);
  EXPECT_EQ(replicas(with_spec(R"({"replicas": "3"})"), WorkloadKind::Scale), 0);
}

TEST(WorkloadReplicasTest, ReplicasPointerResolvesToTheValueRead) {
  const Json deployment = with_spec(R"({"replicas": 3})");
  EXPECT_EQ(deployment.at(Json::json_pointer(*replicas_pointer(WorkloadKind::Deployment))), 3);
  const Json job = with_spec(R"({"parallelism": 6})");
  EXPECT_EQ(job.at(Json::json_pointer(*replicas_pointer(WorkloadKind::Job))), 6);
  EXPECT_EQ(replicas(job, WorkloadKind::Job), 6);
}

// --- labels_of / annotations_of ----------------------------------------------------

TEST(WorkloadMetadataTest, LabelsAndAnnotationsOfTheObjectItself) {
  const Json deployment = Json::parse(R"({
    "metadata": {"name": "demo", "labels": {"app": "demo"}, "annotations": {"note": "x"}},
    "spec": {"template": {"metadata": {"labels": {"app": "template"}}}}
  })");
  EXPECT_EQ(labels_of(deployment), Json({{"app", "demo"}}));
  EXPECT_EQ(annotations_of(deployment), Json({{"note", "x"}}));
  EXPECT_EQ(&labels_of(deployment), &deployment["metadata"]["labels"]);
  EXPECT_EQ(&annotations_of(deployment), &deployment["metadata"]["annotations"]);
}

TEST(WorkloadMetadataTest, EmptyObjectWhenAbsent) {
  const std::vector<Json> objects{
      Json(),
      Json::object(),
      Json::array(),
      Json::parse(R"({"spec": {}})"),
      Json::parse(R"({"metadata": null})"),
      Json::parse(R"({"metadata": "x"})"),
      Json::parse(R"({"metadata": {"name": "demo"}})"),
      Json::parse(R"({"metadata": {"labels": ["a"], "annotations": "b"}})"),
      Json::parse(R"({"metadata": {"labels": null, "annotations": null}})"),
  };
  for (const auto& object : objects) {
    SCOPED_TRACE(object.dump());
    EXPECT_TRUE(labels_of(object).is_object());
    EXPECT_TRUE(labels_of(object).empty());
    EXPECT_TRUE(annotations_of(object).is_object());
    EXPECT_TRUE(annotations_of(object).empty());
  }
}

// --- real apiserver fixtures --------------------------------------------------------

AdmissionRequest decode_apiserver_fixture(const char* name) {
  auto result = decode_admission_review(test::load_apiserver_fixture(name));
  if (auto* error = std::get_if<DecodeError>(&result)) {
    ADD_FAILURE() << name << ": " << error->message;
    return {};
  }
  return std::get<AdmissionRequest>(std::move(result));
}

TEST(WorkloadSharedFixtureTest, DeploymentCreate) {
  const AdmissionRequest request = decode_apiserver_fixture("deployment-create.json");
  ASSERT_TRUE(request.object.is_object());
  const WorkloadKind kind = workload_kind_from(request.kind.kind);
  ASSERT_EQ(kind, WorkloadKind::Deployment);

  const auto refs = containers(request.object, kind);
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "app");
  EXPECT_EQ(refs[0].type, ContainerType::Regular);
  EXPECT_EQ(refs[0].pointer, "/spec/template/spec/containers/0");
  expect_refs_resolve(request.object, refs);
  EXPECT_EQ(&request.object["spec"]["template"]["spec"]["containers"][0], refs[0].node);

  EXPECT_EQ(replicas(request.object, kind), request.object.at("spec").at("replicas").get<int64_t>());
  EXPECT_EQ(labels_of(request.object).value("app", ""), "demo");
  EXPECT_TRUE(request.object.at(Json::json_pointer(*pod_metadata_pointer(kind))).is_object());
}

TEST(WorkloadSharedFixtureTest, PodCreateFromReplicaSet) {
  const AdmissionRequest request = decode_apiserver_fixture("pod-create-from-replicaset.json");
  ASSERT_TRUE(request.object.is_object());
  const WorkloadKind kind = workload_kind_from(request.kind.kind);
  ASSERT_EQ(kind, WorkloadKind::Pod);

  const auto refs = containers(request.object, kind);
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "app");
  EXPECT_EQ(refs[0].type, ContainerType::Regular);
  EXPECT_EQ(refs[0].pointer, "/spec/containers/0");
  expect_refs_resolve(request.object, refs);

  EXPECT_EQ(replicas(request.object, kind), std::nullopt);
  EXPECT_EQ(labels_of(request.object).value("app", ""), "demo");
  EXPECT_EQ(labels_of(request.object).value("pod-template-hash", ""), "6f8547b4f8");
  EXPECT_EQ(&request.object.at(Json::json_pointer(*pod_metadata_pointer(kind))), &request.object["metadata"]);
}

TEST(WorkloadSharedFixtureTest, PodCreateKubectlRun) {
  const AdmissionRequest request = decode_apiserver_fixture("pod-create-kubectl-run.json");
  const auto refs = containers(request.object, WorkloadKind::Pod);
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "user-pod");
  expect_refs_resolve(request.object, refs);
}

TEST(WorkloadSharedFixtureTest, DeleteHasNoObjectButOldObjectHasContainers) {
  const AdmissionRequest request = decode_apiserver_fixture("deployment-delete.json");
  EXPECT_TRUE(containers(request.object, WorkloadKind::Deployment).empty());
  EXPECT_EQ(replicas(request.object, WorkloadKind::Deployment), std::nullopt);
  const auto refs = containers(request.subject(), WorkloadKind::Deployment);
  EXPECT_FALSE(refs.empty());
  expect_refs_resolve(request.subject(), refs);
}

// --- the per-request view ------------------------------------------------------------

TEST(WorkloadViewTest, PodFromAReplicaSetPointsIntoTheRequest) {
  const AdmissionRequest request = decode_apiserver_fixture("pod-create-from-replicaset.json");
  const WorkloadView view = workload_view(request);
  EXPECT_EQ(view.kind, WorkloadKind::Pod);
  EXPECT_FALSE(view.is_scale);
  EXPECT_EQ(view.kind_name, "Pod");
  EXPECT_EQ(view.pod_spec_pointer, "/spec");
  EXPECT_EQ(view.pod_metadata_pointer, "/metadata");
  EXPECT_EQ(view.pod_spec, &request.object["spec"]);
  ASSERT_EQ(view.containers.size(), 1u);
  EXPECT_EQ(view.containers[0].node, &request.object["spec"]["containers"][0]);
  EXPECT_EQ(view.replicas, std::nullopt);
  EXPECT_TRUE(view.controller_owned) << "the ReplicaSet controller made it";
}

TEST(WorkloadViewTest, DeploymentHasItsTemplateAndReplicasAndNoController) {
  const AdmissionRequest request = decode_apiserver_fixture("deployment-create.json");
  const WorkloadView view = workload_view(request);
  EXPECT_EQ(view.kind, WorkloadKind::Deployment);
  EXPECT_EQ(view.pod_spec, &request.object["spec"]["template"]["spec"]);
  EXPECT_EQ(view.containers.size(), 1u);
  EXPECT_EQ(view.replicas, request.object.at("spec").at("replicas").get<int64_t>());
  EXPECT_FALSE(view.controller_owned);
}

TEST(WorkloadViewTest, ScaleRequestsReportTheScaledKindAndTheScaleReplicas) {
  const AdmissionRequest request = decode_apiserver_fixture("deployment-scale-update-kubectl-scale.json");
  ASSERT_EQ(request.sub_resource, "scale");
  const WorkloadView view = workload_view(request);
  EXPECT_TRUE(view.is_scale);
  EXPECT_EQ(view.kind, WorkloadKind::Deployment);
  EXPECT_EQ(view.kind_name, "Deployment");
  EXPECT_EQ(view.replicas, replicas(request.object, WorkloadKind::Scale));
  EXPECT_EQ(view.pod_spec, nullptr) << "a Scale object has no pod template";
  EXPECT_TRUE(view.containers.empty());
}

TEST(WorkloadViewTest, HorizontalPodAutoscalerNamesItsTargetKind) {
  const AdmissionRequest request = decode_apiserver_fixture("hpa-v2-create-kubectl-autoscale.json");
  const WorkloadView view = workload_view(request);
  EXPECT_EQ(view.kind, WorkloadKind::HorizontalPodAutoscaler);
  EXPECT_EQ(view.hpa_target_kind, request.object.at("spec").at("scaleTargetRef").at("kind").get<std::string>());
  EXPECT_FALSE(view.hpa_target_kind.empty());
}

TEST(WorkloadViewTest, DeleteViewsTheOldObject) {
  const AdmissionRequest request = decode_apiserver_fixture("deployment-delete.json");
  const WorkloadView view = workload_view(request);
  EXPECT_FALSE(view.containers.empty());
  EXPECT_EQ(view.pod_spec, &request.old_object["spec"]["template"]["spec"]);
  EXPECT_EQ(view.replicas, replicas(request.old_object, WorkloadKind::Deployment));
}

}  // namespace
}  // namespace sizeguard
