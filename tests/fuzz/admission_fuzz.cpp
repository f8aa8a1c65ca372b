// The review path end to end, as `serve` runs it: body bytes -> handle_admission with the
// real mutate or validate handler (example policies, the quickstart cluster state, a
// recommendations snapshot, the bundled model) -> HTTP status and body. The first input
// byte picks the webhook (even: mutate, odd: validate); the rest is the body.
//
// For any input: a body that does not decode answers 400 with a metav1.Status; one that
// does answers 200 with an AdmissionReview in the request's apiVersion and uid, whose
// patch (mutate only) is base64 of a JSONPatch array that applies to the object and leaves
// an object. The handlers must not throw (a 500 would make the apiserver apply the
// failurePolicy to a request it sent correctly), so 500 counts as a failure too.
#include <openssl/evp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "recommender/model.h"
#include "recommender/recommend.h"
#include "webhook/app/handlers.h"
#include "kube/metrics.h"
#include "webhook/server.h"

namespace sizeguard {
namespace {

namespace fs = std::filesystem;

// Built once: the same inputs the quickstart serves with.
struct World {
  std::shared_ptr<const PolicySet> policies;
  std::unique_ptr<FileClusterState> cluster;
  std::shared_ptr<const RecommendationSnapshot> recommendations;
  std::shared_ptr<const ModelMetadata> model;
  std::string model_version;
  Metrics metrics;
  AdmissionContext context;
};

World* world = nullptr;

[[noreturn]] void violation(const char* what, std::string_view detail) {
  std::fprintf(stderr, "admission_fuzz: invariant violated: %s\n%.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

void check(bool ok, const char* what, std::string_view detail) {
  if (!ok) violation(what, detail);
}

std::string base64_decode(const std::string& text, bool& ok) {
  std::string out((text.size() + 3) / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  ok = n >= 0 && text.size() % 4 == 0;
  if (!ok) return {};
  size_t size = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as decoded zero bytes.
  if (!text.empty() && text.back() == '=') --size;
  if (text.size() > 1 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

void check_status_body(const HttpAnswer& answer) {
  const Json body = Json::parse(answer.body, nullptr, false);
  check(body.is_object() && body.value("kind", "") == "Status" && body.value("apiVersion", "") == "v1" &&
            body.value("status", "") == "Failure" && body.value("code", 0) == answer.status &&
            !body.value("message", "").empty(),
        "an error answer is a metav1.Status with the HTTP code and a message", answer.body);
}

void check_review(const HttpAnswer& answer, const AdmissionRequest& request, Webhook webhook) {
  const Json review = Json::parse(answer.body, nullptr, false);
  check(review.is_object() && review.value("kind", "") == "AdmissionReview" &&
            review.value("apiVersion", "") == request.api_version,
        "a 200 answer is an AdmissionReview in the request's apiVersion", answer.body);
  const auto response = review.find("response");
  check(response != review.end() && response->is_object(), "the answer has a response object", answer.body);
  check(response->value("uid", "") == request.uid, "response.uid is the request's uid", answer.body);
  const auto allowed = response->find("allowed");
  check(allowed != response->end() && allowed->is_boolean(), "response.allowed is a boolean", answer.body);
  if (!allowed->get<bool>()) {
    const auto status = response->find("status");
    check(status != response->end() && status->is_object() && status->value("code", 0) >= 400,
          "a denial carries a status with an error code", answer.body);
  }
  const auto patch = response->find("patch");
  if (patch == response->end()) {
    check(!response->contains("patchType"), "patchType only with a patch", answer.body);
    return;
  }
  check(webhook == Webhook::Mutate, "only mutate answers carry a patch", answer.body);
  check(response->value("patchType", "") == "JSONPatch" && patch->is_string(), "the patch is a base64 JSONPatch",
        answer.body);
  bool base64_ok = false;
  const std::string decoded = base64_decode(patch->get<std::string>(), base64_ok);
  check(base64_ok, "the patch is valid base64", answer.body);
  const Json operations = Json::parse(decoded, nullptr, false);
  check(operations.is_array() && !operations.empty(), "the patch is a non-empty JSON array", decoded);
  Json patched;
  try {
    patched = request.object.patch(operations);
  } catch (const Json::exception& e) {
    violation("the patch applies to the request's object", decoded + "\n" + e.what());
  }
  check(patched.is_object(), "the patched object is still a JSON object", decoded);
  // The apiserver round-trips the patched object through JSON before admitting it.
  check(Json::parse(patched.dump(), nullptr, false) == patched, "the patched object serializes to valid JSON",
        decoded);
}

}  // namespace
}  // namespace sizeguard

using namespace sizeguard;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const fs::path source = SIZEGUARD_SOURCE_DIR;
  world = new World;
  PolicyLoad load = load_policies(source / "policies/examples");
  if (!load.ok() || load.policies.empty()) {
    std::fprintf(stderr, "admission_fuzz: example policies did not load\n");
    std::abort();
  }
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  world->policies = std::move(set);
  world->cluster = std::make_unique<FileClusterState>((source / "deploy/quickstart/cluster-state.yaml").string());
  // Recommendations for the workloads of the apiserver fixtures, so /mutate patches.
  world->recommendations = std::make_shared<const RecommendationSnapshot>(parse_recommendations(
      R"({"modelVersion":"fuzz","generatedAt":"2026-11-23T00:00:00Z","recommendations":{)"
      R"("webhook-test/Deployment/demo/app":{"cpu":"250m","memory":"300Mi","confidence":0.9,"coldStart":false,"explanation":[]},)"
      R"("webhook-test/Pod/demo/demo":{"cpu":"1500m","memory":"2Gi","confidence":0.4,"coldStart":false,"explanation":[]}}})"));
  const QuantileModel model = QuantileModel::load(source / "recommender/models/default");
  world->model = std::make_shared<const ModelMetadata>(model.metadata());
  world->model_version = model.version();

  describe_handler_metrics(world->metrics);
  AdmissionContext& context = world->context;
  context.policies = [] { return world->policies; };
  context.cluster_state = world->cluster.get();
  // A fixed clock (2026-11-23T12:00:00Z): freeze windows must not make runs differ.
  context.clock = [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1795435200)); };
  context.rightsizing = [] { return RightsizingInputs{world->recommendations, world->model, world->model_version}; };
  context.metrics = &world->metrics;
  // No report or audit log: they would grow with every input.
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Webhook webhook = data[0] % 2 == 0 ? Webhook::Mutate : Webhook::Validate;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const AdmissionHandler handler = [webhook](const AdmissionRequest& request) {
    return webhook == Webhook::Mutate ? mutate(request, world->context) : validate(request, world->context);
  };
  bool observed = false;
  const HttpAnswer answer = handle_admission(webhook, body, handler, [&](const DecisionRecord& record) {
    observed = true;
    (void)decision_label(record);
  });
  check(observed, "every review is observed once", answer.body);
  check(answer.content_type == "application/json", "answers are JSON", answer.content_type);

  const auto decoded = decode_admission_review(body);
  const auto* request = std::get_if<AdmissionRequest>(&decoded);
  if (request == nullptr || request->uid.empty()) {
    check(answer.status == 400, "a body that does not decode answers 400", answer.body);
    check_status_body(answer);
    return 0;
  }
  if (answer.status == 500) violation("the handler does not throw", answer.body);
  check(answer.status == 200, "a decoded review answers 200", answer.body);
  check_review(answer, *request, webhook);
  return 0;
}
