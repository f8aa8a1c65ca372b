#include "recommender/model.h"
#include "recommender/baselines.h"
#include "kube/utc_time.h"

#include <xgboost/c_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace sizeguard {
namespace {

using nlohmann::json;

void check(int rc, const char* what) {
  if (rc != 0) {
    const char* err = XGBGetLastError();
    throw ModelError(std::string("xgboost ") + what + ": " + (err ? err : "unknown error"), false);
  }
}

// RAII owners of XGBoost handles; every call's return code is checked.
class XgbDMatrix {
 public:
  XgbDMatrix(const float* data, size_t rows, size_t cols, int nthread) {
    check(XGDMatrixCreateFromMat_omp(data, rows, cols, std::numeric_limits<float>::quiet_NaN(), &h_, nthread),
          "XGDMatrixCreateFromMat");
  }
  ~XgbDMatrix() {
    if (h_) XGDMatrixFree(h_);
  }
  XgbDMatrix(const XgbDMatrix&) = delete;
  XgbDMatrix& operator=(const XgbDMatrix&) = delete;
  void set_labels(const std::vector<float>& labels) {
    check(XGDMatrixSetFloatInfo(h_, "label", labels.data(), labels.size()), "XGDMatrixSetFloatInfo(label)");
  }
  // Each row's starting margin (the trees add to it): a learned correction of a baseline.
  void set_base_margin(const std::vector<float>& base) {
    check(XGDMatrixSetFloatInfo(h_, "base_margin", base.data(), base.size()), "XGDMatrixSetFloatInfo(base_margin)");
  }
  DMatrixHandle get() const { return h_; }

 private:
  DMatrixHandle h_ = nullptr;
};

class XgbBooster {
 public:
  explicit XgbBooster(std::vector<DMatrixHandle> cache = {}) {
    check(XGBoosterCreate(cache.empty() ? nullptr : cache.data(), cache.size(), &h_), "XGBoosterCreate");
  }
  explicit XgbBooster(BoosterHandle owned) : h_(owned) {}
  ~XgbBooster() {
    if (h_) XGBoosterFree(h_);
  }
  XgbBooster(const XgbBooster&) = delete;
  XgbBooster& operator=(const XgbBooster&) = delete;
  void set(const std::string& name, const std::string& value) {
    check(XGBoosterSetParam(h_, name.c_str(), value.c_str()), ("XGBoosterSetParam(" + name + ")").c_str());
  }
  // Margins of every row of `m` (training=true for the gradient pass).
  const float* predict_margin(const XgbDMatrix& m, bool training, size_t expected) {
    bst_ulong len = 0;
    const float* out = nullptr;
    check(XGBoosterPredict(h_, m.get(), 1, 0, training ? 1 : 0, &len, &out), "XGBoosterPredict");
    if (len != expected) throw ModelError("xgboost prediction returned an unexpected length", false);
    return out;
  }
  void boost(const XgbDMatrix& train, std::vector<float>& grad, std::vector<float>& hess) {
    check(XGBoosterBoostOneIter(h_, train.get(), grad.data(), hess.data(), grad.size()), "XGBoosterBoostOneIter");
  }
  std::unique_ptr<XgbBooster> slice(int end) const {
    BoosterHandle out = nullptr;
    check(XGBoosterSlice(h_, 0, end, 1, &out), "XGBoosterSlice");
    return std::make_unique<XgbBooster>(out);
  }
  BoosterHandle get() const { return h_; }

 private:
  BoosterHandle h_ = nullptr;
};

constexpr const char* kIndicator = "target_is_memory";

std::string xgboost_version() {
  int major = 0, minor = 0, patch = 0;
  XGBoostVersion(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

uint64_t fnv1a(const char* data, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 1099511628211ULL;
  return h;
}

double quantile_of(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return quantile_sorted(v, q);
}

json metadata_to_json(const ModelMetadata& m) {
  json j{{"schema", m.schema},
              {"inputs", m.inputs},
              {"objective", m.objective},
              {"cpu_quantile", m.cpu_quantile},
              {"memory_quantile", m.memory_quantile},
              {"horizon_seconds", m.horizon_seconds},
              {"targets", {{"cpu", m.cpu_target}, {"memory", m.memory_target}, {"transform", m.transform}, {"base", m.base}}},
              {"size_weight_power", m.size_weight_power},
              {"rounds", m.rounds},
              {"valid_loss", {{"cpu", m.valid_loss_cpu}, {"memory", m.valid_loss_memory}}},
              {"training_data",
               {{"series", m.series},
                {"samples", m.samples},
                {"rows_train", m.rows_train},
                {"rows_valid", m.rows_valid},
                {"data_start", m.data_start},
                {"data_end", m.data_end},
                {"train_begin", m.train_begin},
                {"train_end", m.train_end},
                {"valid_begin", m.valid_begin}}},
              {"cold_start", {{"cpu_request_ratio", m.cold_cpu_request_ratio},
                              {"memory_request_ratio", m.cold_memory_request_ratio}}},
              {"calibration", {{"cpu_margin", m.calibrated_cpu_margin}, {"memory_margin", m.calibrated_memory_margin}}},
              {"xgboost_version", m.xgboost_version},
              {"created_at", m.created_at}};
  if (m.cpu_gate.decided || m.memory_gate.decided) {
    auto gate = [](const ModelMetadata::Gate& g) {
      // by = how much less slack (percentage points at matched risk) the winner leaves.
      const double won = g.use_blend ? g.blend_slack : g.use_model ? g.model_slack : g.baseline_slack;
      const double next = std::min({g.use_blend ? 1e9 : g.blend_slack, g.use_model && !g.use_blend ? 1e9 : g.model_slack,
                                    g.use_model ? g.baseline_slack : 1e9});
      return json{{"winner", g.use_blend ? "blend" : g.use_model ? "model" : "baseline"},
                  {"model_slack", g.model_slack},
                  {"baseline_slack", g.baseline_slack},
                  {"blend_slack", g.blend_slack},
                  {"by", next - won},  // slack the winner saves over the runner-up
                  {"baseline_margin", g.baseline_margin},
                  {"blend_margin", g.blend_margin}};
    };
    j["gate"] = {{"days", {m.gate_first_day, m.gate_last_day}},
                 {"baseline", "vpa"},
                 {"cpu", gate(m.cpu_gate)},
                 {"memory", gate(m.memory_gate)}};
  }
  if (m.budget_cpu_risk > 0 || m.budget_memory_risk > 0)
    j["risk_budget"] = {{"cpu", m.budget_cpu_risk}, {"memory", m.budget_memory_risk}};
  if (!m.cpu_tail_quantiles.empty()) {
    json tails = json::array();
    for (size_t i = 0; i < m.cpu_tail_quantiles.size(); ++i)
      tails.push_back({{"quantile", m.cpu_tail_quantiles[i]}, {"rounds", m.cpu_tail_rounds.at(i)}});
    j["cpu_tails"] = tails;
  }
  if (!m.input_low.empty()) j["input_range"] = {{"quantiles", {0.005, 0.995}}, {"low", m.input_low}, {"high", m.input_high}};
  return j;
}

ModelMetadata metadata_from_json(const json& j) {
  ModelMetadata m;
  m.schema = j.at("schema").get<int>();
  m.inputs = j.at("inputs").get<std::vector<std::string>>();
  m.objective = j.at("objective").get<std::string>();
  m.cpu_quantile = j.at("cpu_quantile").get<double>();
  m.memory_quantile = j.at("memory_quantile").get<double>();
  m.horizon_seconds = j.at("horizon_seconds").get<int64_t>();
  const auto& t = j.at("targets");
  m.cpu_target = t.at("cpu").get<std::string>();
  m.memory_target = t.at("memory").get<std::string>();
  m.transform = t.at("transform").get<std::string>();
  m.base = t.value("base", std::string("level"));  // absent in models trained before the VPA base
  if (m.base != "level" && m.base != "vpa")
    throw json::other_error::create(501, "targets.base must be 'level' or 'vpa', not '" + m.base + "'", &t);
  m.size_weight_power = j.at("size_weight_power").get<double>();
  m.rounds = j.at("rounds").get<int>();
  m.valid_loss_cpu = j.at("valid_loss").at("cpu").get<double>();
  m.valid_loss_memory = j.at("valid_loss").at("memory").get<double>();
  const auto& d = j.at("training_data");
  m.series = d.at("series").get<size_t>();
  m.samples = d.at("samples").get<size_t>();
  m.rows_train = d.at("rows_train").get<size_t>();
  m.rows_valid = d.at("rows_valid").get<size_t>();
  m.data_start = d.at("data_start").get<int64_t>();
  m.data_end = d.at("data_end").get<int64_t>();
  m.train_begin = d.at("train_begin").get<int64_t>();
  m.train_end = d.at("train_end").get<int64_t>();
  m.valid_begin = d.at("valid_begin").get<int64_t>();
  m.cold_cpu_request_ratio = j.at("cold_start").at("cpu_request_ratio").get<double>();
  m.cold_memory_request_ratio = j.at("cold_start").at("memory_request_ratio").get<double>();
  if (j.contains("calibration")) {  // absent in models saved before calibration existed
    m.calibrated_cpu_margin = j.at("calibration").value("cpu_margin", 0.0);
    m.calibrated_memory_margin = j.at("calibration").value("memory_margin", 0.0);
  }
  if (j.contains("gate")) {  // absent in models trained before the gate existed
    const auto& g = j.at("gate");
    const auto days = g.at("days").get<std::vector<int>>();
    if (days.size() == 2) m.gate_first_day = days[0], m.gate_last_day = days[1];
    for (auto [name, gate] : {std::pair{"cpu", &m.cpu_gate}, std::pair{"memory", &m.memory_gate}}) {
      const auto& r = g.at(name);
      gate->decided = true;
      const auto winner = r.at("winner").get<std::string>();
      if (winner != "model" && winner != "baseline" && winner != "blend")
        throw json::other_error::create(501, std::string("gate.") + name + ".winner must be 'model', 'blend' or 'baseline'", &r);
      gate->use_model = winner != "baseline";
      gate->use_blend = winner == "blend";
      gate->blend_slack = r.value("blend_slack", 0.0);
      gate->blend_margin = r.value("blend_margin", 1.0);
      gate->model_slack = r.at("model_slack").get<double>();
      gate->baseline_slack = r.at("baseline_slack").get<double>();
      gate->baseline_margin = r.at("baseline_margin").get<double>();
    }
  }
  if (j.contains("risk_budget")) {  // absent in models from before the risk budget: off
    m.budget_cpu_risk = j.at("risk_budget").value("cpu", 0.0);
    m.budget_memory_risk = j.at("risk_budget").value("memory", 0.0);
    for (double v : {m.budget_cpu_risk, m.budget_memory_risk})
      if (!(v >= 0 && v < 1)) throw json::other_error::create(501, "risk_budget.cpu/memory must be in [0, 1)", &j);
  }
  if (j.contains("cpu_tails")) {  // absent in models from before the tail forecasts: none
    const auto& tails = j.at("cpu_tails");
    if (!tails.is_array() || tails.size() > kMaxCpuTails)
      throw json::other_error::create(501, "cpu_tails must list at most " + std::to_string(kMaxCpuTails) + " boosters", &j);
    for (const auto& t : tails) {
      const double q = t.at("quantile").get<double>();
      if (!(q > 0 && q < 1)) throw json::other_error::create(501, "cpu_tails[].quantile must be in (0, 1)", &t);
      m.cpu_tail_quantiles.push_back(q);
      m.cpu_tail_rounds.push_back(t.at("rounds").get<int>());
    }
  }
  if (j.contains("input_range")) {
    m.input_low = j.at("input_range").at("low").get<std::vector<double>>();
    m.input_high = j.at("input_range").at("high").get<std::vector<double>>();
    if (m.input_low.size() != feature_count() || m.input_high.size() != feature_count())
      throw json::other_error::create(501, "input_range.low/high must list one value per feature", &j);
  }
  m.xgboost_version = j.at("xgboost_version").get<std::string>();
  m.created_at = j.at("created_at").get<std::string>();
  return m;
}

// The stacked training set: rows of model_inputs() floats, per-row quantile and weight, and
// per-row label sets (sorted, log space): a CPU row's labels are every sample of its target
// window (pinball over them estimates the window's CPU quantile, i.e. the level a random
// 5-minute sample exceeds with probability 1 - q); a memory row's single label is the peak.
struct Dataset {
  std::vector<float> x, y, q, w;          // y: the representative label (CPU quantile / peak)
  std::vector<float> base;                // starting margin: 0, or log(vpa / level)
  std::vector<float> labels;
  std::vector<size_t> offsets{0};         // row i's labels: [offsets[i], offsets[i + 1])
  std::vector<double> cold_cpu, cold_memory;  // target / request ratios
  size_t rows() const { return y.size(); }
  void append(const Dataset& o) {
    x.insert(x.end(), o.x.begin(), o.x.end());
    y.insert(y.end(), o.y.begin(), o.y.end());
    q.insert(q.end(), o.q.begin(), o.q.end());
    w.insert(w.end(), o.w.begin(), o.w.end());
    base.insert(base.end(), o.base.begin(), o.base.end());
    const size_t first = labels.size();
    labels.insert(labels.end(), o.labels.begin(), o.labels.end());
    for (size_t i = 1; i < o.offsets.size(); ++i) offsets.push_back(first + o.offsets[i]);
    cold_cpu.insert(cold_cpu.end(), o.cold_cpu.begin(), o.cold_cpu.end());
    cold_memory.insert(cold_memory.end(), o.cold_memory.begin(), o.cold_memory.end());
  }
};

// Feature ranges for the out-of-distribution guard: per feature the 0.5% and 99.5% quantiles
// of the finite values over every other row of x (a CPU and a memory row share features);
// memory features only over the row pairs whose series measured memory (memory_known[pair]).
void input_ranges_of(const std::vector<float>& x, size_t width, const std::vector<bool>& memory_known,
                     std::vector<double>& low, std::vector<double>& high) {
  low.clear(), high.clear();
  const size_t rows = x.size() / width;
  std::vector<double> column;
  for (size_t f = 0; f < feature_count(); ++f) {
    const bool memory_feature = feature_names()[f].starts_with("mem_");
    column.clear();
    for (size_t r = 0; r < rows; r += 2) {
      if (memory_feature && !memory_known[r / 2]) continue;
      const float v = x[r * width + f];
      if (std::isfinite(v)) column.push_back(v);
    }
    low.push_back(column.empty() ? -1e30 : quantile_of(column, 0.005));
    high.push_back(column.empty() ? 1e30 : quantile_of(column, 0.995));
  }
}

// The starting margin of a row whose prediction is a correction of `base` (same units as the
// target: log(x / level), x floored like the targets).
double base_margin_of(double base, double level, int memory) {
  return std::log(std::max(base, memory ? kMemoryFloorBytes : kCpuFloorCores) / level);
}

// `base`: VPA's recommendation at the origin for a model with base "vpa", else null.
void add_rows(Dataset& d, const FeatureRow& row, const Targets& t, const UsageSeries& s, int64_t origin,
              const TrainOptions& o, const BaselineRecommendation* base) {
  for (int memory = 0; memory < 2; ++memory) {
    d.x.insert(d.x.end(), row.values.begin(), row.values.end());
    d.x.push_back(static_cast<float>(memory));
    const double level = memory ? row.memory_level : row.cpu_level;
    d.base.push_back(base ? static_cast<float>(base_margin_of(memory ? base->memory_bytes : base->cpu_cores, level, memory))
                          : 0.0f);
    const double target = memory ? std::max(t.memory, kMemoryFloorBytes) : std::max(t.cpu, kCpuFloorCores);
    d.y.push_back(static_cast<float>(std::log(target / level)));
    d.q.push_back(static_cast<float>(memory ? o.memory_quantile : o.cpu_quantile));
    // Raw size weight; normalised per resource to mean 1 once all rows are known.
    const double floor = memory ? kMemoryFloorBytes : kCpuFloorCores;
    // A CPU-only source's memory row teaches nothing: kept for the CPU/memory row pairing, weight 0.
    d.w.push_back(memory && !s.has_memory ? 0.0f : static_cast<float>(std::pow(level / floor, o.size_weight_power)));
    if (memory) {
      d.labels.push_back(d.y.back());
    } else {
      const size_t first = d.labels.size();
      for (const auto& x : s.samples) {
        if (x.timestamp < origin) continue;
        if (x.timestamp >= origin + o.horizon_seconds) break;
        d.labels.push_back(static_cast<float>(std::log(std::max(x.cpu_cores, kCpuFloorCores) / level)));
      }
      std::sort(d.labels.begin() + static_cast<std::ptrdiff_t>(first), d.labels.end());
    }
    d.offsets.push_back(d.labels.size());
  }
}

// Weighted mean pinball loss over the label sets of the CPU (memory = 0) or memory (1) rows.
double mean_pinball(const float* pred, const Dataset& d, int memory) {
  double sum = 0, weight = 0;
  for (size_t i = static_cast<size_t>(memory); i < d.rows(); i += 2) {
    const size_t b = d.offsets[i], e = d.offsets[i + 1];
    double row = 0;
    for (size_t k = b; k < e; ++k) row += pinball_loss(pred[i], d.labels[k], d.q[i]);
    sum += d.w[i] * row / static_cast<double>(e - b), weight += d.w[i];
  }
  return weight > 0 ? sum / weight : 0.0;
}

// Row weights to mean 1 per resource within each fleet (fleet_of[i]: series i's; empty: one
// fleet), over the per-series parts before they are joined: a fleet counts by its rows.
void normalise_weights(std::vector<Dataset>& parts, const std::vector<int>& fleet_of) {
  auto fleet = [&](size_t i) { return fleet_of.empty() ? 0 : fleet_of[i]; };
  std::map<int, std::array<std::pair<double, size_t>, 2>> totals;  // fleet -> per resource (sum, rows)
  for (size_t i = 0; i < parts.size(); ++i)
    for (size_t r = 0; r < parts[i].rows(); ++r) {
      auto& [sum, n] = totals[fleet(i)][r % 2];
      sum += parts[i].w[r], ++n;
    }
  for (size_t i = 0; i < parts.size(); ++i)
    for (size_t r = 0; r < parts[i].rows(); ++r) {
      const auto& [sum, n] = totals[fleet(i)][r % 2];
      if (sum > 0) parts[i].w[r] = static_cast<float>(parts[i].w[r] * (static_cast<double>(n) / sum));
    }
}

}  // namespace

double pinball_loss(double prediction, double label, double q) {
  return label >= prediction ? q * (label - prediction) : (1 - q) * (prediction - label);
}

void pinball_gradient(const float* prediction, const float* label, const float* q, size_t n, float* grad,
                      float* hess) {
  for (size_t i = 0; i < n; ++i) {
    grad[i] = prediction[i] > label[i] ? 1.0f - q[i] : (prediction[i] < label[i] ? -q[i] : 0.0f);
    hess[i] = 1.0f;
  }
}

float pinball_gradient_sorted(float prediction, const float* labels, size_t n, float q) {
  if (n == 0) return 0;
  const auto below = static_cast<double>(std::lower_bound(labels, labels + n, prediction) - labels);
  const auto above = static_cast<double>(labels + n - std::upper_bound(labels, labels + n, prediction));
  return static_cast<float>(((1 - q) * below - q * above) / static_cast<double>(n));
}

std::vector<std::string> model_inputs() {
  auto names = feature_names();
  names.emplace_back(kIndicator);
  return names;
}

namespace {

std::string model_json(const XgbBooster& booster) {
  bst_ulong len = 0;
  const char* buf = nullptr;
  check(XGBoosterSaveModelToBuffer(booster.get(), R"({"format": "json"})", &len, &buf), "XGBoosterSaveModelToBuffer");
  return std::string(buf, len);
}

std::unique_ptr<XgbBooster> booster_from_json(const std::string& text, int threads) {
  auto b = std::make_unique<XgbBooster>();
  b->set("nthread", std::to_string(threads));
  check(XGBoosterLoadModelFromBuffer(b->get(), text.data(), text.size()), "XGBoosterLoadModelFromBuffer");
  return b;
}

// The tail boosters as one multi-target booster (target k = tail k's trees, by tree_info): one
// prediction call for every tail quantile instead of one each (each call costs ~17 us before any tree).
std::string merged_tails_json(const std::vector<std::string>& tails) {
  json merged = json::parse(tails.front());
  json trees = json::array(), info = json::array();
  for (size_t k = 0; k < tails.size(); ++k) {
    json one = json::parse(tails[k]);
    for (auto& tree : one["learner"]["gradient_booster"]["model"]["trees"]) {
      tree["id"] = trees.size();
      trees.push_back(std::move(tree));
      info.push_back(k);
    }
  }
  auto& model = merged["learner"]["gradient_booster"]["model"];
  model["gbtree_model_param"]["num_trees"] = std::to_string(trees.size());
  model["trees"] = std::move(trees);
  model["tree_info"] = std::move(info);
  merged["learner"]["learner_model_param"]["num_target"] = std::to_string(tails.size());
  return merged.dump();
}

std::string cpu_tail_file(size_t i) { return "cpu-tail-" + std::to_string(i + 1) + ".json"; }

// Margins of n dense rows of `cols` floats (`targets` per row, row-major): one thread below a few
// hundred rows, where OpenMP start-up and synchronisation cost more than they save.
void predict_dense(const XgbBooster& multi, const XgbBooster& single, const float* inputs, size_t n, size_t cols,
                   std::vector<float>& out, size_t targets = 1) {
  out.clear();
  if (n == 0) return;
  char array[160];
  std::snprintf(array, sizeof array, R"({"data": [%llu, true], "shape": [%zu, %zu], "typestr": "<f4", "version": 3})",
                static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(inputs)), n, cols);
  static constexpr const char* kConfig =
      R"({"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false, "cache_id": 0, "missing": NaN})";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  check(XGBoosterPredictFromDense((n <= 512 ? single : multi).get(), array, kConfig, nullptr, &shape, &dim, &result),
        "XGBoosterPredictFromDense");
  out.assign(result, result + n * targets);
}

}  // namespace

struct QuantileModel::Impl {
  std::unique_ptr<XgbBooster> booster;  // all cores: large batches, contributions
  std::unique_ptr<XgbBooster> single;   // the same trees, one thread
  std::vector<std::unique_ptr<XgbBooster>> tails;  // metadata.cpu_tail_quantiles order (saved one file each)
  std::unique_ptr<XgbBooster> tails_merged, tails_single;  // all tails as one booster, predicting them all
  ModelMetadata metadata;
  std::string version;
  size_t inputs = 0;
  int threads = 1;  // of the multi-threaded boosters
  // After train/load: the version hash (of every booster), the single-threaded copies and the merged tails.
  void finish() {
    const std::string main = model_json(*booster);
    uint64_t hash = fnv1a(main.data(), main.size());
    single = booster_from_json(main, 1);
    std::vector<std::string> tail_json;
    for (const auto& t : tails) {
      tail_json.push_back(model_json(*t));
      hash = hash * 1099511628211ull ^ fnv1a(tail_json.back().data(), tail_json.back().size());
    }
    if (!tail_json.empty()) {
      const std::string merged = merged_tails_json(tail_json);
      tails_merged = booster_from_json(merged, threads);
      tails_single = booster_from_json(merged, 1);
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    version = std::string("xgb-") + std::string(hex).substr(0, 12);
  }
};

int hardware_threads(int requested) {
  if (requested > 0) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

QuantileModel::QuantileModel() : impl_(std::make_unique<Impl>()) {}
QuantileModel::~QuantileModel() = default;
QuantileModel::QuantileModel(QuantileModel&&) noexcept = default;
QuantileModel& QuantileModel::operator=(QuantileModel&&) noexcept = default;

const ModelMetadata& QuantileModel::metadata() const { return impl_->metadata; }
void QuantileModel::set_calibration(double cpu_margin, double memory_margin) {
  impl_->metadata.calibrated_cpu_margin = cpu_margin;
  impl_->metadata.calibrated_memory_margin = memory_margin;
}
void QuantileModel::set_risk_budget(double cpu_risk, double memory_risk) {
  impl_->metadata.budget_cpu_risk = cpu_risk;
  impl_->metadata.budget_memory_risk = memory_risk;
}
void QuantileModel::set_gate(const ModelMetadata::Gate& cpu, const ModelMetadata::Gate& memory, int first_day,
                             int last_day) {
  impl_->metadata.cpu_gate = cpu;
  impl_->metadata.memory_gate = memory;
  impl_->metadata.gate_first_day = first_day;
  impl_->metadata.gate_last_day = last_day;
}
void QuantileModel::record_input_ranges(const std::vector<UsageSeries>& series) {
  const ModelMetadata& m = impl_->metadata;
  const TrainOptions o;  // the default origin filters, as train() applies them
  std::vector<float> x;
  std::vector<bool> memory_known;  // per row pair
  const size_t width = feature_count() + 1;
  for (const auto& s : series) {
    if (s.samples.empty()) continue;
    for (int64_t t = utc_midnight(m.train_begin); t + m.horizon_seconds <= m.valid_begin; t += o.stride_seconds) {
      if (t < m.train_begin) continue;
      const FeatureRow row = compute_features(s, t);
      if (row.history_samples < static_cast<size_t>(o.min_history_samples)) continue;
      for (int copy = 0; copy < 2; ++copy) {
        x.insert(x.end(), row.values.begin(), row.values.end());
        x.push_back(static_cast<float>(copy));
      }
      memory_known.push_back(s.has_memory);
    }
  }
  if (x.empty()) throw ModelError("no training-period rows in the data to record input ranges from", true);
  input_ranges_of(x, width, memory_known, impl_->metadata.input_low, impl_->metadata.input_high);
}
void QuantileModel::adopt_cpu_tails(QuantileModel&& donor) {
  impl_->tails = std::move(donor.impl_->tails);
  impl_->metadata.cpu_tail_quantiles = donor.impl_->metadata.cpu_tail_quantiles;
  impl_->metadata.cpu_tail_rounds = donor.impl_->metadata.cpu_tail_rounds;
  impl_->finish();
}
std::string QuantileModel::version() const { return impl_->version; }
bool QuantileModel::loaded() const { return impl_ && impl_->booster != nullptr; }

QuantileModel QuantileModel::train(const std::vector<UsageSeries>& series, const TrainOptions& o) {
  if (!(o.cpu_quantile > 0 && o.cpu_quantile < 1) || !(o.memory_quantile > 0 && o.memory_quantile < 1))
    throw ModelError("quantiles must be in (0, 1)", true);
  if (o.horizon_seconds <= 0 || o.stride_seconds <= 0) throw ModelError("horizon and stride must be positive", true);
  if (o.cpu_tail_quantiles.size() > kMaxCpuTails)
    throw ModelError("at most " + std::to_string(kMaxCpuTails) + " CPU tail quantiles", true);
  for (const double q : o.cpu_tail_quantiles)
    if (!(q > 0 && q < 1)) throw ModelError("CPU tail quantiles must be in (0, 1)", true);
  ModelMetadata meta;
  meta.inputs = model_inputs();
  meta.cpu_quantile = o.cpu_quantile;
  meta.memory_quantile = o.memory_quantile;
  meta.horizon_seconds = o.horizon_seconds;
  meta.size_weight_power = o.size_weight_power;
  meta.base = o.vpa_base ? "vpa" : "level";
  meta.budget_cpu_risk = o.budget_cpu_risk, meta.budget_memory_risk = o.budget_memory_risk;
  meta.xgboost_version = xgboost_version();
  meta.created_at = format_utc(std::chrono::system_clock::now());
  meta.data_start = std::numeric_limits<int64_t>::max();
  meta.data_end = std::numeric_limits<int64_t>::min();
  for (const auto& s : series) {
    if (s.samples.empty()) continue;
    ++meta.series;
    meta.samples += s.samples.size();
    meta.data_start = std::min(meta.data_start, s.samples.front().timestamp);
    meta.data_end = std::max(meta.data_end, s.samples.back().timestamp);
  }
  if (meta.series == 0) throw ModelError("no usage samples to train on", true);
  meta.train_begin = o.train_begin ? o.train_begin : meta.data_start;
  meta.train_end = o.train_end ? o.train_end : meta.data_end + 1;
  meta.valid_begin = meta.train_end - o.validation_days * kSecondsPerDay;

  // Rows, built in parallel over series and concatenated in series order (deterministic).
  const int threads = hardware_threads(o.nthread);
  std::vector<Dataset> train_parts(series.size()), valid_parts(series.size());
  auto build = [&](size_t i) {
    const auto& s = series[i];
    if (s.samples.empty()) return;
    const int64_t step = typical_step(s);
    const double expected = static_cast<double>(o.horizon_seconds) / static_cast<double>(step);
    VpaEstimator vpa;  // fed the samples before each origin (origins ascend)
    size_t fed = 0;
    for (int64_t t = utc_midnight(meta.train_begin); t + o.horizon_seconds <= meta.train_end; t += o.stride_seconds) {
      if (t < meta.train_begin) continue;
      const bool valid = t >= meta.valid_begin;
      if (!valid && t + o.horizon_seconds > meta.valid_begin) continue;  // target straddles the split
      const Targets target = compute_targets(s, t, o.horizon_seconds, o.cpu_quantile);
      if (static_cast<double>(target.samples) < o.min_target_coverage * expected) continue;
      const FeatureRow row = compute_features(s, t);
      if (row.history_samples < static_cast<size_t>(o.min_history_samples)) continue;
      Dataset& d = valid ? valid_parts[i] : train_parts[i];
      BaselineRecommendation base;
      if (o.vpa_base) {
        for (; fed < s.samples.size() && s.samples[fed].timestamp < t; ++fed) vpa.add(s.samples[fed]);
        base = vpa.recommend(t);
      }
      add_rows(d, row, target, s, t, o, o.vpa_base ? &base : nullptr);
      const ResourceSpec spec = spec_at(s, t);  // the request in force at the origin
      const double request_cpu = spec.cpu_request.value_or(0), request_mem = spec.memory_request.value_or(0);
      if (!valid && request_cpu > 0) d.cold_cpu.push_back(target.cpu / request_cpu);
      if (!valid && request_mem > 0 && s.has_memory) d.cold_memory.push_back(target.memory / request_mem);
    }
  };
  {
    std::vector<std::thread> pool;
    std::atomic<size_t> next{0};
    for (int k = 0; k < threads; ++k)
      pool.emplace_back([&] {
        for (size_t i; (i = next++) < series.size();) build(i);
      });
    for (auto& t : pool) t.join();
  }
  if (!o.fleet_of_series.empty() && o.fleet_of_series.size() != series.size())
    throw ModelError("fleet_of_series must name one fleet per series", true);
  for (auto* parts : {&train_parts, &valid_parts}) normalise_weights(*parts, o.fleet_of_series);
  Dataset train, valid;
  for (size_t i = 0; i < series.size(); ++i) train.append(train_parts[i]), valid.append(valid_parts[i]);
  train_parts.clear(), valid_parts.clear();
  if (train.rows() == 0)
    throw ModelError("no training rows: need history and a covered " + std::to_string(o.horizon_seconds) +
                         " s target window before the validation period",
                     true);
  if (valid.rows() == 0) throw ModelError("no validation rows: the training period is too short for "
                                          + std::to_string(o.validation_days) + " validation days", true);
  meta.rows_train = train.rows() / 2;
  meta.rows_valid = valid.rows() / 2;
  if (!train.cold_cpu.empty()) meta.cold_cpu_request_ratio = quantile_of(train.cold_cpu, 0.9);
  if (!train.cold_memory.empty()) meta.cold_memory_request_ratio = quantile_of(train.cold_memory, 0.9);
  std::vector<bool> memory_known(train.rows() / 2);
  for (size_t pair = 0; pair < memory_known.size(); ++pair) memory_known[pair] = train.w[2 * pair + 1] > 0;
  input_ranges_of(train.x, meta.inputs.size(), memory_known, meta.input_low, meta.input_high);

  const size_t cols = meta.inputs.size();
  XgbDMatrix dtrain(train.x.data(), train.rows(), cols, threads);
  XgbDMatrix dvalid(valid.x.data(), valid.rows(), cols, threads);
  dtrain.set_labels(train.y);
  dvalid.set_labels(valid.y);
  if (o.vpa_base) dtrain.set_base_margin(train.base), dvalid.set_base_margin(valid.base);
  // Boosts one booster at the rows' quantiles (Dataset::q) to its best validation round.
  struct Boosted {
    std::unique_ptr<XgbBooster> booster;
    int rounds = 0;
    double valid_cpu = 0, valid_memory = 0;
  };
  std::vector<float> grad(train.rows()), hess(train.rows());
  auto boost = [&](bool report) {
    XgbBooster booster({dtrain.get(), dvalid.get()});
    booster.set("booster", "gbtree");
    booster.set("tree_method", "hist");
    booster.set("objective", "reg:squarederror");  // identity link; gradients are ours
    booster.set("base_score", "0");
    booster.set("disable_default_eval_metric", "1");
    booster.set("max_depth", std::to_string(o.max_depth));
    booster.set("eta", std::to_string(o.eta));
    booster.set("subsample", std::to_string(o.subsample));
    booster.set("colsample_bytree", std::to_string(o.colsample));
    booster.set("min_child_weight", std::to_string(o.min_child_weight));
    booster.set("lambda", std::to_string(o.lambda));
    booster.set("nthread", std::to_string(threads));
    booster.set("seed", std::to_string(o.seed));
    booster.set("verbosity", "0");
    Boosted result;
    double best = std::numeric_limits<double>::infinity();
    int best_round = 0;
    TrainProgress progress;
    progress.max_rounds = o.max_rounds;
    for (int round = 0; round < o.max_rounds; ++round) {
      const float* pred = booster.predict_margin(dtrain, true, train.rows());
      for (size_t i = 0; i < train.rows(); ++i) {
        const size_t b = train.offsets[i], e = train.offsets[i + 1];
        grad[i] = train.w[i] * pinball_gradient_sorted(pred[i], train.labels.data() + b, e - b, train.q[i]);
        hess[i] = train.w[i];
      }
      booster.boost(dtrain, grad, hess);
      const float* vpred = booster.predict_margin(dvalid, false, valid.rows());
      const double vcpu = mean_pinball(vpred, valid, 0), vmem = mean_pinball(vpred, valid, 1);
      if (vcpu + vmem < best - 1e-7) {
        best = vcpu + vmem, best_round = round;
        result.valid_cpu = vcpu, result.valid_memory = vmem;
      }
      if (report && o.progress) {
        progress.round = round + 1;
        progress.best_round = best_round + 1;
        progress.valid_loss = vcpu + vmem;
        const float* tpred = booster.predict_margin(dtrain, false, train.rows());
        progress.train_loss = mean_pinball(tpred, train, 0) + mean_pinball(tpred, train, 1);
        o.progress(progress);
      }
      if (round - best_round >= o.early_stopping_rounds) break;
    }
    result.rounds = best_round + 1;
    result.booster = booster.slice(result.rounds);
    result.booster->set("nthread", std::to_string(threads));
    return result;
  };

  QuantileModel model;
  Boosted main = boost(true);
  meta.rounds = main.rounds;
  meta.valid_loss_cpu = main.valid_cpu, meta.valid_loss_memory = main.valid_memory;
  model.impl_->booster = std::move(main.booster);
  // Each tail booster learns its quantile on both resources' rows and stops early on both, as the
  // prototype that chose them did (on CPU rows alone the 0.95 booster stopped after 2 rounds and
  // July's shipped CPU slack was 47.2% instead of 45.0%); only its CPU output is used.
  for (const double q : o.cpu_tail_quantiles) {
    std::fill(train.q.begin(), train.q.end(), static_cast<float>(q));
    std::fill(valid.q.begin(), valid.q.end(), static_cast<float>(q));
    Boosted tail = boost(false);
    meta.cpu_tail_quantiles.push_back(q);
    meta.cpu_tail_rounds.push_back(tail.rounds);
    model.impl_->tails.push_back(std::move(tail.booster));
  }
  model.impl_->metadata = std::move(meta);
  model.impl_->inputs = cols;
  model.impl_->threads = threads;
  model.impl_->finish();
  return model;
}

void QuantileModel::save(const std::filesystem::path& dir) const {
  if (!loaded()) throw ModelError("no model to save", false);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw ModelError(dir.string() + ": cannot create directory: " + ec.message(), true);
  check(XGBoosterSaveModel(impl_->booster->get(), (dir / "model.json").c_str()), "XGBoosterSaveModel");
  for (size_t i = 0; i < impl_->tails.size(); ++i)
    check(XGBoosterSaveModel(impl_->tails[i]->get(), (dir / cpu_tail_file(i)).c_str()), "XGBoosterSaveModel");
  std::ofstream out(dir / "metadata.json");
  out << metadata_to_json(impl_->metadata).dump(2) << "\n";
  if (!out) throw ModelError((dir / "metadata.json").string() + ": write failed", false);
}

QuantileModel QuantileModel::load(const std::filesystem::path& dir, int threads) {
  const auto meta_path = dir / "metadata.json", model_path = dir / "model.json";
  for (const auto& p : {meta_path, model_path})
    if (!std::filesystem::is_regular_file(p)) throw ModelError(p.string() + ": no such file (is " + dir.string() + " a model directory?)", true);
  std::ifstream in(meta_path);
  ModelMetadata meta;
  try {
    meta = metadata_from_json(json::parse(in));
  } catch (const json::exception& e) {
    throw ModelError(meta_path.string() + ": invalid metadata: " + e.what(), true);
  }
  if (meta.schema != 1) throw ModelError(meta_path.string() + ": unsupported schema " + std::to_string(meta.schema) + " (this build reads 1)", true);
  if (meta.objective != "pinball") throw ModelError(meta_path.string() + ": objective '" + meta.objective + "' is not 'pinball'", true);
  const auto expected = model_inputs();
  if (meta.inputs != expected) {
    std::string why = "model has " + std::to_string(meta.inputs.size()) + " inputs, this build computes " +
                      std::to_string(expected.size());
    for (size_t i = 0; i < std::min(meta.inputs.size(), expected.size()); ++i)
      if (meta.inputs[i] != expected[i]) {
        why = "input " + std::to_string(i) + " is '" + meta.inputs[i] + "' in the model but '" + expected[i] + "' here";
        break;
      }
    throw ModelError(meta_path.string() + ": feature mismatch: " + why + "; retrain the model with this build", true);
  }
  QuantileModel model;
  model.impl_->booster = std::make_unique<XgbBooster>();
  // Before loading: XGBoost parses the model with as many OpenMP threads as this says.
  model.impl_->booster->set("nthread", std::to_string(hardware_threads(threads)));
  check(XGBoosterLoadModel(model.impl_->booster->get(), model_path.c_str()), "XGBoosterLoadModel");
  bst_ulong features = 0;
  check(XGBoosterGetNumFeature(model.impl_->booster->get(), &features), "XGBoosterGetNumFeature");
  if (features != expected.size())
    throw ModelError(model_path.string() + ": booster has " + std::to_string(features) + " features, metadata lists " +
                         std::to_string(expected.size()), true);
  for (size_t i = 0; i < meta.cpu_tail_quantiles.size(); ++i) {
    const auto path = dir / cpu_tail_file(i);
    if (!std::filesystem::is_regular_file(path))
      throw ModelError(path.string() + ": no such file (metadata.json lists " + std::to_string(meta.cpu_tail_quantiles.size()) +
                           " CPU tail boosters)", true);
    auto tail = std::make_unique<XgbBooster>();
    tail->set("nthread", std::to_string(hardware_threads(threads)));
    check(XGBoosterLoadModel(tail->get(), path.c_str()), "XGBoosterLoadModel");
    check(XGBoosterGetNumFeature(tail->get(), &features), "XGBoosterGetNumFeature");
    if (features != expected.size())
      throw ModelError(path.string() + ": booster has " + std::to_string(features) + " features, metadata lists " +
                           std::to_string(expected.size()), true);
    model.impl_->tails.push_back(std::move(tail));
  }
  model.impl_->metadata = std::move(meta);
  model.impl_->inputs = expected.size();
  model.impl_->threads = hardware_threads(threads);
  model.impl_->finish();
  return model;
}

void QuantileModel::predict_raw(const float* inputs, size_t n, std::vector<float>& out) const {
  if (n > 0 && !loaded()) throw ModelError("model not loaded", false);
  predict_dense(*impl_->booster, *impl_->single, inputs, n, impl_->inputs, out);
}

bool QuantileModel::needs_baseline() const { return impl_->metadata.base == "vpa"; }

void QuantileModel::predict(const std::vector<FeatureRow>& rows, std::vector<Prediction>& out,
                            const std::vector<Prediction>* base) const {
  const bool corrects = needs_baseline();
  if (corrects && (!base || base->size() != rows.size()))
    throw ModelError("this model corrects the VPA baseline: predict needs each row's VPA recommendation", false);
  const size_t cols = impl_->inputs;
  // Every CPU row, then every memory row: the tail boosters read the CPU half as it is.
  const size_t n = rows.size();
  std::vector<float> x(n * 2 * cols);
  for (size_t i = 0; i < n; ++i) {
    if (rows[i].values.size() + 1 != cols) throw ModelError("feature row has the wrong width", false);
    for (size_t m = 0; m < 2; ++m) {
      float* dst = x.data() + (m * n + i) * cols;
      std::copy(rows[i].values.begin(), rows[i].values.end(), dst);
      dst[cols - 1] = static_cast<float>(m);
    }
  }
  std::vector<float> margins, tail;
  const size_t k = impl_->tails.size();
  auto predict_tails = [&] { predict_dense(*impl_->tails_merged, *impl_->tails_single, x.data(), n, cols, tail, k); };
  // Batches of 16-256 containers predict the tails on a second thread beside the main booster
  // (both single-threaded there): from 16 containers on, a thread costs less than the tails' trees
  // (BM_PredictBatch: 16 containers 13 -> 11.6 us each, 256: 11.4 -> 7.5 us).
  if (k > 0 && n >= 16 && n * 2 <= 512 && impl_->threads > 1) {
    std::exception_ptr failed;
    std::thread beside([&] {
      try {
        predict_tails();
      } catch (...) {
        failed = std::current_exception();
      }
    });
    try {
      predict_raw(x.data(), n * 2, margins);
    } catch (...) {
      beside.join();
      throw;
    }
    beside.join();
    if (failed) std::rethrow_exception(failed);
  } else {
    predict_raw(x.data(), n * 2, margins);
    if (k > 0) predict_tails();
  }
  out.assign(n, Prediction{});
  if (k > 0) {
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < k; ++j) {
        double cpu = tail[i * k + j];
        if (corrects) cpu += base_margin_of((*base)[i].cpu_cores, rows[i].cpu_level, 0);
        out[i].cpu_tail[j] = rows[i].cpu_level * std::exp(cpu);
      }
  }
  for (size_t i = 0; i < n; ++i) {
    // Trees only (base_score 0): the starting margin is added here, as training added it.
    double cpu = margins[i], memory = margins[n + i];
    if (corrects) {
      cpu += base_margin_of((*base)[i].cpu_cores, rows[i].cpu_level, 0);
      memory += base_margin_of((*base)[i].memory_bytes, rows[i].memory_level, 1);
    }
    out[i].cpu_cores = rows[i].cpu_level * std::exp(cpu);
    out[i].memory_bytes = rows[i].memory_level * std::exp(memory);
  }
}

Prediction QuantileModel::predict(const FeatureRow& row, const Prediction* base) const {
  std::vector<Prediction> out;
  std::vector<Prediction> bases;
  if (base) bases.push_back(*base);
  predict(std::vector<FeatureRow>{row}, out, base ? &bases : nullptr);
  return out.front();
}

std::vector<std::vector<Contribution>> QuantileModel::explain(const std::vector<FeatureRow>& rows, bool memory,
                                                              size_t top) const {
  std::vector<std::vector<Contribution>> result(rows.size());
  if (rows.empty()) return result;
  if (!loaded()) throw ModelError("model not loaded", false);
  const size_t cols = impl_->inputs;
  std::vector<float> x(rows.size() * cols);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i].values.begin(), rows[i].values.end(), x.begin() + static_cast<std::ptrdiff_t>(i * cols));
    x[i * cols + cols - 1] = memory ? 1.0f : 0.0f;
  }
  XgbDMatrix m(x.data(), rows.size(), cols, 1);
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* out = nullptr;
  check(XGBoosterPredictFromDMatrix(impl_->booster->get(), m.get(),
                                    R"({"type": 2, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false})",
                                    &shape, &dim, &out),
        "XGBoosterPredictFromDMatrix(contributions)");
  const auto& names = impl_->metadata.inputs;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<Contribution> c;
    for (size_t f = 0; f + 1 < cols; ++f)  // the indicator (last input) and the bias are left out
      c.push_back({names[f], out[i * (cols + 1) + f]});
    std::sort(c.begin(), c.end(), [](const Contribution& a, const Contribution& b) {
      return std::abs(a.contribution) > std::abs(b.contribution);
    });
    c.resize(std::min(top, c.size()));
    result[i] = std::move(c);
  }
  return result;
}

std::vector<Contribution> QuantileModel::explain(const FeatureRow& row, bool memory, size_t top) const {
  return explain(std::vector<FeatureRow>{row}, memory, top).front();
}

}  // namespace sizeguard
