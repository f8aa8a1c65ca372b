#include "recommender/recommend.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kube/quantity.h"
#include "kube/utc_time.h"

namespace sizeguard {
namespace {

using nlohmann::json;

double parse_quantity(const json& j, const std::string& where) {
  if (!j.is_string()) throw SnapshotError(where + ": expected a quantity string");
  std::string error;
  auto q = Quantity::parse(j.get<std::string>(), &error);
  if (!q) throw SnapshotError(where + ": bad quantity '" + j.get<std::string>() + "' (" + error + ")");
  if (q->is_negative() || q->is_zero()) throw SnapshotError(where + ": must be positive, got '" + j.get<std::string>() + "'");
  return q->as_double();
}

}  // namespace

ContainerRecommendation to_container_recommendation(const Recommendation& r) {
  ContainerRecommendation c;
  const auto milli = static_cast<int64_t>(std::ceil(r.cpu_cores * 1000 - 1e-6));
  const auto bytes = static_cast<int64_t>(std::ceil(r.memory_bytes - 1e-6));
  c.cpu = Quantity::from_milli(milli).to_string();
  c.memory = Quantity::from_int(bytes, Quantity::Format::BinarySI).to_string();
  c.cpu_cores = static_cast<double>(milli) / 1000;
  c.memory_bytes = static_cast<double>(bytes);
  c.confidence = r.confidence;
  c.cold_start = r.cold_start;
  c.explanation = r.explanation;
  return c;
}

RecommendationSnapshot make_snapshot(const std::vector<UsageSeries>& series, const std::vector<Recommendation>& recs,
                                     const std::string& model_version, int64_t generated_at) {
  RecommendationSnapshot s;
  s.model_version = model_version;
  s.generated_at = format_utc(generated_at);
  for (size_t i = 0; i < series.size() && i < recs.size(); ++i) {
    ContainerRecommendation c = to_container_recommendation(recs[i]);
    c.oom_killed = series[i].oom_killed;
    // The recent peak lets the webhook keep memory at or above what was really used.
    const auto& samples = series[i].samples;
    if (!samples.empty()) {
      const int64_t since = samples.back().timestamp - kMemoryPeakWindowSeconds;
      double peak = 0;
      for (auto it = samples.rbegin(); it != samples.rend() && it->timestamp >= since; ++it) peak = std::max(peak, it->memory_bytes);
      if (peak > 0) c.memory_peak_bytes = std::ceil(peak / 1048576 - 1e-9) * 1048576;  // Mi steps, rounded up
    }
    s.recommendations[series[i].key.to_string()] = std::move(c);
  }
  return s;
}

std::string snapshot_to_json(const RecommendationSnapshot& snapshot) {
  json recs = json::object();
  for (const auto& [key, r] : snapshot.recommendations) {
    json ex = json::array();
    for (const auto& c : r.explanation)
      ex.push_back({{"feature", c.feature}, {"contribution", std::round(c.contribution * 1e4) / 1e4}});
    recs[key] = {{"cpu", r.cpu}, {"memory", r.memory}, {"confidence", r.confidence},
                 {"coldStart", r.cold_start}, {"explanation", ex}};
    if (r.memory_peak_bytes > 0) {
      recs[key]["memoryPeak"] = Quantity::from_int(static_cast<int64_t>(r.memory_peak_bytes), Quantity::Format::BinarySI).to_string();
    }
    if (r.oom_killed) recs[key]["oomKilled"] = true;
  }
  json j = {{"modelVersion", snapshot.model_version},
            {"generatedAt", snapshot.generated_at},
            {"recommendations", recs}};
  return j.dump(2) + "\n";
}

void save_recommendations(const RecommendationSnapshot& snapshot, const std::filesystem::path& path) {
  // Write a temporary file and rename it so a reader never sees a partial snapshot.
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw SnapshotError(tmp + ": cannot open for writing");
    out << snapshot_to_json(snapshot);
    if (!out.flush()) throw SnapshotError(tmp + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw SnapshotError(path.string() + ": cannot replace: " + ec.message());
}

RecommendationSnapshot parse_recommendations(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw SnapshotError(source + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw SnapshotError(source + ": expected a JSON object");
  RecommendationSnapshot s;
  auto string_field = [&](const char* name) {
    if (!j.contains(name) || !j[name].is_string()) throw SnapshotError(source + ": missing string field '" + name + "'");
    return j[name].get<std::string>();
  };
  s.model_version = string_field("modelVersion");
  s.generated_at = string_field("generatedAt");
  if (!j.contains("recommendations") || !j["recommendations"].is_object())
    throw SnapshotError(source + ": missing object field 'recommendations'");
  for (const auto& [key, r] : j["recommendations"].items()) {
    const std::string where = source + ": recommendations[\"" + key + "\"]";
    if (std::count(key.begin(), key.end(), '/') != 3)
      throw SnapshotError(where + ": key must be namespace/kind/name/container");
    if (!r.is_object()) throw SnapshotError(where + ": expected an object");
    ContainerRecommendation c;
    for (const char* f : {"cpu", "memory"})
      if (!r.contains(f)) throw SnapshotError(where + ": missing '" + f + "'");
    c.cpu_cores = parse_quantity(r["cpu"], where + ".cpu");
    c.memory_bytes = parse_quantity(r["memory"], where + ".memory");
    c.cpu = r["cpu"].get<std::string>();
    c.memory = r["memory"].get<std::string>();
    if (r.contains("confidence")) {
      if (!r["confidence"].is_number() || r["confidence"].get<double>() < 0 || r["confidence"].get<double>() > 1)
        throw SnapshotError(where + ".confidence: expected a number in [0, 1]");
      c.confidence = r["confidence"].get<double>();
    }
    if (r.contains("coldStart")) {
      if (!r["coldStart"].is_boolean()) throw SnapshotError(where + ".coldStart: expected true or false");
      c.cold_start = r["coldStart"].get<bool>();
    }
    if (r.contains("memoryPeak")) c.memory_peak_bytes = parse_quantity(r["memoryPeak"], where + ".memoryPeak");
    if (r.contains("oomKilled")) {
      if (!r["oomKilled"].is_boolean()) throw SnapshotError(where + ".oomKilled: expected true or false");
      c.oom_killed = r["oomKilled"].get<bool>();
    }
    if (r.contains("explanation")) {
      if (!r["explanation"].is_array()) throw SnapshotError(where + ".explanation: expected an array");
      for (const auto& e : r["explanation"]) {
        if (!e.is_object() || !e.contains("feature") || !e["feature"].is_string() || !e.contains("contribution") ||
            !e["contribution"].is_number())
          throw SnapshotError(where + ".explanation: entries need \"feature\" (string) and \"contribution\" (number)");
        c.explanation.push_back({e["feature"].get<std::string>(), e["contribution"].get<double>()});
      }
    }
    s.recommendations[key] = std::move(c);
  }
  return s;
}

RecommendationSnapshot load_recommendations(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw SnapshotError(path.string() + ": cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_recommendations(buf.str(), path.string());
}

}  // namespace sizeguard
