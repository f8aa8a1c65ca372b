#include "kube/workload.h"

#include <algorithm>
#include <array>

namespace sizeguard {

namespace {

const Json& empty_object() {
  static const Json empty = Json::object();
  return empty;
}


const Json& member_object(const Json& object, const char* key) {
  if (!object.is_object()) return empty_object();
  auto it = object.find(key);
  return it != object.end() && it->is_object() ? *it : empty_object();
}

std::optional<int64_t> integer_at(const Json& object, std::string_view pointer) {
  const Json* node = json_at(object, pointer);
  if (node == nullptr || !node->is_number_integer()) return std::nullopt;
  return node->get<int64_t>();
}

}  // namespace

// Follows a JSON Pointer without throwing; nullptr when any step is missing or mistyped.
const Json* json_at(const Json& document, std::string_view pointer) {
  const Json* node = &document;
  size_t pos = 0;
  while (pos < pointer.size()) {
    if (pointer[pos] != '/') return nullptr;
    const size_t next = pointer.find('/', pos + 1);
    const std::string_view token = pointer.substr(pos + 1, next == std::string_view::npos ? std::string_view::npos : next - pos - 1);
    if (!node->is_object()) return nullptr;
    std::string key(token);
    for (std::size_t at = key.find('~'); at != std::string::npos; at = key.find('~', at + 1)) {
      if (at + 1 < key.size() && (key[at + 1] == '0' || key[at + 1] == '1')) key.replace(at, 2, key[at + 1] == '0' ? "~" : "/");
    }
    auto it = node->find(key);
    if (it == node->end()) return nullptr;
    node = &*it;
    pos = next == std::string_view::npos ? pointer.size() : next;
  }
  return node;
}

bool has_controller_owner(const Json& object) {
  if (!object.is_object()) return false;
  const Json* owners = json_at(object, "/metadata/ownerReferences");  // metadata may be any type
  if (!owners || !owners->is_array()) return false;
  return std::any_of(owners->begin(), owners->end(), [](const Json& o) {
    return o.is_object() && o.value("controller", Json(false)) == Json(true);
  });
}

WorkloadView workload_view(const AdmissionRequest& request) {
  WorkloadView view;
  const Json& object = request.subject();
  view.is_scale = request.sub_resource == "scale";
  view.kind = view.is_scale ? workload_kind_from_resource(request.resource.resource) : workload_kind_from(request.kind.kind);
  view.kind_name = view.is_scale ? std::string(to_string(view.kind)) : request.kind.kind;
  if (view.kind == WorkloadKind::HorizontalPodAutoscaler) {
    const Json* target = json_at(object, "/spec/scaleTargetRef/kind");
    if (target && target->is_string()) view.hpa_target_kind = target->get<std::string>();
  }
  view.pod_spec_pointer = pod_spec_pointer(view.kind);
  view.pod_metadata_pointer = pod_metadata_pointer(view.kind);
  if (view.pod_spec_pointer) view.pod_spec = json_at(object, *view.pod_spec_pointer);
  view.containers = containers(object, view.kind);
  view.replicas = replicas(object, view.is_scale ? WorkloadKind::Scale : view.kind);
  view.controller_owned = has_controller_owner(object);
  return view;
}

WorkloadKind workload_kind_from(std::string_view kind) {
  static constexpr std::array<std::pair<std::string_view, WorkloadKind>, 10> kinds{{
      {"Pod", WorkloadKind::Pod},
      {"Deployment", WorkloadKind::Deployment},
      {"StatefulSet", WorkloadKind::StatefulSet},
      {"DaemonSet", WorkloadKind::DaemonSet},
      {"ReplicaSet", WorkloadKind::ReplicaSet},
      {"ReplicationController", WorkloadKind::ReplicationController},
      {"Job", WorkloadKind::Job},
      {"CronJob", WorkloadKind::CronJob},
      {"Scale", WorkloadKind::Scale},
      {"HorizontalPodAutoscaler", WorkloadKind::HorizontalPodAutoscaler},
  }};
  for (const auto& [name, value] : kinds) {
    if (name == kind) return value;
  }
  return WorkloadKind::Other;
}

WorkloadKind workload_kind_from_resource(std::string_view resource) {
  static constexpr std::array<std::pair<std::string_view, WorkloadKind>, 10> resources{{
      {"pods", WorkloadKind::Pod},
      {"deployments", WorkloadKind::Deployment},
      {"statefulsets", WorkloadKind::StatefulSet},
      {"daemonsets", WorkloadKind::DaemonSet},
      {"replicasets", WorkloadKind::ReplicaSet},
      {"replicationcontrollers", WorkloadKind::ReplicationController},
      {"jobs", WorkloadKind::Job},
      {"cronjobs", WorkloadKind::CronJob},
      {"horizontalpodautoscalers", WorkloadKind::HorizontalPodAutoscaler},
      {"scales", WorkloadKind::Scale},
  }};
  for (const auto& [name, value] : resources) {
    if (name == resource) return value;
  }
  return WorkloadKind::Other;
}

std::string_view to_string(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::Pod: return "Pod";
    case WorkloadKind::Deployment: return "Deployment";
    case WorkloadKind::StatefulSet: return "StatefulSet";
    case WorkloadKind::DaemonSet: return "DaemonSet";
    case WorkloadKind::ReplicaSet: return "ReplicaSet";
    case WorkloadKind::ReplicationController: return "ReplicationController";
    case WorkloadKind::Job: return "Job";
    case WorkloadKind::CronJob: return "CronJob";
    case WorkloadKind::Scale: return "Scale";
    case WorkloadKind::HorizontalPodAutoscaler: return "HorizontalPodAutoscaler";
    case WorkloadKind::Other: return "Other";
  }
  return "Other";
}

std::string_view to_string(ContainerType type) {
  switch (type) {
    case ContainerType::Regular: return "container";
    case ContainerType::Init: return "initContainer";
    case ContainerType::Sidecar: return "sidecar";
    case ContainerType::Ephemeral: return "ephemeralContainer";
  }
  return "container";
}

std::optional<std::string> pod_spec_pointer(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::Pod: return "/spec";
    case WorkloadKind::Deployment:
    case WorkloadKind::StatefulSet:
    case WorkloadKind::DaemonSet:
    case WorkloadKind::ReplicaSet:
    case WorkloadKind::ReplicationController:
    case WorkloadKind::Job: return "/spec/template/spec";
    case WorkloadKind::CronJob: return "/spec/jobTemplate/spec/template/spec";
    default: return std::nullopt;
  }
}

std::optional<std::string> pod_metadata_pointer(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::Pod: return "/metadata";
    case WorkloadKind::Deployment:
    case WorkloadKind::StatefulSet:
    case WorkloadKind::DaemonSet:
    case WorkloadKind::ReplicaSet:
    case WorkloadKind::ReplicationController:
    case WorkloadKind::Job: return "/spec/template/metadata";
    case WorkloadKind::CronJob: return "/spec/jobTemplate/spec/template/metadata";
    default: return std::nullopt;
  }
}

std::vector<ContainerRef> containers(const Json& object, WorkloadKind kind) {
  std::vector<ContainerRef> out;
  const auto spec_pointer = pod_spec_pointer(kind);
  if (!spec_pointer) return out;
  const Json* spec = json_at(object, *spec_pointer);
  if (spec == nullptr || !spec->is_object()) return out;

  // Init containers run first, so they come first; ephemeral ones were added last.
  static constexpr std::array<std::pair<const char*, ContainerType>, 3> lists{{
      {"initContainers", ContainerType::Init},
      {"containers", ContainerType::Regular},
      {"ephemeralContainers", ContainerType::Ephemeral},
  }};
  for (const auto& [key, type] : lists) {
    auto list = spec->find(key);
    if (list == spec->end() || !list->is_array()) continue;
    for (size_t i = 0; i < list->size(); ++i) {
      const Json& container = (*list)[i];
      if (!container.is_object()) continue;
      ContainerRef ref;
      if (auto name = container.find("name"); name != container.end() && name->is_string()) {
        ref.name = name->get<std::string>();
      }
      ref.type = type;
      if (type == ContainerType::Init) {
        auto restart = container.find("restartPolicy");
        if (restart != container.end() && restart->is_string() && *restart == "Always") {
          ref.type = ContainerType::Sidecar;
        }
      }
      ref.pointer = *spec_pointer + "/" + key + "/" + std::to_string(i);
      ref.node = &container;
      out.push_back(std::move(ref));
    }
  }
  return out;
}

std::optional<std::string> replicas_pointer(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::Deployment:
    case WorkloadKind::StatefulSet:
    case WorkloadKind::ReplicaSet:
    case WorkloadKind::ReplicationController:
    case WorkloadKind::Scale: return "/spec/replicas";
    case WorkloadKind::Job: return "/spec/parallelism";
    default: return std::nullopt;
  }
}

std::optional<int64_t> replicas(const Json& object, WorkloadKind kind) {
  const auto pointer = replicas_pointer(kind);
  if (!pointer || !object.is_object()) return std::nullopt;
  if (auto value = integer_at(object, *pointer)) return value;
  // The apiserver defaults an absent spec.replicas (and Job parallelism) to 1; a Scale
  // without spec.replicas means 0.
  return kind == WorkloadKind::Scale ? 0 : 1;
}

const Json& labels_of(const Json& object) {
  return member_object(member_object(object, "metadata"), "labels");
}

const Json& annotations_of(const Json& object) {
  return member_object(member_object(object, "metadata"), "annotations");
}

std::optional<Quantity> resource_quantity(const Json& resources, std::string_view field, std::string_view name) {
  if (!resources.is_object()) return std::nullopt;
  auto values = resources.find(field);
  if (values == resources.end() || !values->is_object()) return std::nullopt;
  auto value = values->find(name);
  if (value == values->end()) return std::nullopt;
  if (value->is_string()) return Quantity::parse(value->get_ref<const std::string&>());
  if (value->is_number()) return Quantity::parse(value->dump());
  return std::nullopt;
}

}  // namespace sizeguard
