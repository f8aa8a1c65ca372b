// Per-review costs on the admission path, with the real apiserver fixtures and the example
// policies: AdmissionReview decode, Quantity parse/format, policy evaluation, right-sizing
// (patch building) and answer encoding.
//   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_BENCH=ON
//   cmake --build build-bench --target webhook_bench && build-bench/bench/webhook_bench
#include <benchmark/benchmark.h>

#include <filesystem>

#include "bench_fixtures.h"

#include "policies/engine.h"
#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "webhook/app/handlers.h"
#include "rightsizing/rightsizing.h"
#include "kube/quantity.h"
#include "kube/review.h"

namespace sizeguard {
namespace {

using bench::apiserver_fixture;

AdmissionRequest decoded(const std::string& name) { return std::get<AdmissionRequest>(decode_admission_review(apiserver_fixture(name))); }

std::shared_ptr<const PolicySet> examples() {
  PolicyLoad load = load_policies(std::filesystem::path(SIZEGUARD_SOURCE_DIR_BENCH) / "policies/examples");
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

void Decode(benchmark::State& state) {
  const std::string body = apiserver_fixture("pod-create-from-replicaset.json");
  for (auto _ : state) benchmark::DoNotOptimize(decode_admission_review(body));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(Decode);

void QuantityParseFormat(benchmark::State& state) {
  const char* inputs[] = {"500m", "1.5Gi", "128974848", "1e3", "100.035k", "2"};
  for (auto _ : state) {
    for (const char* text : inputs) benchmark::DoNotOptimize(Quantity::parse(text)->to_string());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * 6));
}
BENCHMARK(QuantityParseFormat);

void ValidateWithExamplePolicies(benchmark::State& state) {
  const auto set = examples();
  FileClusterState cluster(std::filesystem::path(SIZEGUARD_SOURCE_DIR_BENCH) / "deploy/quickstart/cluster-state.yaml");
  AdmissionContext context;
  context.policies = [set] { return set; };
  context.cluster_state = &cluster;
  const AdmissionRequest request = decoded("deployment-create.json");
  for (auto _ : state) benchmark::DoNotOptimize(validate(request, context));
}
BENCHMARK(ValidateWithExamplePolicies);

void RightsizePodWithPatch(benchmark::State& state) {
  const auto set = examples();
  FileClusterState cluster(std::filesystem::path(SIZEGUARD_SOURCE_DIR_BENCH) / "deploy/quickstart/cluster-state.yaml");
  auto snapshot = std::make_shared<const RecommendationSnapshot>(parse_recommendations(
      R"({"modelVersion":"bench","generatedAt":"2026-11-23T00:00:00Z","recommendations":{"webhook-test/Deployment/demo/app":)"
      R"({"cpu":"250m","memory":"300Mi","confidence":0.9,"coldStart":false,"explanation":[]}}})"));
  const AdmissionRequest request = decoded("pod-create-from-replicaset.json");
  for (auto _ : state) {
    auto result = rightsize(request, *set, cluster, RightsizingInputs{snapshot, nullptr, ""}, EvaluationOptions{});
    benchmark::DoNotOptimize(encode_admission_review(AdmissionResponse{request.uid, true, result.patch, {}, result.warnings, {}},
                                                     request.api_version));
  }
}
BENCHMARK(RightsizePodWithPatch);

}  // namespace
}  // namespace sizeguard
