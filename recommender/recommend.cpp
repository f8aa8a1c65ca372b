#include "recommender/recommend.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kube/quantity.h"
#include "kube/utc_time.h"
#include "recommender/evaluate.h"

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

const char* const kSources[] = {"model", "blend", "baseline"};

json source_to_json(const ShippedSource& s) {
  json j = {{"source", s.source}, {"margin", std::round(s.margin * 1e4) / 1e4}, {"baselineSeries", s.baseline_series}};
  if (s.gated)
    j["slackAtMatchedRisk"] = {{"model", std::round(s.model_slack * 1e6) / 1e6},
                               {"blend", std::round(s.blend_slack * 1e6) / 1e6},
                               {"baseline", std::round(s.baseline_slack * 1e6) / 1e6}};
  return j;
}

ShippedSource parse_source(const json& j, const std::string& where) {
  if (!j.is_object()) throw SnapshotError(where + ": expected an object");
  ShippedSource s;
  if (!j.contains("source") || !j["source"].is_string() ||
      std::find(std::begin(kSources), std::end(kSources), j["source"].get<std::string>()) == std::end(kSources))
    throw SnapshotError(where + ".source: expected \"model\", \"blend\" or \"baseline\"");
  s.source = j["source"].get<std::string>();
  if (j.contains("margin")) {
    if (!j["margin"].is_number() || !(j["margin"].get<double>() > 0)) throw SnapshotError(where + ".margin: expected a positive number");
    s.margin = j["margin"].get<double>();
  }
  if (j.contains("baselineSeries")) {
    if (!j["baselineSeries"].is_number_unsigned()) throw SnapshotError(where + ".baselineSeries: expected a count");
    s.baseline_series = j["baselineSeries"].get<size_t>();
  }
  if (j.contains("slackAtMatchedRisk")) {
    const json& slack = j["slackAtMatchedRisk"];
    for (const char* name : kSources)
      if (!slack.is_object() || !slack.contains(name) || !slack[name].is_number())
        throw SnapshotError(where + ".slackAtMatchedRisk: expected numbers model, blend and baseline");
    s.gated = true;
    s.model_slack = slack["model"].get<double>(), s.blend_slack = slack["blend"].get<double>();
    s.baseline_slack = slack["baseline"].get<double>();
  }
  return s;
}

json decision_to_json(const SnapshotDecision& d) {
  json j = {{"model", d.model}, {"cpu", source_to_json(d.cpu)}, {"memory", source_to_json(d.memory)},
            {"coldStart", d.cold_start}, {"memoryAtRequest", d.memory_at_request}};
  if (!d.gate_days.empty()) j["gateDays"] = d.gate_days;
  return j;
}

}  // namespace

SnapshotDecision describe_decision(const ModelMetadata& m, const RecommendationPolicy& policy,
                                   const std::vector<Recommendation>& recs, const std::vector<UsageSeries>& series,
                                   std::string model_choice) {
  SnapshotDecision d;
  d.model = std::move(model_choice);
  auto shipped = [&](const ModelMetadata::Gate& gate, bool from_model, bool blend, double margin, double blend_margin,
                     double baseline_margin) {
    ShippedSource s;
    s.source = !from_model ? "baseline" : blend ? "blend" : "model";
    s.margin = !from_model ? baseline_margin : blend ? blend_margin : margin;
    // The gate's slacks explain the choice only when the policy followed it (not forced to vpa).
    s.gated = gate.decided && s.source == gate_name(gate);
    if (s.gated) s.model_slack = gate.model_slack, s.blend_slack = gate.blend_slack, s.baseline_slack = gate.baseline_slack;
    return s;
  };
  d.cpu = shipped(m.cpu_gate, policy.cpu_from_model, policy.cpu_blend, policy.margin, policy.blend_cpu_margin,
                  policy.baseline_cpu_margin);
  d.memory = shipped(m.memory_gate, policy.memory_from_model, policy.memory_blend,
                     policy.memory_margin > 0 ? policy.memory_margin : policy.margin, policy.blend_memory_margin,
                     policy.baseline_memory_margin);
  for (const auto& r : recs) {
    if (r.cold_start) {
      ++d.cold_start;
      continue;
    }
    d.cpu.baseline_series += policy.cpu_from_model && !r.cpu_from_model;
    d.memory.baseline_series += policy.memory_from_model && !r.memory_from_model;
    d.memory_at_request += r.memory_at_request;
  }
  if ((d.cpu.gated || d.memory.gated) && m.gate_first_day > 0 && !series.empty()) {
    const int64_t day1 = day_one(series);
    auto date = [&](int day) { return format_day(day_start(day1, day)); };
    d.gate_days = date(m.gate_first_day) + ".." + date(m.gate_last_day);
  }
  return d;
}

std::vector<std::string> decision_summary(const SnapshotDecision& d) {
  std::vector<std::string> lines;
  for (auto [name, s] : {std::pair{"cpu", &d.cpu}, std::pair{"memory", &d.memory}}) {
    char margin[32];
    std::snprintf(margin, sizeof margin, " x%.2f", s->margin);
    std::string line = std::string(name) + ": " + (s->source == "baseline" ? "vpa baseline" : s->source) + margin;
    if (s->gated)
      line += " (slack at matched risk" + (d.gate_days.empty() ? "" : " on " + d.gate_days) + ": model " +
              pct(s->model_slack) + ", blend " + pct(s->blend_slack) + ", vpa " + pct(s->baseline_slack) + ")";
    else
      line += " (not gated)";
    if (s->baseline_series) line += "; " + std::to_string(s->baseline_series) + " series on vpa (out of distribution)";
    if (s == &d.memory && d.memory_at_request)
      line += "; " + std::to_string(d.memory_at_request) + " series held at their request (new or back after a pause)";
    lines.push_back(std::move(line));
  }
  return lines;
}

json snapshot_summary_json(const RecommendationSnapshot& snapshot) {
  json j = {{"modelVersion", snapshot.model_version},
            {"generatedAt", snapshot.generated_at},
            {"recommendations", snapshot.recommendations.size()}};
  if (snapshot.decision) j["decision"] = decision_to_json(*snapshot.decision);
  return j;
}

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
  if (snapshot.decision) j["decision"] = decision_to_json(*snapshot.decision);
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
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
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
  if (j.contains("decision")) {
    const json& d = j["decision"];
    if (!d.is_object()) throw SnapshotError(source + ": decision: expected an object");
    SnapshotDecision decision;
    if (d.contains("model") && d["model"].is_string()) decision.model = d["model"].get<std::string>();
    if (d.contains("gateDays") && d["gateDays"].is_string()) decision.gate_days = d["gateDays"].get<std::string>();
    for (auto [name, target] : {std::pair{"cpu", &decision.cpu}, std::pair{"memory", &decision.memory}}) {
      if (!d.contains(name)) throw SnapshotError(source + ": decision: missing '" + name + "'");
      *target = parse_source(d[name], source + ": decision." + name);
    }
    if (d.contains("coldStart") && d["coldStart"].is_number_unsigned()) decision.cold_start = d["coldStart"].get<size_t>();
    if (d.contains("memoryAtRequest") && d["memoryAtRequest"].is_number_unsigned())
      decision.memory_at_request = d["memoryAtRequest"].get<size_t>();
    s.decision = std::move(decision);
  }
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
