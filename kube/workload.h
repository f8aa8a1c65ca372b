// Workload access: where each kind keeps its pod spec, replicas and containers, so no
// other code re-derives these paths.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/quantity.h"
#include "kube/review.h"

namespace sizeguard {

enum class WorkloadKind {
  Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob,
  Scale, HorizontalPodAutoscaler, Other
};

WorkloadKind workload_kind_from(std::string_view kind);
std::string_view to_string(WorkloadKind kind);
// The kind behind a resource name, for subresource requests such as deployments/scale
// ("deployments" -> Deployment); Other when unknown.
WorkloadKind workload_kind_from_resource(std::string_view resource);

enum class ContainerType {
  Regular,    // spec.containers
  Init,       // spec.initContainers
  Sidecar,    // spec.initContainers with restartPolicy: Always (native sidecar)
  Ephemeral,  // spec.ephemeralContainers
};
std::string_view to_string(ContainerType type);

struct ContainerRef {
  std::string name;
  ContainerType type = ContainerType::Regular;
  std::string pointer;  // JSON Pointer of the container, e.g. /spec/template/spec/containers/0
  const Json* node = nullptr;  // the container object inside the document
};

// JSON Pointer of the PodSpec ("/spec", "/spec/template/spec",
// "/spec/jobTemplate/spec/template/spec"), or nullopt for kinds without one.
std::optional<std::string> pod_spec_pointer(WorkloadKind kind);
// JSON Pointer of the pod template metadata, or nullopt (Pods: "/metadata").
std::optional<std::string> pod_metadata_pointer(WorkloadKind kind);

// Every container, init container and ephemeral container of the object, in document order.
std::vector<ContainerRef> containers(const Json& object, WorkloadKind kind);

// Desired replicas where the kind has them: a Deployment/StatefulSet/ReplicaSet/
// ReplicationController without spec.replicas means 1; Scale reads spec.replicas;
// Job reports spec.parallelism (default 1). nullopt for kinds without replicas.
std::optional<int64_t> replicas(const Json& object, WorkloadKind kind);
// JSON Pointer where replicas live ("/spec/replicas", "/spec/parallelism"), or nullopt.
std::optional<std::string> replicas_pointer(WorkloadKind kind);

// A container's resources.<field>.<name> ("requests"/"limits", "cpu"), or nullopt when
// absent or not a quantity (the apiserver has validated it, so that means absent).
std::optional<Quantity> resource_quantity(const Json& resources, std::string_view field, std::string_view name);

// The value at a JSON Pointer (through objects only; ~0 and ~1 escapes honoured), or nullptr when a step is
// missing or not an object. Never throws, unlike nlohmann's json_pointer lookups, which
// throw on an array met where an object was expected.
const Json* json_at(const Json& document, std::string_view pointer);

// metadata.labels / annotations of the object itself (empty object when absent).
const Json& labels_of(const Json& object);
const Json& annotations_of(const Json& object);

// Whether the object has an ownerReference with controller: true (a controller made it).
bool has_controller_owner(const Json& object);

// The typed view of a request's object that right-sizing and the policy engine read:
// computed once per request (the handlers build it), so no stage re-derives the kind,
// the pod spec or the containers from the raw JSON. Pointers point into the request,
// which must outlive the view.
struct WorkloadView {
  // The kind policies judge: for a Scale request (subresource "scale"), the kind it
  // scales (deployments/scale -> Deployment); otherwise the object's kind.
  WorkloadKind kind = WorkloadKind::Other;
  bool is_scale = false;
  std::string kind_name;        // the kind's name as policies list it
  std::string hpa_target_kind;  // an HPA's spec.scaleTargetRef.kind, else ""
  // Of request.subject() (the object; the old object on DELETE):
  std::optional<std::string> pod_spec_pointer;      // pod_spec_pointer(kind)
  std::optional<std::string> pod_metadata_pointer;  // pod_metadata_pointer(kind)
  const Json* pod_spec = nullptr;                   // the PodSpec; null when absent
  std::vector<ContainerRef> containers;             // containers(subject, kind)
  std::optional<int64_t> replicas;                  // replicas(subject, Scale for a Scale request, else kind)
  bool controller_owned = false;                    // has_controller_owner(subject)
};

WorkloadView workload_view(const AdmissionRequest& request);

}  // namespace sizeguard
