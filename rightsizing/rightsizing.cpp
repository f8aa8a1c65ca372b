#include "rightsizing/rightsizing.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <set>
#include <string_view>

#include "kube/jsonpatch.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

constexpr const char* kResources[] = {"cpu", "memory"};
// Budget for the per-container part of the sizeguard.io/rightsized annotation.
constexpr size_t kMaxExplanationBytes = 32 * 1024;

std::string string_at(const Json& object, const char* pointer) {
  const Json* value = json_at(object, pointer);  // never throws on a mistyped parent
  return value && value->is_string() ? value->get<std::string>() : "";
}

// Lookups that never throw: until the apiserver validates (after the webhooks) any field of
// the object can hold any JSON type. Null when `object` is not an object or lacks `key`.
const Json& member(const Json& object, std::string_view key) {
  static const Json absent;
  if (!object.is_object()) return absent;
  auto it = object.find(key);
  return it == object.end() ? absent : *it;
}

std::string text(const Json& object, std::string_view key) {
  const Json& value = member(object, key);
  return value.is_string() ? value.get<std::string>() : "";
}

// Which part of the container's resources is not a map (nullptr when all are): the
// apiserver will refuse the object, so right-sizing has nothing it could patch there.
const char* malformed_resources(const Json& container) {
  const Json& resources = member(container, "resources");
  if (resources.is_null()) return nullptr;
  if (!resources.is_object()) return "resources is not a map";
  for (const char* field : {"requests", "limits"}) {
    const Json& values = member(resources, field);
    if (!values.is_null() && !values.is_object()) {
      return field == std::string_view("requests") ? "resources.requests is not a map" : "resources.limits is not a map";
    }
  }
  return nullptr;
}

// The first name two of the (non-ephemeral) containers share, else "".
std::string duplicate_container_name(const std::vector<ContainerRef>& containers) {
  std::set<std::string_view> seen;
  for (const auto& c : containers) {
    if (c.type != ContainerType::Ephemeral && !seen.insert(c.name).second) return c.name;
  }
  return "";
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
std::optional<Mode> rightsizing_mode(const AdmissionRequest& request, const WorkloadView& view, const Policy& policy,
                                     ClusterState& state, const EvaluationOptions& options,
                                     std::vector<std::string>& notes) {
  bool off = false;
  std::vector<std::string> annotations = {string_at(request.object, "/metadata/annotations/sizeguard.io~1rightsize")};
  if (const auto& meta = view.pod_metadata_pointer; meta && view.kind != WorkloadKind::Pod) {
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

ValidationBounds validation_bounds(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                                   ClusterState& state) {
  ValidationBounds bounds;
  for (const auto& policy : policies.policies) {
    if (!policy.resources) continue;
    auto applies = policy_applies(policy, request, view, state);
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

// A container's request and limit for one resource; nullopt: absent.
struct Values {
  std::optional<Quantity> request, limit;
};

std::string text_of(const std::optional<Quantity>& q) { return q ? q->to_string() : std::string(); }

// "" is absent; false if the text is not a quantity.
bool parse_recorded(const Json& text, std::optional<Quantity>& out) {
  if (!text.is_string()) return false;
  const std::string s = text.get<std::string>();
  out.reset();
  if (s.empty()) return true;
  out = Quantity::parse(s);
  return out.has_value();
}

// The explanation sizeguard wrote earlier: on the object, or on its pod template (a Pod
// made from a right-sized template). Empty if there is none or it does not parse.
Json previous_explanation(const Json& object, const WorkloadView& view) {
  std::vector<std::string> pointers = {"/metadata/annotations/sizeguard.io~1rightsized"};
  if (const auto& meta = view.pod_metadata_pointer; meta && view.kind != WorkloadKind::Pod) {
    pointers.push_back(*meta + "/annotations/sizeguard.io~1rightsized");
  }
  for (const auto& pointer : pointers) {
    const std::string text = string_at(object, pointer.c_str());
    if (text.empty()) continue;
    Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object() && member(parsed, "containers").is_object()) return parsed;
  }
  return Json::object();
}

// The values before sizeguard's change, if the record says sizeguard wrote the current
// request; nullopt when there is no record or the request was changed since (a user's
// change is the new starting point).
std::optional<Values> recorded_original(const Json& record, const Values& current) {
  const Json& request = member(record, "request");
  if (!request.is_array() || request.size() != 2) return std::nullopt;
  Values original, written;
  if (!parse_recorded(request[0], original.request) || !parse_recorded(request[1], written.request)) return std::nullopt;
  if (written.request != current.request) return std::nullopt;
  // The limit's original only while the limit is still what sizeguard wrote: another webhook
  // or a user may have set it since (and older records without "limit" say nothing of it).
  original.limit = current.limit;
  if (const Json& limit = member(record, "limit"); limit.is_array() && limit.size() == 2) {
    std::optional<Quantity> recorded_limit;
    if (parse_recorded(limit[0], recorded_limit) && parse_recorded(limit[1], written.limit) && written.limit == current.limit) {
      original.limit = recorded_limit;
    }
  }
  return original;
}

// The pod spec with every container's values that sizeguard recorded as its own replaced by
// the recorded originals.
Json original_pod_spec(const Json& pod_spec, const Json& previous) {
  Json spec = pod_spec;
  const Json& recorded = member(previous, "containers");
  for (const char* list : {"initContainers", "containers"}) {
    if (!spec.contains(list) || !spec[list].is_array()) continue;
    for (auto& c : spec[list]) {
      if (!c.is_object() || !recorded.contains(text(c, "name"))) continue;
      const Json& record = member(recorded, text(c, "name"));
      Json resources = member(c, "resources");
      if (!resources.is_object() && !resources.is_null()) continue;  // not a valid container: nothing recorded applies
      for (const char* resource : kResources) {
        const Values current{resource_quantity(resources, "requests", resource), resource_quantity(resources, "limits", resource)};
        const auto original = recorded_original(member(record, resource), current);
        if (!original) continue;
        for (const auto& [field, value] : {std::pair{"requests", original->request}, std::pair{"limits", original->limit}}) {
          if (value) resources[field][resource] = value->to_string();
          else if (resources.contains(field) && resources[field].is_object()) resources[field].erase(resource);
        }
      }
      c["resources"] = std::move(resources);
    }
  }
  return spec;
}

// Kubernetes' Guaranteed QoS: every container has cpu and memory limits and requests equal
// to them (a missing request defaults to the limit).
bool guaranteed(const Json& pod_spec) {
  bool any = false;
  for (const char* list : {"initContainers", "containers"}) {
    const Json& items = member(pod_spec, list);
    if (!items.is_array()) continue;
    for (const auto& c : items) {
      if (!c.is_object()) continue;
      any = true;
      const Json& resources = member(c, "resources");
      for (const char* resource : kResources) {
        const auto limit = resource_quantity(resources, "limits", resource);
        const auto request = resource_quantity(resources, "requests", resource);
        if (!limit || (request && *request != *limit)) return false;
      }
    }
  }
  return any;
}

// GPUs, TPUs and other extended resources, or DRA claims: such containers (model servers,
// training jobs) are sized by their accelerator, not by a guess from a spec.
bool uses_accelerator(const Json& resources) {
  for (const char* field : {"requests", "limits"}) {
    const Json& values = member(resources, field);
    if (!values.is_object()) continue;
    for (const auto& [name, value] : values.items()) {
      if (name != "cpu" && name != "memory" && name != "ephemeral-storage" && !name.starts_with("hugepages-")) return true;
    }
  }
  const Json& claims = member(resources, "claims");
  return claims.is_array() && !claims.empty();
}

// Where the apiserver (1.34, pod-level resources) would reject the pod spec: containers'
// requests summed beyond the pod-level request, a container limit above the pod-level
// limit. Empty if it fits.
std::string pod_level_violation(const Json& pod_spec) {
  const Json& pod = member(pod_spec, "resources");
  if (!pod.is_object()) return "";
  for (const char* resource : kResources) {
    const auto pod_request = resource_quantity(pod, "requests", resource);
    const auto pod_limit = resource_quantity(pod, "limits", resource);
    if (!pod_request && !pod_limit) continue;
    Quantity sum;  // exact: requests beyond 2^63-1 units must not wrap an int64
    for (const char* list : {"initContainers", "containers"}) {
      const Json& items = member(pod_spec, list);
      if (!items.is_array()) continue;
      for (const auto& c : items) {
        if (!c.is_object()) continue;
        const Json& resources = member(c, "resources");
        const auto limit = resource_quantity(resources, "limits", resource);
        auto request = resource_quantity(resources, "requests", resource);
        if (!request) request = limit;
        const std::string name = text(c, "name");
        if (pod_limit && limit && *limit > *pod_limit) {
          return "container " + name + "'s " + resource + " limit " + limit->to_string() + " would exceed the pod-level limit " +
                 pod_limit->to_string();
        }
        const bool sidecar = std::string(list) == "initContainers" && text(c, "restartPolicy") == "Always";
        if (!request) continue;
        if (std::string(list) == "containers" || sidecar) sum = sum + *request;
        else if (pod_request && *request > *pod_request) {
          return "init container " + name + "'s " + resource + " request " + request->to_string() +
                 " would exceed the pod-level request " + pod_request->to_string();
        }
      }
    }
    if (pod_request && sum > *pod_request) {
      return "the containers' " + std::string(resource) + " requests would add up to more than the pod-level request " +
             pod_request->to_string();
    }
  }
  return "";
}

// How many Pods a controller-made Pod stands for, for the report: its workload's replicas
// (1 for a bare Pod, a DaemonSet or when the workload cannot be read).
int64_t owner_replicas(const std::string& workload, ClusterState& state) {
  const auto first = workload.find('/'), second = workload.find('/', first + 1);
  if (first == std::string::npos || second == std::string::npos) return 1;
  const std::string kind = workload.substr(first + 1, second - first - 1);
  static const std::map<std::string, std::array<const char*, 3>> kResourcesOf = {
      {"Deployment", {"apps", "v1", "deployments"}},
      {"StatefulSet", {"apps", "v1", "statefulsets"}},
      {"ReplicaSet", {"apps", "v1", "replicasets"}},
      {"ReplicationController", {"", "v1", "replicationcontrollers"}}};
  auto it = kResourcesOf.find(kind);
  if (it == kResourcesOf.end()) return 1;
  auto object = state.get_object(it->second[0], it->second[1], it->second[2], workload.substr(0, first), workload.substr(second + 1));
  const Json* json = std::get_if<Json>(&object);
  return json ? std::max<int64_t>(1, replicas(*json, workload_kind_from(kind)).value_or(1)) : 1;
}

// A memory limit set from a model follows it at this distance above the recent peak.
constexpr double kMemoryLimitHeadroom = 1.25;
// A container OOM-killed recently gets at least this much more memory.
constexpr double kOomBump = 1.2;

void clamp_to_bounds(Quantity& next, const std::string& resource, const RightsizingRule& rule, const ValidationBounds& bounds,
                     std::string& clamp_note) {
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
}

// Without usage history nothing is known about the container: a missing request may be
// filled (it only makes scheduling honest), an existing value is never lowered and no limit
// is invented. Containers sharing pod-level resources are left to them.
std::optional<Values> propose_cold_start(const std::string& resource, const Values& original, const ContainerRecommendation& rec,
                                         const RightsizingRule& rule, const ValidationBounds& bounds, const Json& pod_resources,
                                         std::string& clamp_note) {
  if (original.request || original.limit) return std::nullopt;
  if (resource_quantity(pod_resources, "requests", resource) || resource_quantity(pod_resources, "limits", resource)) {
    return std::nullopt;
  }
  const double estimate = resource == "cpu" ? rec.cpu_cores : rec.memory_bytes;
  if (!(estimate > 0)) return std::nullopt;
  Quantity next = Quantity::rounded_to_step(estimate, resource);
  clamp_to_bounds(next, resource, rule, bounds, clamp_note);
  return Values{next, std::nullopt};
}

// From a recommendation with history, bounded against the original values.
std::optional<Values> propose(const std::string& resource, const Values& original, const ContainerRecommendation& rec,
                              const RightsizingRule& rule, const ValidationBounds& bounds, bool guaranteed_pod, std::string& clamp_note) {
  const bool memory = resource == "memory";
  const double recommended = memory ? rec.memory_bytes : rec.cpu_cores;
  if (!(recommended > 0)) return std::nullopt;
  // What the container gets today: the request, or the limit it defaults from.
  const std::optional<Quantity> was = original.request ? original.request : original.limit;
  const double before = was ? was->as_double() : 0;
  const double peak = memory ? rec.memory_peak_bytes : 0;
  double target = recommended;
  if (memory && before > 0) {
    if (rec.oom_killed && target < before * kOomBump) {
      target = before * kOomBump;
      clamp_note = "a bump after a recent OOM kill";
    } else if (peak > 0 && target < before && target < peak) {
      target = std::min(before, peak);  // never below what it was seen using
      clamp_note = "the recent memory peak";
    }
  }
  if (before > 0) {
    if (rule.max_increase_percent && target > before * (100 + *rule.max_increase_percent) / 100.0) {
      target = before * (100 + *rule.max_increase_percent) / 100.0;
      clamp_note = "maxIncreasePercent " + std::to_string(*rule.max_increase_percent);
    }
    if (rule.max_decrease_percent && target < before * (100 - *rule.max_decrease_percent) / 100.0) {
      target = before * (100 - *rule.max_decrease_percent) / 100.0;
      clamp_note = "maxDecreasePercent " + std::to_string(*rule.max_decrease_percent);
    }
  }
  Quantity next = Quantity::rounded_to_step(target, resource);
  clamp_to_bounds(next, resource, rule, bounds, clamp_note);
  const std::optional<Quantity> peak_bound =
      peak > 0 ? std::optional<Quantity>(Quantity::rounded_to_step(peak * kMemoryLimitHeadroom, resource)) : std::nullopt;

  if (guaranteed_pod) {
    // Guaranteed stays Guaranteed (limit = request), and whole CPUs stay whole: the static
    // CPU manager gives exclusive cores only to integer requests.
    if (!memory && was && was->rounded_up(0) == *was) {
      next = std::max(Quantity::from_int(1), next.rounded_up(0).with_format(Quantity::Format::DecimalSI));
    }
    if (memory && was && next < *was) {
      // The request is also the limit: lowered only down to the peak-based bound.
      if (!peak_bound) return std::nullopt;
      next = std::max(next, std::min(*peak_bound, *was));
    }
    return Values{next, next};
  }

  const LimitRule& limit_rule = memory ? rule.memory_limit : rule.cpu_limit;
  std::optional<Quantity> limit = original.limit;
  switch (limit_rule.strategy) {
    case LimitStrategy::KeepRatio:
      if (original.limit && before > 0) limit = Quantity::rounded_to_step(next.as_double() * original.limit->as_double() / before, resource);
      break;
    case LimitStrategy::Ratio: limit = Quantity::rounded_to_step(next.as_double() * limit_rule.ratio, resource); break;
    case LimitStrategy::EqualToRequest: limit = next; break;
    case LimitStrategy::None: limit.reset(); break;
    case LimitStrategy::Unchanged: break;
  }
  // A memory limit is where the OOM killer acts: it follows a model only from the
  // peak-based bound, never from the request alone.
  if (memory && limit && limit != original.limit) {
    if (!peak_bound) limit = original.limit;
    else limit = std::max(*limit, *peak_bound);
  }
  // A limit is never cut by more than its request is (nor beyond maxDecreasePercent).
  if (limit && original.limit && *limit < *original.limit) {
    double keep = before > 0 ? next.as_double() / before : 1.0;
    if (rule.max_decrease_percent) keep = std::max(keep, (100 - *rule.max_decrease_percent) / 100.0);
    const Quantity floor = std::min(*original.limit, Quantity::rounded_to_step(original.limit->as_double() * keep, resource));
    if (*limit < floor) limit = floor;
  }
  if (limit && *limit < next) limit = next;
  if (auto it = bounds.ratio.find(resource); it != bounds.ratio.end() && limit &&
                                             limit->ratio_to(next) > it->second.first * (1 + 1e-12)) {
    // Rounded down, so the ratio still holds after rounding.
    limit = std::max(next, Quantity::rounded_to_step(next.as_double() * it->second.first, resource, /*up=*/false));
    clamp_note += std::string(clamp_note.empty() ? "" : ", ") + "limit ratio of policy " + it->second.second;
  }
  return Values{next, limit};
}

// --- rightsize, step by step ---------------------------------------------------------------

// The policy whose spec.rightsizing covers the request, or null: right-sizing looks only at
// CREATE and UPDATE of objects with a pod spec (not subresources).
const Policy* rightsizing_policy(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                                 ClusterState& state, std::vector<std::string>& notes) {
  const WorkloadKind kind = view.kind;
  if (!request.sub_resource.empty() || request.object.is_null() || !view.pod_spec_pointer) return nullptr;
  // Container resources of a Pod are immutable after creation, and so is a Job's pod
  // template (the apiserver rejects every such UPDATE): only CREATE for those.
  const bool create_only = kind == WorkloadKind::Pod || kind == WorkloadKind::Job;
  if (create_only ? request.operation != Operation::Create
                  : request.operation != Operation::Create && request.operation != Operation::Update) {
    return nullptr;
  }
  for (const auto& p : policies.policies) {
    if (!p.rightsizing || !targets(*p.rightsizing, kind)) continue;
    auto applies = policy_applies(p, request, view, state);
    if (auto* error = std::get_if<ClusterStateError>(&applies)) {
      notes.push_back("right-sizing policy " + p.name + " not evaluated: " + error->message);
      continue;
    }
    if (std::get<bool>(applies)) return &p;
    }
  return nullptr;
}

// What every container of one request is sized against.
struct SizingContext {
  const AdmissionRequest& request;
  const RightsizingRule& rule;
  const RightsizingInputs& inputs;
  std::vector<std::pair<std::string, std::string>> candidates;  // workload keys, most specific first
  ValidationBounds bounds;
  const Json& pod_resources;  // spec.resources of the pod spec
  Json previous;              // the explanation sizeguard wrote earlier (previous_explanation)
  bool is_guaranteed = false;
};

// Whether the container is one right-sizing may change (a note says why when it is not).
bool sizes_container(const ContainerRef& c, const RightsizingRule& rule, std::vector<std::string>& notes) {
  if (c.type == ContainerType::Ephemeral) return false;
  if (!rule.include_containers.empty() && !glob_match_any(rule.include_containers, c.name)) return false;
  if (glob_match_any(rule.exclude_containers, c.name)) return false;
    if (const char* bad = malformed_resources(*c.node)) {
      // A patch below it could not apply, and a warning would claim a change never made.
    notes.push_back("container " + c.name + ": " + bad + ", left as written");
    return false;
    }
  return true;
}

// The recommendation: the snapshot under the most specific workload key, else a
// cold-start estimate from the spec. Sets result.workload to the key it was found under.
std::optional<ContainerRecommendation> recommendation_for(const SizingContext& ctx, const std::string& container,
                                                          RightsizingResult& result) {
  const AdmissionRequest& request = ctx.request;
  const RightsizingInputs& inputs = ctx.inputs;
    std::optional<ContainerRecommendation> rec;
  for (const auto& [owner_kind, owner_name] : ctx.candidates) {
    const std::string key = request.namespace_ + "/" + owner_kind + "/" + owner_name + "/" + container;
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
    series.key = {request.namespace_, ctx.candidates.front().first, ctx.candidates.front().second, container};
      rec = to_container_recommendation(cold_start_recommendation(series, inputs.model.get(), RecommendationPolicy{}));
      rec->cold_start = true;
    result.workload = request.namespace_ + "/" + ctx.candidates.front().first + "/" + ctx.candidates.front().second;
    }
  return rec;
}

// One container's proposed values: what to write per resource, the lines of its warning,
// its part of the explanation and its per-pod totals.
struct ContainerSizing {
    struct Pending {
      std::string resource;
      Values current, next;
    };
    std::vector<Pending> pending;
  Json explanation;
    std::vector<std::string> said;
    double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
};

ContainerSizing size_container(const SizingContext& ctx, const ContainerRecommendation& rec, const Json& resources,
                               const Json& recorded_container) {
  const RightsizingRule& rule = ctx.rule;
  ContainerSizing out;
  out.explanation = {{"confidence", rec.confidence}};
  if (rec.cold_start) out.explanation["coldStart"] = true;
    for (const std::string resource : kResources) {
      const Values current{resource_quantity(resources, "requests", resource), resource_quantity(resources, "limits", resource)};
      // Bounds hold against the values before sizeguard's first change in this line of
      // admissions: if the object carries exactly what sizeguard wrote (reinvocation, a
      // repeated apply, a Pod from a right-sized template), its recorded originals.
      const Json& recorded_resource = member(recorded_container, resource);
      const std::optional<Values> from_record = recorded_original(recorded_resource, current);
      const Values original = from_record.value_or(current);
    if (from_record) out.explanation[resource] = recorded_resource;  // still true; kept

      std::string clamp_note;
    auto proposed = rec.cold_start
                        ? propose_cold_start(resource, original, rec, rule, ctx.bounds, ctx.pod_resources, clamp_note)
                        : propose(resource, original, rec, rule, ctx.bounds, ctx.is_guaranteed, clamp_note);
      if (!proposed) continue;
      Values next = *proposed;
      if (next.request == current.request && next.limit == current.limit) continue;
      // Small changes are churn, not savings.
      const std::optional<Quantity> now = current.request ? current.request : current.limit;
      if (now && next.request && now->as_double() > 0 &&
          std::abs(next.request->as_double() - now->as_double()) / now->as_double() * 100.0 <
              static_cast<double>(rule.min_change_percent)) {
        continue;
      }

      std::string line = resource + " request " + arrow(current.request, next.request);
      if (next.limit != current.limit) line += ", limit " + arrow(current.limit, next.limit);
      // The record is in every stored object and every patch: what it can leave out, it does.
      // A limit sizeguard leaves as it was is not recorded (no record reads as "the current
      // limit is the original", which it then is), nor a recommendation equal to the written
      // request (recorded only when clamping or rounding made them differ).
      Json res_explanation = {{"request", {text_of(original.request), text_of(next.request)}}};
      if (original.limit != next.limit) res_explanation["limit"] = {text_of(original.limit), text_of(next.limit)};
    if (const std::string& recommended = resource == "cpu" ? rec.cpu : rec.memory; recommended != text_of(next.request)) {
        res_explanation["recommended"] = recommended;
      }
      if (!clamp_note.empty()) {
        line += " (clamped to " + clamp_note + ")";
        res_explanation["clampedTo"] = clamp_note;
      }
    out.explanation[resource] = std::move(res_explanation);
    out.said.push_back(line);
    out.pending.push_back({resource, current, next});
      const std::optional<Quantity> was = original.request ? original.request : original.limit;
      const double before_value = was ? was->as_double() : 0;
      const double after_value = next.request ? next.request->as_double() : 0;
    (resource == "cpu" ? out.cpu_before : out.memory_before) += before_value;
    (resource == "cpu" ? out.cpu_after : out.memory_after) += after_value;
    }
  return out;
}

// The container's changes into the patch, the result's changes and its per-pod totals.
void write_changes(const ContainerRef& c, const ContainerSizing& sizing, PatchBuilder& patch, RightsizingResult& result) {
    const std::vector<std::string> base = split_pointer(c.pointer + "/resources");
  for (const auto& p : sizing.pending) {
      auto path = [&](const char* field) {
        auto tokens = base;
        tokens.push_back(field);
        tokens.push_back(p.resource);
        return tokens;
      };
      if (p.next.request != p.current.request) {
        patch.set(path("requests"), p.next.request->to_string());
        result.changes.push_back({c.name, p.resource, "request", p.current.request, p.next.request});
      }
      if (p.next.limit != p.current.limit) {
        if (p.next.limit) patch.set(path("limits"), p.next.limit->to_string());
        else patch.remove(path("limits"));
        result.changes.push_back({c.name, p.resource, "limit", p.current.limit, p.next.limit});
      }
    }
  result.cpu_before += sizing.cpu_before;
  result.cpu_after += sizing.cpu_after;
  result.memory_before += sizing.memory_before;
  result.memory_after += sizing.memory_after;
}

// "sizeguard: container web: cpu request 2 → 350m (model m1, confidence 0.90)", with the
// mode when the change is only reported.
std::string change_warning(const std::string& container, const ContainerSizing& sizing,
                           const ContainerRecommendation& rec, const Json& explanation, Mode mode) {
    char confidence[16];
  std::snprintf(confidence, sizeof confidence, "%.2f", rec.confidence);
  std::string why = rec.cold_start ? "cold start: no usage history, missing request filled from the spec estimate"
                                      : "model " + explanation.value("model", std::string("?")) + ", confidence " + confidence;
    std::string text;
  for (const auto& s : sizing.said) text += (text.empty() ? "" : "; ") + s;
  const bool apply = mode == Mode::Enforce;
  return std::string("sizeguard: ") + (apply ? "" : "[" + std::string(to_string(mode)) + ", not applied] ") +
         "container " + container + ": " + text + " (" + why + ")";
}

// Finishes a result with changes: drops them all when the pod-level resources would
// refuse them (returns false), else writes the explanation annotation (on the object and
// its pod template) and the patch.
bool finish_patch(const WorkloadView& view, const SizingContext& ctx, PatchBuilder& patch, Json& explanation,
                  size_t omitted_containers, ClusterState& state, RightsizingResult& result) {
  // Pod-level resources (spec.resources) bound the containers: a patch the apiserver would
  // reject is not made at all.
  if (ctx.pod_resources.is_object() && !ctx.pod_resources.empty()) {
    const Json& after_spec = patch.result().at(Json::json_pointer(*view.pod_spec_pointer));
    if (const std::string why = pod_level_violation(after_spec); !why.empty()) {
      result.warnings = {"sizeguard: right-sizing left the pod unchanged: " + why};
      result.notes.push_back("pod-level resources: " + why);
      result.changes.clear();
      result.cpu_before = result.cpu_after = result.memory_before = result.memory_after = 0;
      return false;
    }
  }
  if (view.kind == WorkloadKind::Pod) result.replicas = owner_replicas(result.workload, state);
  if (omitted_containers > 0) explanation["omittedContainers"] = omitted_containers;
  const std::string annotation = explanation.dump();
  patch.set({"metadata", "annotations", kRightsizedAnnotation}, annotation);
  // Pods made from the template carry the record too, so right-sizing them again (target
  // both) recognises the values as its own instead of cutting a second time.
  if (view.kind != WorkloadKind::Pod && view.pod_metadata_pointer) {
    auto tokens = split_pointer(*view.pod_metadata_pointer);
    tokens.push_back("annotations");
    tokens.push_back(kRightsizedAnnotation);
    patch.set(tokens, annotation);
  }
  result.patch = patch.operations();
  return true;
}

}  // namespace

RightsizingResult rightsize(const AdmissionRequest& request, const PolicySet& policies, ClusterState& state,
                            const RightsizingInputs& inputs, const EvaluationOptions& options) {
  return rightsize(request, workload_view(request), policies, state, inputs, options);
}

RightsizingResult rightsize(const AdmissionRequest& request, const WorkloadView& view, const PolicySet& policies,
                            ClusterState& state, const RightsizingInputs& inputs, const EvaluationOptions& options) {
  RightsizingResult result;
  const Policy* policy = rightsizing_policy(request, view, policies, state, result.notes);
  if (!policy) return result;
  const WorkloadKind kind = view.kind;
  auto mode = rightsizing_mode(request, view, *policy, state, options, result.notes);
  if (!mode) {
    result.notes.push_back("right-sizing is off for this workload");
    return result;
  }
  result.applies = true;
  result.policy = policy->name;
  result.mode = *mode;
  result.replicas = kind == WorkloadKind::Pod ? 1 : view.replicas.value_or(1);

  static const Json no_pod_spec = Json::object();
  const Json& pod_spec = view.pod_spec ? *view.pod_spec : no_pod_spec;
  SizingContext ctx{request, *policy->rightsizing, inputs, {}, validation_bounds(request, view, policies, state),
                    member(pod_spec, "resources"), previous_explanation(request.object, view), false};
  if (kind == WorkloadKind::Pod) ctx.candidates = pod_owner_candidates(request.object, request.display_name());
  else ctx.candidates.emplace_back(request.kind.kind, request.name);
  // The QoS class the workload asked for, not one sizeguard's own values produced.
  // (Without an earlier record the spec is the original: no copy of it to build.)
  ctx.is_guaranteed = member(ctx.previous, "containers").empty() ? guaranteed(pod_spec)
                                                                 : guaranteed(original_pod_spec(pod_spec, ctx.previous));

  PatchBuilder patch(request.object);
  Json explanation = {{"policy", policy->name}, {"containers", Json::object()}};
  if (inputs.recommendations) explanation["model"] = inputs.recommendations->model_version;
  else if (!inputs.model_version.empty()) explanation["model"] = inputs.model_version;
  if (inputs.model) explanation["quantile"] = inputs.model->cpu_quantile;

  // The annotation records containers by name: twins could not be told apart (and the
  // apiserver refuses them anyway), so such an object is left as written.
  if (const std::string twin = duplicate_container_name(view.containers); !twin.empty()) {
    result.notes.push_back("containers share the name " + twin + ": left as written");
    return result;
  }
  size_t explanation_bytes = 0, omitted_containers = 0;
  for (const auto& c : view.containers) {
    if (!sizes_container(c, ctx.rule, result.notes)) continue;
    const Json& resources = member(*c.node, "resources");
    const std::optional<ContainerRecommendation> rec = recommendation_for(ctx, c.name, result);
    if (!rec) {
      result.notes.push_back("no recommendation for container " + c.name + " (no snapshot and no model loaded)");
      continue;
    }
    if (rec->cold_start && !ctx.rule.cold_start_accelerators && uses_accelerator(resources)) {
      result.notes.push_back("container " + c.name + " uses an accelerator and has no usage history: left as written "
                             "(spec.rightsizing.coldStart.accelerators opts in)");
      continue;
    }
    if (rec->cold_start) result.cold_start = true;

    ContainerSizing sizing = size_container(ctx, *rec, resources, member(member(ctx.previous, "containers"), c.name));
    if (sizing.said.empty()) {
      // Nothing to change: the records that still describe the container stay.
      Json kept = Json::object();
      for (const std::string resource : kResources) {
        if (sizing.explanation.contains(resource)) kept[resource] = sizing.explanation[resource];
      }
      if (!kept.empty()) {
        explanation_bytes += kept.dump().size() + c.name.size() + 4;
        explanation["containers"][c.name] = std::move(kept);
      }
      continue;
    }
    Json top = Json::array();
    for (size_t i = 0; i < rec->explanation.size() && i < 3; ++i) {
      top.push_back({{"feature", rec->explanation[i].feature}, {"contribution", std::round(rec->explanation[i].contribution * 1000) / 1000}});
    }
    sizing.explanation["top"] = std::move(top);
    // The apiserver rejects objects whose annotations exceed 256 KiB in total. A change the
    // annotation cannot record would not be recognised on reinvocation and would be cut
    // again, so past the budget containers are left as they are and counted.
    const size_t size = sizing.explanation.dump().size() + c.name.size() + 4;
    if (explanation_bytes + size > kMaxExplanationBytes) {
      ++omitted_containers;
      continue;
    }
    explanation_bytes += size;
    explanation["containers"][c.name] = std::move(sizing.explanation);

    write_changes(c, sizing, patch, result);
    result.warnings.push_back(change_warning(c.name, sizing, *rec, explanation, result.mode));
  }
  if (omitted_containers > 0) {
    result.notes.push_back(std::to_string(omitted_containers) +
                           " containers left as written: the sizeguard.io/rightsized annotation has no room to record them");
  }
  if (result.changes.empty()) return result;
  finish_patch(view, ctx, patch, explanation, omitted_containers, state, result);
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
  // A dry run creates nothing; only what the apiserver may store is counted.
  if (!result.applies || result.changes.empty() || request.dry_run) return;
  const WorkloadKind kind = workload_kind_from(request.kind.kind);
  std::lock_guard lock(mutex_);
  const Json* owners = json_at(request.object, "/metadata/ownerReferences");
  if (kind == WorkloadKind::Pod && owners && owners->is_array() && !owners->empty()) {
    // Pods made by a controller count through their workload: per-pod values times the
    // replicas its own admission reported (1 until it is seen).
    const auto first = result.workload.find('/'), second = result.workload.find('/', first + 1);
    if (first == std::string::npos || second == std::string::npos) return;
    const std::string owner_kind = result.workload.substr(first + 1, second - first - 1);
    if (owner_kind == "Pod") return;
    Row& row = rows_[result.workload];
    const int64_t replicas = result.replicas > 1 || row.kind.empty() ? result.replicas : row.replicas;
    row = Row{request.namespace_, owner_kind, result.workload.substr(second + 1), std::string(to_string(result.mode)),
              replicas, result.cpu_before, result.cpu_after, result.memory_before, result.memory_after, result.cold_start};
    export_metrics(request.namespace_);
    return;
  }
  Row row{request.namespace_, request.kind.kind, request.display_name(), std::string(to_string(result.mode)),
          result.replicas, result.cpu_before, result.cpu_after, result.memory_before, result.memory_after,
          result.cold_start};
  const std::string key = request.namespace_ + "/" + request.kind.kind + "/" + request.display_name();
  auto it = rows_.find(key);
  replaced_[key] = it == rows_.end() ? std::nullopt : std::optional<Row>(it->second);
  rows_[key] = row;
  export_metrics(request.namespace_);
}

void RecommendationReport::validated(const AdmissionRequest& request, bool allowed) {
  if (request.dry_run) return;
  const std::string key = request.namespace_ + "/" + request.kind.kind + "/" + request.display_name();
  std::lock_guard lock(mutex_);
  auto it = replaced_.find(key);
  if (it == replaced_.end()) return;
  if (allowed) {
    replaced_.erase(it);
    return;
  }
  if (it->second) rows_[key] = *it->second;
  else rows_.erase(key);
  replaced_.erase(it);
  export_metrics(request.namespace_);
}

void RecommendationReport::export_metrics(const std::string& ns) {
  Totals t;
  // Every key starts with the row's namespace and a slash, so one namespace's rows are adjacent.
  const std::string prefix = ns + "/";
  for (auto it = rows_.lower_bound(prefix); it != rows_.end() && it->first.starts_with(prefix); ++it) {
    const Row& row = it->second;
    const double n = static_cast<double>(row.replicas);
    t.cpu_before += row.cpu_before * n;
    t.cpu_after += row.cpu_after * n;
    t.memory_before += row.memory_before * n;
    t.memory_after += row.memory_after * n;
    t.modes[row.mode]++;
  }
  auto previous = totals_.find(ns);
  if (previous != totals_.end() && previous->second == t) return;  // nothing changed
  // A series disappears (the namespace's last row, or its last row in a mode, is gone): the
  // families are rebuilt from the per-namespace totals. Otherwise this namespace's series are
  // set over the old ones.
  bool rebuild = t.modes.empty();
  if (previous != totals_.end()) {
    for (const auto& [mode, count] : previous->second.modes) rebuild = rebuild || !t.modes.contains(mode);
  }
  if (t.modes.empty()) totals_.erase(ns);
  else totals_[ns] = std::move(t);
  // Millicores and whole bytes: sums of doubles would otherwise print as 0.8999999999999999.
  auto millis = [](double cores) { return std::round(cores * 1000) / 1000; };
  auto set = [&](const std::string& name, const Totals& totals) {
    metrics_.set("sizeguard_recommendation_cpu_cores", {{"namespace", name}, {"value", "current"}}, millis(totals.cpu_before));
    metrics_.set("sizeguard_recommendation_cpu_cores", {{"namespace", name}, {"value", "recommended"}}, millis(totals.cpu_after));
    metrics_.set("sizeguard_recommendation_memory_bytes", {{"namespace", name}, {"value", "current"}}, std::round(totals.memory_before));
    metrics_.set("sizeguard_recommendation_memory_bytes", {{"namespace", name}, {"value", "recommended"}}, std::round(totals.memory_after));
    for (const auto& [mode, count] : totals.modes) {
      metrics_.set("sizeguard_recommendation_workloads", {{"namespace", name}, {"mode", mode}}, count);
    }
  };
  if (!rebuild) {
    set(ns, totals_[ns]);
    return;
  }
  metrics_.clear("sizeguard_recommendation_cpu_cores");
  metrics_.clear("sizeguard_recommendation_memory_bytes");
  metrics_.clear("sizeguard_recommendation_workloads");
  for (const auto& [name, totals] : totals_) set(name, totals);
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
