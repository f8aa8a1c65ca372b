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

#include "webhook/review.h"

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

Json to_nlohmann(simdjson::dom::element element) {
  switch (element.type()) {
    case simdjson::dom::element_type::OBJECT: {
      Json object = Json::object();
      for (auto field : simdjson::dom::object(element)) object.emplace(std::string(field.key), to_nlohmann(field.value));
      return object;
    }
    case simdjson::dom::element_type::ARRAY: {
      Json array = Json::array();
      for (auto item : simdjson::dom::array(element)) array.push_back(to_nlohmann(item));
      return array;
    }
    case simdjson::dom::element_type::STRING: return Json(std::string(std::string_view(element)));
    case simdjson::dom::element_type::INT64: return Json(int64_t(element));
    case simdjson::dom::element_type::UINT64: return Json(uint64_t(element));
    case simdjson::dom::element_type::DOUBLE: return Json(double(element));
    case simdjson::dom::element_type::BOOL: return Json(bool(element));
    case simdjson::dom::element_type::NULL_VALUE: return Json(nullptr);
  }
  return Json();
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

// What the read path would cost with simdjson: copy into padding, parse, build the tree.
void SimdjsonIntoNlohmann(benchmark::State& state) {
  const std::string body = body_for(state.range(0));
  simdjson::dom::parser parser;
  for (auto _ : state) {
    const simdjson::padded_string padded(body);
    benchmark::DoNotOptimize(to_nlohmann(parser.parse(padded).value()));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(SimdjsonIntoNlohmann)->Arg(0)->Arg(10'000);

}  // namespace
}  // namespace sizeguard
