#include "webhook/app/rightsizing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "webhook/jsonpatch.h"
#include "webhook/workload.h"

namespace sizeguard {
namespace {

constexpr const char* kResources[] = {"cpu", "memory"};
// Budget for the per-container part of the sizeguard.io/rightsized annotation.
constexpr size_t kMaxExplanationBytes = 32 * 1024;

std::string string_at(const Json& object, const char* pointer) {
  const Json* value = json_at(object, pointer);  // never throws on a mistyped parent
  return value && value->is_string() ? value->get<std::string>() : "";
}



// The workloads a Pod's recommendation may be filed under, most specific first: a
// ReplicaSet's Deployment (name minus "-<pod-template-hash>"), a Job's CronJob (name minus
// "-<scheduled time>"), the direct owner, the Pod itself.
std::vector<std::pair<std::string, std::string>> pod_owner_candidates(const Json& pod, const std::string& pod_name) {
  std::vector<std::pair<std::string, std::string>> out;
  const Json* owners = json_at(pod, "/metadata/ownerReferences");
  for (const auto& owner : owners && owners->is_array() ? *owners : Json::array()) {
    const Json* controller = json_at(owner, "/controller");
    if (!owner.is_object() || !controller || *controller != true) continue;
    const std::string kind = string_at(owner, "/kind"), name = string_at(owner, "/name");
    if (kind == "ReplicaSet") {
      const std::string hash = string_at(pod, "/metadata/labels/pod-template-hash");
      if (!hash.empty() && name.size() > hash.size() + 1 && name.ends_with("-" + hash)) {
        out.emplace_back("Deployment", name.substr(0, name.size() - hash.size() - 1));
      }
    } else if (kind == "Job") {
      const auto dash = name.rfind('-');
      if (dash != std::string::npos && name.size() - dash - 1 >= 8 &&
          name.find_first_not_of("0123456789", dash + 1) == std::string::npos) {
        out.emplace_back("CronJob", name.substr(0, dash));
      }
    }
    out.emplace_back(kind, name);
  }
  out.emplace_back("Pod", pod_name);
  return out;
}

bool targets(const RightsizingRule& rule, WorkloadKind kind) {
  const bool pod = kind == WorkloadKind::Pod;
  return rule.target == RightsizingRule::Target::Both || (pod == (rule.target == RightsizingRule::Target::Pods));
}

std::optional<Mode> mode_word(const std::string& text, bool* off) {
  if (text == "off") {
    *off = true;
    return std::nullopt;
  }
  return mode_from(text);
}

// Workload annotation > namespace label sizeguard.io/rightsize > namespace label
// sizeguard.io/mode > spec.rightsizing.mode > spec.mode > --mode. nullopt: off.
std::optional<Mode> rightsizing_mode(const AdmissionRequest& request, WorkloadKind kind, const Policy& policy,
                                     ClusterState& state, const EvaluationOptions& options,
                                     std::vector<std::string>& notes) {
  bool off = false;
  std::vector<std::string> annotations = {string_at(request.object, "/metadata/annotations/sizeguard.io~1rightsize")};
  if (auto meta = pod_metadata_pointer(kind); meta && kind != WorkloadKind::Pod) {
    annotations.push_back(string_at(request.object, (*meta + "/annotations/sizeguard.io~1rightsize").c_str()));
  }
  for (const auto& value : annotations) {
    if (value.empty()) continue;
    auto mode = mode_word(value, &off);
    if (off) return std::nullopt;
    if (mode) return mode;
    notes.push_back(std::string("invalid ") + kRightsizeAnnotation + " annotation \"" + value +
                    "\" (expected off, audit, warn or enforce); ignored");
  }
  if (!request.namespace_.empty()) {
    auto labels = state.namespace_labels(request.namespace_);
    if (auto* json = std::get_if<Json>(&labels)) {
      for (const char* label : {kRightsizeAnnotation, kModeLabel}) {
        const Json& value = json->value(label, Json());
        if (!value.is_string()) continue;
        auto mode = mode_word(value.get<std::string>(), &off);
        if (off && std::string(label) == kRightsizeAnnotation) return std::nullopt;
        if (mode) return mode;
      }
    } else {
      notes.push_back("namespace labels unavailable, right-sizing mode labels not applied: " +
                      std::get<ClusterStateError>(labels).message);
    }
  }
  if (policy.rightsizing->mode) return policy.rightsizing->mode;
  return policy.mode.value_or(options.default_mode);
}

// Bounds the validating policies put on a container's requests, so a recommendation never
// produces an object /validate would reject.
struct ValidationBounds {
  std::map<std::string, std::pair<Quantity, std::string>> min, max;  // resource -> (bound, policy)
  std::map<std::string, std::pair<double, std::string>> ratio;
};

ValidationBounds validation_bounds(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state) {
  ValidationBounds bounds;
  for (const auto& policy : policies.policies) {
    if (!policy.resources) continue;
    auto applies = policy_applies(policy, request, state);
    if (!std::holds_alternative<bool>(applies) || !std::get<bool>(applies)) continue;
    for (const auto& [name, q] : policy.resources->min) {
      auto it = bounds.min.find(name);
      if (it == bounds.min.end() || q > it->second.first) bounds.min[name] = {q, policy.name};
    }
    for (const auto& [name, q] : policy.resources->max) {
      auto it = bounds.max.find(name);
      if (it == bounds.max.end() || q < it->second.first) bounds.max[name] = {q, policy.name};
    }
    for (const auto& [name, r] : policy.resources->max_limit_request_ratio) {
      auto it = bounds.ratio.find(name);
      if (it == bounds.ratio.end() || r < it->second.first) bounds.ratio[name] = {r, policy.name};
    }
  }
  return bounds;
}

std::string arrow(const std::optional<Quantity>& before, const std::optional<Quantity>& after) {
  return (before ? before->to_string() : std::string("none")) + " → " + (after ? after->to_string() : std::string("none"));
}

}  // namespace

RightsizingResult rightsize(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state,
                            const RightsizingInputs& inputs, const EvaluationOptions& options) {
  RightsizingResult result;
  const WorkloadKind kind = workload_kind_from(request.kind.kind);
  if (!request.sub_resource.empty() || request.object.is_null() || !pod_spec_pointer(kind)) return result;
  if (kind == WorkloadKind::Pod ? request.operation != Operation::Create
                                : request.operation != Operation::Create && request.operation != Operation::Update) {
    return result;
  }
  const Policy* policy = nullptr;
  for (const auto& p : policies.policies) {
    if (!p.rightsizing || !targets(*p.rightsizing, kind)) continue;
    auto applies = policy_applies(p, request, state);
    if (auto* error = std::get_if<ClusterStateError>(&applies)) {
      result.notes.push_back("right-sizing policy " + p.name + " not evaluated: " + error->message);
      continue;
    }
    if (std::get<bool>(applies)) {
      policy = &p;
      break;
    }
  }
  if (!policy) return result;
  const RightsizingRule& rule = *policy->rightsizing;
  auto mode = rightsizing_mode(request, kind, *policy, state, options, result.notes);
  if (!mode) {
    result.notes.push_back("right-sizing is off for this workload");
    return result;
  }
  result.applies = true;
  result.policy = policy->name;
  result.mode = *mode;
  result.replicas = kind == WorkloadKind::Pod ? 1 : replicas(request.object, kind).value_or(1);

  std::vector<std::pair<std::string, std::string>> candidates;
  if (kind == WorkloadKind::Pod) candidates = pod_owner_candidates(request.object, request.display_name());
  else candidates.emplace_back(request.kind.kind, request.name);
  const ValidationBounds bounds = validation_bounds(request, policies, state);

  PatchBuilder patch(request.object);
  Json explanation = {{"policy", policy->name}, {"containers", Json::object()}};
  if (inputs.recommendations) explanation["model"] = inputs.recommendations->model_version;
  else if (!inputs.model_version.empty()) explanation["model"] = inputs.model_version;
  if (inputs.model) explanation["quantile"] = inputs.model->cpu_quantile;

  size_t explanation_bytes = 0, omitted_containers = 0;
  for (const auto& c : containers(request.object, kind)) {
    if (c.type == ContainerType::Ephemeral) continue;
    if (!rule.include_containers.empty() && !glob_match_any(rule.include_containers, c.name)) continue;
    if (glob_match_any(rule.exclude_containers, c.name)) continue;
    const Json& resources = c.node->value("resources", Json::object());

    // The recommendation: the snapshot under the most specific workload key, else a
    // cold-start estimate from the spec.
    std::optional<ContainerRecommendation> rec;
    for (const auto& [owner_kind, owner_name] : candidates) {
      const std::string key = request.namespace_ + "/" + owner_kind + "/" + owner_name + "/" + c.name;
      if (inputs.recommendations) {
        auto it = inputs.recommendations->recommendations.find(key);
        if (it != inputs.recommendations->recommendations.end()) {
          rec = it->second;
          result.workload = request.namespace_ + "/" + owner_kind + "/" + owner_name;
          break;
        }
      }
    }
    if (!rec && (inputs.model || inputs.recommendations)) {
      UsageSeries series;
      series.key = {request.namespace_, candidates.front().first, candidates.front().second, c.name};
      auto as_double = [&](const char* field, const char* name) -> std::optional<double> {
        auto q = resource_quantity(resources, field, name);
        return q ? std::optional<double>(q->as_double()) : std::nullopt;
      };
      series.spec = {as_double("requests", "cpu"), as_double("requests", "memory"), as_double("limits", "cpu"),
                     as_double("limits", "memory")};
      rec = to_container_recommendation(cold_start_recommendation(series, inputs.model.get(), RecommendationPolicy{}));
      rec->cold_start = true;
      result.cold_start = true;
      result.workload = request.namespace_ + "/" + candidates.front().first + "/" + candidates.front().second;
    }
    if (!rec) {
      result.notes.push_back("no recommendation for container " + c.name + " (no snapshot and no model loaded)");
      continue;
    }

    Json container_explanation = {{"confidence", rec->confidence}};
    if (rec->cold_start) container_explanation["coldStart"] = true;
    std::vector<std::string> said;
    for (const std::string resource : kResources) {
      const auto request_before = resource_quantity(resources, "requests", resource);
      const auto limit_before = resource_quantity(resources, "limits", resource);
      // What the container gets today: the request, or the limit it defaults from.
      const std::optional<Quantity> current = request_before ? request_before : limit_before;
      const double recommended = resource == "cpu" ? rec->cpu_cores : rec->memory_bytes;
      if (!(recommended > 0)) continue;
      double target = recommended;
      std::string clamp_note;
      if (current && current->as_double() > 0) {
        const double was = current->as_double();
        if (rule.max_increase_percent && target > was * (100 + *rule.max_increase_percent) / 100.0) {
          target = was * (100 + *rule.max_increase_percent) / 100.0;
          clamp_note = "maxIncreasePercent " + std::to_string(*rule.max_increase_percent);
        }
        if (rule.max_decrease_percent && target < was * (100 - *rule.max_decrease_percent) / 100.0) {
          target = was * (100 - *rule.max_decrease_percent) / 100.0;
          clamp_note = "maxDecreasePercent " + std::to_string(*rule.max_decrease_percent);
        }
      }
      Quantity next = Quantity::rounded_to_step(target, resource);
      if (auto it = rule.min.find(resource); it != rule.min.end() && next < it->second) {
        next = it->second;
        clamp_note = "rightsizing.min";
      }
      if (auto it = rule.max.find(resource); it != rule.max.end() && next > it->second) {
        next = it->second;
        clamp_note = "rightsizing.max";
      }
      if (auto it = bounds.min.find(resource); it != bounds.min.end() && next < it->second.first) {
        next = it->second.first;
        clamp_note = "the minimum of policy " + it->second.second;
      }
      if (auto it = bounds.max.find(resource); it != bounds.max.end() && next > it->second.first) {
        next = it->second.first;
        clamp_note = "the maximum of policy " + it->second.second;
      }
      // Small changes are churn, not savings.
      if (current) {
        const double was = current->as_double();
        if (next == *current) continue;
        if (was > 0 && std::abs(next.as_double() - was) / was * 100.0 < static_cast<double>(rule.min_change_percent)) {
          continue;
        }
      }
      if (request_before && next == *request_before) continue;

      // The limit, by strategy; never below the request.
      const LimitRule& limit_rule = resource == "cpu" ? rule.cpu_limit : rule.memory_limit;
      std::optional<Quantity> limit_after = limit_before;
      switch (limit_rule.strategy) {
        case LimitStrategy::KeepRatio:
          if (limit_before && current && current->as_double() > 0) {
            limit_after = Quantity::rounded_to_step(next.as_double() * limit_before->as_double() / current->as_double(), resource);
          }
          break;
        case LimitStrategy::Ratio: limit_after = Quantity::rounded_to_step(next.as_double() * limit_rule.ratio, resource); break;
        case LimitStrategy::EqualToRequest: limit_after = next; break;
        case LimitStrategy::None: limit_after.reset(); break;
        case LimitStrategy::Unchanged: break;
      }
      if (limit_after && *limit_after < next) limit_after = next;
      if (auto it = bounds.ratio.find(resource); it != bounds.ratio.end() && limit_after &&
                                                 limit_after->as_double() > next.as_double() * it->second.first * (1 + 1e-12)) {
        // Rounded down, so the ratio still holds after rounding.
        limit_after = std::max(next, Quantity::rounded_to_step(next.as_double() * it->second.first, resource, /*up=*/false));
        clamp_note += std::string(clamp_note.empty() ? "" : ", ") + "limit ratio of policy " + it->second.second;
      }

      const std::vector<std::string> base = split_pointer(c.pointer + "/resources");
      auto path = [&](const char* field) {
        auto tokens = base;
        tokens.push_back(field);
        tokens.push_back(resource);
        return tokens;
      };
      patch.set(path("requests"), next.to_string());
      result.changes.push_back({c.name, resource, "request", request_before, next});
      std::string line = resource + " request " + arrow(request_before, next);
      Json res_explanation = {{"request", {request_before ? request_before->to_string() : "", next.to_string()}}};
      if (limit_after != limit_before) {
        if (limit_after) patch.set(path("limits"), limit_after->to_string());
        else patch.remove(path("limits"));
        result.changes.push_back({c.name, resource, "limit", limit_before, limit_after});
        line += ", limit " + arrow(limit_before, limit_after);
        res_explanation["limit"] = {limit_before ? limit_before->to_string() : "",
                                    limit_after ? limit_after->to_string() : ""};
      }
      if (!clamp_note.empty()) {
        line += " (clamped to " + clamp_note + ")";
        res_explanation["clampedTo"] = clamp_note;
      }
      container_explanation[resource] = std::move(res_explanation);
      said.push_back(line);

      const double before_value = current ? current->as_double() : 0;
      (resource == "cpu" ? result.cpu_before : result.memory_before) += before_value;
      (resource == "cpu" ? result.cpu_after : result.memory_after) += next.as_double();
    }
    if (said.empty()) continue;
    Json top = Json::array();
    for (size_t i = 0; i < rec->explanation.size() && i < 3; ++i) {
      top.push_back({{"feature", rec->explanation[i].feature}, {"contribution", std::round(rec->explanation[i].contribution * 1000) / 1000}});
    }
    container_explanation["top"] = std::move(top);
    // The apiserver rejects objects whose annotations exceed 256 KiB in total, so the
    // explanation keeps the first containers up to a budget and counts the rest.
    const size_t size = container_explanation.dump().size() + c.name.size() + 4;
    if (explanation_bytes + size <= kMaxExplanationBytes) {
      explanation_bytes += size;
      explanation["containers"][c.name] = std::move(container_explanation);
    } else {
      ++omitted_containers;
    }

    char confidence[16];
    std::snprintf(confidence, sizeof confidence, "%.2f", rec->confidence);
    std::string why = rec->cold_start ? "cold start: no usage history, estimated from the spec"
                                      : "model " + explanation.value("model", std::string("?")) + ", confidence " + confidence;
    std::string text;
    for (const auto& s : said) text += (text.empty() ? "" : "; ") + s;
    const bool apply = result.mode == Mode::Enforce;
    result.warnings.push_back(std::string("sizeguard: ") + (apply ? "" : "[" + std::string(to_string(result.mode)) + ", not applied] ") +
                              "container " + c.name + ": " + text + " (" + why + ")");
  }
  if (!result.changes.empty()) {
    if (omitted_containers > 0) explanation["omittedContainers"] = omitted_containers;
    patch.set({"metadata", "annotations", kRightsizedAnnotation}, explanation.dump());
    result.patch = patch.operations();
  }
  return result;
}

// ---------------------------------------------------------------------------------------

RecommendationReport::RecommendationReport(Metrics& metrics) : metrics_(metrics) {
  metrics_.describe("sizeguard_recommendation_cpu_cores", MetricType::Gauge,
                    "CPU requests per namespace of the workloads sizeguard has seen, current vs recommended (cores).");
  metrics_.describe("sizeguard_recommendation_memory_bytes", MetricType::Gauge,
                    "Memory requests per namespace of the workloads sizeguard has seen, current vs recommended (bytes).");
  metrics_.describe("sizeguard_recommendation_workloads", MetricType::Gauge,
                    "Workloads with a recommendation, per namespace and right-sizing mode.");
}

void RecommendationReport::record(const AdmissionRequest& request, const RightsizingResult& result) {
  if (!result.applies || result.changes.empty()) return;
  // Pods made by a controller are counted through their workload, not one by one.
  const WorkloadKind kind = workload_kind_from(request.kind.kind);
  const Json* owners = json_at(request.object, "/metadata/ownerReferences");
  if (kind == WorkloadKind::Pod && owners && owners->is_array() && !owners->empty()) {
    return;
  }
  Row row{request.namespace_, request.kind.kind, request.display_name(), std::string(to_string(result.mode)),
          result.replicas, result.cpu_before, result.cpu_after, result.memory_before, result.memory_after,
          result.cold_start};
  std::lock_guard lock(mutex_);
  rows_[request.namespace_ + "/" + request.kind.kind + "/" + request.display_name()] = row;
  export_metrics();
}

void RecommendationReport::export_metrics() {
  struct Totals {
    double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
    std::map<std::string, int> modes;
  };
  std::map<std::string, Totals> by_namespace;
  for (const auto& [key, row] : rows_) {
    Totals& t = by_namespace[row.ns];
    const double n = static_cast<double>(row.replicas);
    t.cpu_before += row.cpu_before * n;
    t.cpu_after += row.cpu_after * n;
    t.memory_before += row.memory_before * n;
    t.memory_after += row.memory_after * n;
    t.modes[row.mode]++;
  }
  metrics_.clear("sizeguard_recommendation_cpu_cores");
  metrics_.clear("sizeguard_recommendation_memory_bytes");
  metrics_.clear("sizeguard_recommendation_workloads");
  // Millicores and whole bytes: sums of doubles would otherwise print as 0.8999999999999999.
  auto millis = [](double cores) { return std::round(cores * 1000) / 1000; };
  for (const auto& [ns, t] : by_namespace) {
    metrics_.set("sizeguard_recommendation_cpu_cores", {{"namespace", ns}, {"value", "current"}}, millis(t.cpu_before));
    metrics_.set("sizeguard_recommendation_cpu_cores", {{"namespace", ns}, {"value", "recommended"}}, millis(t.cpu_after));
    metrics_.set("sizeguard_recommendation_memory_bytes", {{"namespace", ns}, {"value", "current"}}, std::round(t.memory_before));
    metrics_.set("sizeguard_recommendation_memory_bytes", {{"namespace", ns}, {"value", "recommended"}}, std::round(t.memory_after));
    for (const auto& [mode, count] : t.modes) {
      metrics_.set("sizeguard_recommendation_workloads", {{"namespace", ns}, {"mode", mode}}, count);
    }
  }
}

Json RecommendationReport::table() const {
  std::lock_guard lock(mutex_);
  Json workloads = Json::array();
  for (const auto& [key, row] : rows_) {
    workloads.push_back({{"namespace", row.ns},
                         {"kind", row.kind},
                         {"name", row.name},
                         {"mode", row.mode},
                         {"replicas", row.replicas},
                         {"coldStart", row.cold_start},
                         {"cpuCores", {{"current", row.cpu_before}, {"recommended", row.cpu_after}}},
                         {"memoryBytes", {{"current", row.memory_before}, {"recommended", row.memory_after}}}});
  }
  return {{"workloads", std::move(workloads)}};
}

}  // namespace sizeguard
