#include "webhook/app/existing_audit.h"

#include <algorithm>
#include <map>

#include "kube/workload.h"

namespace sizeguard {
namespace {

std::string string_at(const Json& object, const char* pointer) {
  const Json* value = json_at(object, pointer);
  return value && value->is_string() ? value->get<std::string>() : std::string();
}

bool controller_owned(const Json& object) {
  const Json* owners = json_at(object, "/metadata/ownerReferences");
  if (!owners || !owners->is_array()) return false;
  return std::any_of(owners->begin(), owners->end(), [](const Json& o) {
    return o.is_object() && o.value("controller", Json(false)) == Json(true);
  });
}

// The state as admission of a new object would see it: an existing Pod is already among
// its namespace's active pods, and counting it there and as the pod being admitted would
// charge its GPUs twice against namespaceTotal.
class WithoutSelf : public ClusterState {
 public:
  WithoutSelf(ClusterState& inner, std::string ns, std::string pod)
      : inner_(inner), ns_(std::move(ns)), pod_(std::move(pod)) {}
  StateResult<Json> namespace_labels(std::string_view ns) override { return inner_.namespace_labels(ns); }
  StateResult<Json> get_object(std::string_view group, std::string_view version, std::string_view resource,
                               std::string_view ns, std::string_view name) override {
    return inner_.get_object(group, version, resource, ns, name);
  }
  StateResult<std::vector<Json>> active_pods(std::string_view ns) override {
    auto pods = inner_.active_pods(ns);
    if (ns != ns_ || pod_.empty()) return pods;
    if (auto* list = std::get_if<std::vector<Json>>(&pods)) {
      std::erase_if(*list, [&](const Json& pod) { return string_at(pod, "/metadata/name") == pod_; });
    }
    return pods;
  }

 private:
  ClusterState& inner_;
  std::string ns_, pod_;
};

std::string result_word(const std::string& outcome) {
  if (outcome == "deny" || outcome == "audit") return "fail";
  return outcome;  // pass, warn, error
}

// A Pod as the workload's controller would create it: the template with a controller
// ownerReference to the workload, so right-sizing looks the workload's recommendations up.
AdmissionRequest pod_from_template(const AdmissionRequest& workload) {
  const WorkloadKind kind = workload_kind_from(workload.kind.kind);
  AdmissionRequest pod = workload;
  pod.kind = pod.request_kind = {"", "v1", "Pod"};
  pod.resource = pod.request_resource = {"", "v1", "pods"};
  const Json* meta = json_at(workload.object, pod_metadata_pointer(kind)->c_str());
  const Json* spec = json_at(workload.object, pod_spec_pointer(kind)->c_str());
  Json metadata = meta ? *meta : Json::object();
  metadata["name"] = workload.name;
  metadata["namespace"] = workload.namespace_;
  metadata["ownerReferences"] = Json::array({{{"apiVersion", workload.object.value("apiVersion", std::string())},
                                              {"kind", workload.kind.kind},
                                              {"name", workload.name},
                                              {"controller", true}}});
  pod.object = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", std::move(metadata)},
                {"spec", spec ? *spec : Json::object()}};
  return pod;
}

int64_t pods_of(const Json& object, WorkloadKind kind) {
  if (kind == WorkloadKind::DaemonSet) {
    const Json* scheduled = json_at(object, "/status/desiredNumberScheduled");
    return scheduled && scheduled->is_number_integer() ? std::max<int64_t>(1, scheduled->get<int64_t>()) : 1;
  }
  return std::max<int64_t>(1, replicas(object, kind).value_or(1));
}

std::optional<double> lowest_confidence(const RightsizingResult& result, const Json& object) {
  Json patched;
  try {
    patched = object.patch(result.patch);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const Json* annotation = json_at(patched, "/metadata/annotations/sizeguard.io~1rightsized");
  if (!annotation || !annotation->is_string()) return std::nullopt;
  const Json explanation = Json::parse(annotation->get<std::string>(), nullptr, false);
  const Json* containers = json_at(explanation, "/containers");
  if (!containers || !containers->is_object()) return std::nullopt;
  std::optional<double> lowest;
  for (const auto& [name, c] : containers->items()) {
    const Json* confidence = json_at(c, "/confidence");
    if (confidence && confidence->is_number() && c.contains("top")) {  // "top": a container it changed
      lowest = std::min(lowest.value_or(1.0), confidence->get<double>());
    }
  }
  return lowest;
}

}  // namespace

std::string AuditedResource::collection_path() const {
  return std::string(*group ? "/apis/" + std::string(group) + "/" : "/api/") + version + "/" + resource;
}

const std::vector<AuditedResource>& audited_resources() {
  static const std::vector<AuditedResource> kResources = {
      {"Pod", "", "v1", "pods"},
      {"Deployment", "apps", "v1", "deployments"},
      {"StatefulSet", "apps", "v1", "statefulsets"},
      {"DaemonSet", "apps", "v1", "daemonsets"},
      {"ReplicaSet", "apps", "v1", "replicasets"},
      {"Job", "batch", "v1", "jobs"},
      {"CronJob", "batch", "v1", "cronjobs"},
      // Its min/max replicas are judged by the replica rules, as on admission.
      {"HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers"},
  };
  return kResources;
}

const AuditedResource* audited_resource(std::string_view kind) {
  for (const auto& r : audited_resources()) {
    if (kind == r.kind) return &r;
  }
  return nullptr;
}

bool ObjectAudit::denies() const {
  return std::any_of(results.begin(), results.end(), [](const AuditResult& r) { return r.denies; });
}

AdmissionRequest synthesize_create(const Json& object, const AuditedResource& kind) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "audit-" + string_at(object, "/metadata/uid");
  r.kind = r.request_kind = {kind.group, kind.version, kind.kind};
  r.resource = r.request_resource = {kind.group, kind.version, kind.resource};
  r.name = string_at(object, "/metadata/name");
  r.namespace_ = string_at(object, "/metadata/namespace");
  r.operation = Operation::Create;
  r.object = object;
  if (!r.object.is_object()) r.object = Json::object();
  r.object["apiVersion"] = std::string(*kind.group ? std::string(kind.group) + "/" : "") + kind.version;
  r.object["kind"] = kind.kind;
  r.options = {{"apiVersion", "meta.k8s.io/v1"}, {"kind", "CreateOptions"}};
  return r;  // user_info empty: no automation actor, no break-glass
}

ObjectAudit audit_existing_object(const Json& object, const AuditedResource& kind, const ExistingAuditInputs& inputs) {
  ObjectAudit audit;
  audit.kind = kind.kind;
  audit.api_version = std::string(*kind.group ? std::string(kind.group) + "/" : "") + kind.version;
  audit.namespace_ = string_at(object, "/metadata/namespace");
  audit.name = string_at(object, "/metadata/name");
  audit.uid = string_at(object, "/metadata/uid");
  if (!object.is_object() || audit.name.empty()) {
    audit.skipped = "not an object with metadata.name";
    return audit;
  }
  // A controller rewrites what it owns (a Deployment's ReplicaSets, their Pods, a CronJob's
  // Jobs): the owner is judged, as admission rules judge owners rather than what they make.
  if (controller_owned(object)) {
    audit.skipped = "owned by a controller";
    return audit;
  }
  const WorkloadKind workload = workload_kind_from(kind.kind);
  if (workload == WorkloadKind::Pod) {
    const std::string phase = string_at(object, "/status/phase");
    if (phase == "Succeeded" || phase == "Failed") {
      audit.skipped = "terminated (" + phase + ")";
      return audit;
    }
  }
  const AdmissionRequest request = synthesize_create(object, kind);
  WithoutSelf state(*inputs.state, audit.namespace_, workload == WorkloadKind::Pod ? audit.name : "");

  const Decision decision = evaluate_policies(request, *inputs.policies, state, inputs.evaluation);
  audit.notes = decision.notes;
  for (const auto& outcome : decision.outcomes) {
    AuditResult result{outcome.policy, outcome.rule, result_word(outcome.result), outcome.mode, "", "", false};
    for (const auto& f : decision.findings) {
      if (f.policy != outcome.policy || f.rule != outcome.rule) continue;
      result.message += (result.message.empty() ? "" : "; ") + f.cause.message;
      if (result.reason.find(f.cause.reason) == std::string::npos) {
        result.reason += (result.reason.empty() ? "" : ",") + f.cause.reason;
      }
      result.denies = result.denies || f.denies;
    }
    audit.results.push_back(std::move(result));
  }

  if (!inputs.rightsizing.recommendations && !inputs.rightsizing.model) return audit;
  if (!pod_spec_pointer(workload)) return audit;  // an HPA: no containers to size
  RightsizingResult sized = rightsize(request, *inputs.policies, state, inputs.rightsizing, inputs.evaluation);
  const Json* sized_object = &request.object;
  AdmissionRequest pod;
  if (!sized.applies && workload != WorkloadKind::Pod) {
    pod = pod_from_template(request);
    sized = rightsize(pod, *inputs.policies, state, inputs.rightsizing, inputs.evaluation);
    sized_object = &pod.object;
  }
  if (!sized.applies) return audit;
  AuditSizing sizing;
  sizing.policy = sized.policy;
  sizing.mode = sized.mode;
  sizing.workload = sized.workload;
  sizing.cpu_before = sized.cpu_before;
  sizing.cpu_after = sized.cpu_after;
  sizing.memory_before = sized.memory_before;
  sizing.memory_after = sized.memory_after;
  sizing.replicas = pods_of(object, workload);
  sizing.cold_start = sized.cold_start;
  sizing.notes = sized.notes;
  for (const auto& c : sized.changes) {
    sizing.changes.push_back({c.container, c.resource, c.field, c.before ? c.before->to_string() : "",
                              c.after ? c.after->to_string() : ""});
  }
  if (!sized.changes.empty()) sizing.confidence = lowest_confidence(sized, *sized_object);
  audit.rightsizing = std::move(sizing);
  return audit;
}

}  // namespace sizeguard
