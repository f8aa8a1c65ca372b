// The JSON read path, measured to decide whether simdjson should replace nlohmann::json
// when decoding AdmissionReviews: parsing alone, and parsing into the nlohmann::json tree
// that the handlers read (a simdjson DOM would have to be converted, or every handler
// rewritten). Fixture: the real Pod-from-ReplicaSet review (5 KB) and a 10,000-container
// Pod (large-body worst case).
//   cmake --build build-bench --target json_read_bench && build-bench/bench/json_read_bench
#include <benchmark/benchmark.h>
#include <simdjson.h>

#include <filesystem>

#include "bench_fixtures.h"

#include "kube/json_read.h"
#include "kube/review.h"

namespace sizeguard {
namespace {

using bench::apiserver_fixture;

std::string body_for(int64_t size) {
  if (size == 0) return apiserver_fixture("pod-create-from-replicaset.json");
  Json review = Json::parse(apiserver_fixture("pod-create-from-replicaset.json"));
  Json& containers = review["request"]["object"]["spec"]["containers"];
  const Json first = containers.at(0);
  containers = Json::array();
  for (int64_t i = 0; i < size; ++i) {
    Json container = first;
    container["name"] = "c" + std::to_string(i);
    containers.push_back(std::move(container));
  }
  return review.dump();
}

void NlohmannParse(benchmark::State& state) {
  const std::string body = body_for(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(Json::parse(body));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(NlohmannParse)->Arg(0)->Arg(10'000);

void SimdjsonParseOnly(benchmark::State& state) {
  const std::string body = body_for(state.range(0));
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(body);
  for (auto _ : state) benchmark::DoNotOptimize(parser.parse(padded).error());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(SimdjsonParseOnly)->Arg(0)->Arg(10'000);

// The read path the webhook uses (kube/json_read.h): simdjson, then the nlohmann tree.
void ParseJsonReadPath(benchmark::State& state) {
  const std::string body = body_for(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(parse_json(body));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(ParseJsonReadPath)->Arg(0)->Arg(10'000);

}  // namespace
}  // namespace sizeguard
