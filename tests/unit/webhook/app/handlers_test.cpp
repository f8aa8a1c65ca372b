// The validating handler end to end without HTTP: policies + cluster state -> the
// AdmissionResponse, the decision metrics and the audit line.
#include "webhook/app/handlers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "policies/file_cluster_state.h"
#include "recommender/model.h"
#include "recommender/recommend.h"
#include "policies/loader.h"
#include "support/fixtures.h"
#include "webhook/devcerts.h"
#include "webhook/server.h"

namespace sizeguard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<const PolicySet> policy_set(const std::string& yaml) {
  PolicyLoad load = parse_policies(yaml, "h.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

const char* kPolicies = R"(
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: require-cpu}
spec:
  resources: {required: {requests: [cpu]}}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: floor}
spec:
  mode: warn
  replicas: {min: 3}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: cap}
spec:
  mode: audit
  replicas: {max: 1}
)";

class Handlers : public ::testing::Test {
 protected:
  void SetUp() override {
    describe_handler_metrics(metrics_);
    context_.policies = [set = policy_set(kPolicies)] { return set; };
    context_.cluster_state = &state_;
    context_.metrics = &metrics_;
    context_.audit = &audit_;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  AdmissionRequest fixture(const std::string& name) {
    auto decoded = decode_admission_review(test::load_apiserver_fixture(name));
    return std::get<AdmissionRequest>(decoded);
  }

  std::filesystem::path dir_ = make_private_temp_directory("sizeguard-handlers");
  FileClusterState state_{std::vector<Json>{
      {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "webhook-test"}}}}}};
  Metrics metrics_;
  AuditLog audit_{(dir_ / "audit.log").string()};
  AdmissionContext context_;
};

TEST_F(Handlers, DenialMessagesStartWithTheirReasonCodesInCauseOrder) {
  Decision decision;
  auto finding = [](std::string reason, std::string message, bool denies) {
    Finding f;
    f.policy = "p";
    f.rule = "r";
    f.mode = denies ? Mode::Enforce : Mode::Warn;
    f.cause = {std::move(reason), std::move(message), ""};
    f.denies = denies;
    return f;
  };
  decision.findings = {finding("BelowFloor", "below the floor; minAllowedReplicas=2 (policy p)", true),
                       finding("MissingLimit", "no cpu limit (policy q)", false),
                       finding("MissingChangeReason", "needs a reason; annotation=sizeguard.io/change-reason (policy p)", true),
                       finding("BelowFloor", "another floor (policy p)", true)};
  const AdmissionRequest request = fixture("validate-deployment-scale-update-by-serviceaccount.json");
  AdmissionResponse response = to_admission_response(request, decision);
  ASSERT_TRUE(response.status);
  EXPECT_EQ(response.status->message,
            "[BelowFloor, MissingChangeReason] sizeguard denied deployments/scale capture/web: below the floor; "
            "minAllowedReplicas=2 (policy p); needs a reason; annotation=sizeguard.io/change-reason (policy p); "
            "another floor (policy p)");
  ASSERT_EQ(response.status->causes.size(), 3u);
  EXPECT_EQ(response.status->causes[0].reason, "BelowFloor");
  EXPECT_THAT(response.warnings, ElementsAre("sizeguard: [warn] MissingLimit: no cpu limit (policy q)"));
}

TEST_F(Handlers, EnforceDeniesWarnWarnsAuditAnnotates) {
  // The real Deployment CREATE: 2 replicas, one container without requests.
  const AdmissionRequest request = fixture("deployment-create.json");
  AdmissionResponse response = validate(request, context_);
  EXPECT_EQ(response.uid, request.uid);
  EXPECT_FALSE(response.allowed);
  ASSERT_TRUE(response.status);
  EXPECT_EQ(response.status->code, 403);
  EXPECT_EQ(response.status->reason, "Forbidden");
  EXPECT_EQ(response.status->message,
            "[MissingRequest] sizeguard denied Deployment webhook-test/demo: container app has no cpu request (policy require-cpu)");
  ASSERT_EQ(response.status->causes.size(), 1u);
  EXPECT_EQ(response.status->causes[0].reason, "MissingRequest");
  EXPECT_EQ(response.status->causes[0].field, "spec.template.spec.containers[0].resources.requests.cpu");
  EXPECT_THAT(response.warnings,
              ElementsAre("sizeguard: [warn] ReplicasBelowMin: spec.replicas is 2, below the minimum of 3 (policy floor)"));
  ASSERT_EQ(response.audit_annotations.count("replicas-cap"), 1u);
  EXPECT_EQ(response.audit_annotations.at("replicas-cap"),
            "ReplicasAboveMax: spec.replicas is 2, above the maximum of 1 (policy cap)");

  // The wire form carries the causes and warnings.
  Json wire = Json::parse(encode_admission_review(response, request.api_version));
  EXPECT_EQ(wire["response"]["status"]["details"]["causes"][0]["reason"], "MissingRequest");
  EXPECT_EQ(wire["response"]["warnings"].size(), 1u);

  const std::string rendered = metrics_.render();
  EXPECT_THAT(rendered, HasSubstr("sizeguard_policy_decisions_total{policy=\"require-cpu\",rule=\"resources\",mode=\"enforce\",result=\"deny\"} 1"));
  EXPECT_THAT(rendered, HasSubstr("sizeguard_policy_decisions_total{policy=\"floor\",rule=\"replicas\",mode=\"warn\",result=\"warn\"} 1"));
  EXPECT_THAT(rendered, HasSubstr("sizeguard_policy_decisions_total{policy=\"cap\",rule=\"replicas\",mode=\"audit\",result=\"audit\"} 1"));

  std::ifstream log(dir_ / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  Json record = Json::parse(line);
  EXPECT_EQ(record["webhook"], "validate");
  EXPECT_EQ(record["uid"], request.uid);
  EXPECT_EQ(record["allowed"], false);
  EXPECT_EQ(record["user"], "kubernetes-admin");
  ASSERT_EQ(record["findings"].size(), 3u);
  EXPECT_EQ(record["findings"][0]["reason"], "MissingRequest");
  EXPECT_EQ(record["findings"][0]["denies"], true);
  EXPECT_EQ(record["findings"][2]["mode"], "audit");
  EXPECT_FALSE(std::getline(log, line)) << "one line per decision";
}

TEST_F(Handlers, DeleteAndUnmatchedRequestsPassQuietly) {
  AdmissionResponse response = validate(fixture("pod-delete-kubectl.json"), context_);
  EXPECT_TRUE(response.allowed);
  EXPECT_FALSE(response.status);
  EXPECT_TRUE(response.warnings.empty());
  EXPECT_TRUE(response.audit_annotations.empty());
}

TEST_F(Handlers, WithoutPoliciesEverythingIsAllowed) {
  AdmissionContext empty;
  AdmissionResponse response = validate(fixture("deployment-create.json"), empty);
  EXPECT_TRUE(response.allowed);
  EXPECT_FALSE(response.status);
}

TEST(AuditLog, RejectsAnUnwritableDestination) {
  EXPECT_THROW(AuditLog("/nonexistent-dir/audit.log"), std::runtime_error);
  AuditLog off("");
  EXPECT_FALSE(off.enabled());
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

// Hostile objects: answers stay well-formed and bounded.
TEST(HostileInput, APodWithTenThousandContainersGetsABoundedDenial) {
  auto set = policy_set(kPolicies);
  FileClusterState state(std::vector<Json>{{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "x"}}}}});
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &state;
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "big";
  r.kind = {"", "v1", "Pod"};
  r.resource = {"", "v1", "pods"};
  r.namespace_ = "x";
  r.name = "big";
  r.object = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", {{"name", "big"}, {"namespace", "x"}}}, {"spec", {{"containers", Json::array()}}}};
  for (int i = 0; i < 10000; ++i) r.object["spec"]["containers"].push_back({{"name", "c" + std::to_string(i)}, {"image", "x"}});
  const auto dir = make_private_temp_directory("sizeguard-handlers");
  AuditLog audit((dir / "audit.log").string());
  context.audit = &audit;
  AdmissionResponse response = validate(r, context);
  ASSERT_FALSE(response.allowed);
  EXPECT_EQ(response.status->causes.size(), 101u);
  EXPECT_EQ(response.status->causes.back().reason, "TooManyViolations");
  EXPECT_THAT(response.status->message, HasSubstr("and 9990 more violations"));
  EXPECT_EQ(response.status->message.rfind("[MissingRequest] sizeguard denied Pod x/big: ", 0), 0u)
      << "one code, once, however many violations: " << response.status->message.substr(0, 200);
  EXPECT_LT(encode_admission_review(response, r.api_version).size(), 64u * 1024);

  // The audit line is bounded too: the first 200 findings, the rest counted.
  std::ifstream log(dir / "audit.log");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  EXPECT_LT(line.size(), 128u * 1024);
  const Json record = Json::parse(line);
  ASSERT_EQ(record["findings"].size(), 200u);
  EXPECT_EQ(record["findings"][0]["field"], "spec.containers[0].resources.requests.cpu");
  EXPECT_EQ(record["omittedFindings"], 10000 - 200);  // one per container
  std::filesystem::remove_all(dir);
}

// Up to the depth the apiserver itself accepts (Go's encoding/json: 10000 levels), a review
// is decided; deeper is refused at decode (ReviewDecode.NestingDeeperThan...), since a
// million levels overflowed the stack in /mutate's recursive copies.
TEST(HostileInput, DeeplyNestedJsonDecodesAndIsAnsweredWithoutRecursion) {
  auto body_nested = [](size_t arrays) {
    return R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{"username":"a"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"x"},"spec":{"containers":[]},"x":)" +
           std::string(arrays, '[') + std::string(arrays, ']') + "}}}";
  };
  EXPECT_TRUE(std::holds_alternative<DecodeError>(decode_admission_review(body_nested(100000))));
  auto decoded = decode_admission_review(body_nested(9997));
  ASSERT_TRUE(std::holds_alternative<AdmissionRequest>(decoded));
  auto set = policy_set(kPolicies);
  FileClusterState state(std::vector<Json>{});
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &state;
  AdmissionResponse response = validate(std::get<AdmissionRequest>(decoded), context);
  EXPECT_TRUE(response.allowed);
  EXPECT_NE(encode_admission_review(response, "admission.k8s.io/v1").find("\"uid\":\"u\""), std::string::npos);
}

// Every value of every field of the object (and old object) replaced by each JSON type in turn (a body the
// decoder accepts, since it only checks the envelope): /mutate and /validate answer with
// a decision (200) or a Status 400, never a 500 from a type error deep in a handler. Run
// with the example policies, the quickstart cluster state, recommendations and the model,
// as admission_fuzz does, so right-sizing patches too.
TEST(HostileInput, EveryFieldOfEveryTypeGetsAWellFormedAnswer) {
  const std::filesystem::path source = SIZEGUARD_SOURCE_DIR;
  PolicyLoad load = load_policies(source / "policies/examples");
  ASSERT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  std::shared_ptr<const PolicySet> policies = set;
  FileClusterState state((source / "deploy/quickstart/cluster-state.yaml").string());
  auto recommendations = std::make_shared<const RecommendationSnapshot>(parse_recommendations(
      R"({"modelVersion":"t","generatedAt":"2026-11-23T00:00:00Z","recommendations":{)"
      R"("webhook-test/Deployment/demo/app":{"cpu":"250m","memory":"300Mi","confidence":0.9,"coldStart":false,"explanation":[]},)"
      R"("webhook-test/Pod/demo/demo":{"cpu":"1500m","memory":"2Gi","confidence":0.4,"coldStart":false,"explanation":[]}}})"));
  const QuantileModel model = QuantileModel::load(source / "recommender/models/default");
  auto metadata = std::make_shared<const ModelMetadata>(model.metadata());
  AdmissionContext context;
  context.policies = [&] { return policies; };
  context.cluster_state = &state;
  context.clock = [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1795435200)); };
  context.rightsizing = [&] { return RightsizingInputs{recommendations, metadata, model.version()}; };

  const std::vector<Json> replacements = {5, -1.5, "x", Json::array({1}), Json::object(), nullptr, true};
  std::vector<std::string> problems;
  int reviews = 0;
  for (const char* name : {"pod-create-from-replicaset.json", "deployment-create.json", "pod-create-kubectl-run.json",
                           "cronjob-create.json", "hpa-v2-create-kubectl-autoscale.json", "deployment-update.json",
                           "deployment-scale-update-kubectl-scale.json", "pod-create-by-job-controller.json"}) {
    const Json review = Json::parse(test::load_apiserver_fixture(name));
    for (const char* side : {"object", "oldObject"}) {
      if (!review["request"].contains(side) || !review["request"][side].is_object()) continue;
      const Json flat = review["request"][side].flatten();
      // Every path to a value and to each of its parents.
      std::set<std::string> paths;
      for (const auto& [leaf, unused] : flat.items()) {
        for (std::string path = leaf; !path.empty(); path = path.substr(0, path.rfind('/'))) paths.insert(path);
      }
      for (const std::string& path : paths) {
        for (const Json& value : replacements) {
          Json changed = review;
          changed["request"][side][Json::json_pointer(path)] = value;
          const std::string body = changed.dump();
          for (Webhook webhook : {Webhook::Mutate, Webhook::Validate}) {
            const AdmissionHandler handler = [&](const AdmissionRequest& r) {
              return webhook == Webhook::Mutate ? mutate(r, context) : validate(r, context);
            };
            const HttpAnswer answer = handle_admission(webhook, body, handler, {});
            ++reviews;
            if (answer.status != 200 && answer.status != 400) {
              problems.push_back(std::string(name) + " " + side + path + " = " + value.dump() + " /" +
                                 std::string(to_string(webhook)) + ": " + std::to_string(answer.status) + " " + answer.body);
            }
          }
        }
      }
    }
  }
  EXPECT_GT(reviews, 1000);
  EXPECT_THAT(problems, ::testing::IsEmpty());
}

}  // namespace
}  // namespace sizeguard
