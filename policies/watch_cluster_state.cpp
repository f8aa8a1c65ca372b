#include "policies/watch_cluster_state.h"

#include "policies/api_cluster_state.h"

namespace sizeguard {
namespace {

constexpr const char* kLastApplied = "kubectl.kubernetes.io/last-applied-configuration";

// kubectl's copy of the whole object: often the largest part of it, and never read here.
Json drop_last_applied(Json object) {
  if (object.contains("/metadata/annotations"_json_pointer) && object["metadata"]["annotations"].is_object()) {
    object["metadata"]["annotations"].erase(kLastApplied);
  }
  return object;
}

Json labels_of(const Json& object) {
  auto metadata = object.find("metadata");
  if (metadata != object.end() && metadata->is_object()) {
    auto labels = metadata->find("labels");
    if (labels != metadata->end() && labels->is_object()) return *labels;
  }
  return Json::object();
}

bool terminated(const Json& pod) {
  const auto phase = pod.value("/status/phase"_json_pointer, std::string());
  return phase == "Succeeded" || phase == "Failed";
}

}  // namespace

Json WatchClusterState::trim_pod(Json pod) {
  Json out = Json::object();
  for (const char* key : {"apiVersion", "kind"}) {
    if (pod.contains(key)) out[key] = std::move(pod[key]);
  }
  if (pod.contains("metadata") && pod["metadata"].is_object()) {
    Json& metadata = pod["metadata"];
    out["metadata"] = Json::object();
    for (const char* key : {"name", "namespace", "uid", "resourceVersion", "labels", "ownerReferences"}) {
      if (metadata.contains(key)) out["metadata"][key] = std::move(metadata[key]);
    }
  }
  if (pod.contains("spec") && pod["spec"].is_object()) {
    Json& spec = pod["spec"];
    out["spec"] = Json::object();
    for (const char* list : {"containers", "initContainers"}) {
      if (!spec.contains(list) || !spec[list].is_array()) continue;
      Json containers = Json::array();
      for (auto& container : spec[list]) {
        if (!container.is_object()) continue;
        Json kept = Json::object();
        for (const char* key : {"name", "resources", "restartPolicy"}) {
          if (container.contains(key)) kept[key] = std::move(container[key]);
        }
        containers.push_back(std::move(kept));
      }
      out["spec"][list] = std::move(containers);
    }
    for (const char* key : {"resources", "overhead", "nodeName"}) {
      if (spec.contains(key)) out["spec"][key] = std::move(spec[key]);
    }
  }
  if (pod.contains("/status/phase"_json_pointer)) out["status"]["phase"] = std::move(pod["status"]["phase"]);
  return out;
}

WatchClusterState::WatchClusterState(KubeClient& client, WatchClusterStateOptions options)
    : client_(client), options_(std::move(options)) {
  if (options_.metrics) describe_watch_metrics(*options_.metrics);
  auto add = [&](std::string name, std::string path, std::function<Json(Json)> transform,
                 std::string field_selector = "") {
    InformerOptions o;
    o.name = name;
    o.path = std::move(path);
    o.field_selector = std::move(field_selector);
    o.transform = std::move(transform);
    o.watch_timeout = options_.watch_timeout;
    o.read_timeout = options_.read_timeout;
    o.backoff_initial = options_.backoff_initial;
    o.backoff_max = options_.backoff_max;
    o.metrics = options_.metrics;
    if (options_.readiness) {
      o.on_synced = [readiness = options_.readiness, name] { readiness("watch " + name, true, ""); };
      options_.readiness("watch " + name, false, "not listed yet");
    }
    informers_.push_back(std::make_unique<Informer>(client_, std::move(o)));
    return informers_.back().get();
  };
  namespaces_ = add("namespaces", "/api/v1/namespaces", drop_last_applied);
  // Terminated pods hold no resources: the server leaves them out (and sends DELETED
  // when a pod terminates), which also keeps the store to the pods that matter.
  pods_ = add("pods", "/api/v1/pods", trim_pod, "status.phase!=Succeeded,status.phase!=Failed");
  for (const char* resource : {"deployments", "statefulsets", "replicasets"}) {
    workloads_[resource] = add(resource, std::string("/apis/apps/v1/") + resource, drop_last_applied);
  }
}

WatchClusterState::~WatchClusterState() { stop(); }

void WatchClusterState::start() {
  for (auto& informer : informers_) informer->start();
  refresher_.start(options_.metrics_interval, [this] { refresh(); });
}

void WatchClusterState::stop() {
  refresher_.stop();
  for (auto& informer : informers_) informer->stop();
}

bool WatchClusterState::synced() const { return pending().empty(); }

std::vector<std::string> WatchClusterState::pending() const {
  std::vector<std::string> out;
  for (const auto& informer : informers_) {
    if (!informer->synced()) out.push_back(informer->name());
  }
  return out;
}

const Informer* WatchClusterState::informer(const std::string& resource) const {
  for (const auto& informer : informers_) {
    if (informer->name() == resource) return informer.get();
  }
  return nullptr;
}

void WatchClusterState::refresh() {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& informer : informers_) {
    informer->export_metrics(now);
    // Every time, both ways: a sync racing this refresh is corrected on the next one.
    if (options_.readiness) {
      const InformerStatus status = informer->status();
      options_.readiness("watch " + informer->name(), status.synced,
                         status.synced ? "" : "not listed yet: " + status.last_error);
    }
  }
}

std::optional<ClusterStateError> WatchClusterState::unusable(const Informer& informer) const {
  const InformerStatus status = informer.status();
  if (!status.synced) {
    return ClusterStateError{"watch of " + informer.name() + " not synced yet (" + status.last_error + ")"};
  }
  if (status.broken_since) {
    const auto broken = std::chrono::steady_clock::now() - *status.broken_since;
    if (broken > options_.max_staleness) {
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(broken).count();
      return ClusterStateError{"watch of " + informer.name() + " broken for " + std::to_string(seconds) + " s (" +
                               status.last_error + ")"};
    }
  }
  return std::nullopt;
}

StateResult<Json> WatchClusterState::read(const Informer& informer, const std::string& ns, const std::string& name,
                                          const std::string& path) {
  if (auto error = unusable(informer)) return *error;
  if (auto object = informer.get(ns, name)) return *object;
  // Not in the store: created an instant ago (its event is on the way), or absent.
  auto result = client_.get_json(path);
  if (auto* error = std::get_if<std::string>(&result)) return ClusterStateError{*error};
  return std::get<Json>(std::move(result));
}

StateResult<Json> WatchClusterState::namespace_labels(std::string_view ns) {
  auto object = read(*namespaces_, "", std::string(ns), ApiClusterState::namespace_path(ns));
  if (auto* error = std::get_if<ClusterStateError>(&object)) return *error;
  return labels_of(std::get<Json>(object));
}

StateResult<Json> WatchClusterState::get_object(std::string_view group, std::string_view version,
                                                std::string_view resource, std::string_view ns,
                                                std::string_view name) {
  const std::string path = ApiClusterState::object_path(group, version, resource, ns, name);
  if (group == "apps" && version == "v1") {
    if (auto found = workloads_.find(resource); found != workloads_.end()) {
      return read(*found->second, std::string(ns), std::string(name), path);
    }
  }
  // Not watched: read it now (uncached, so never stale).
  auto result = client_.get_json(path);
  if (auto* error = std::get_if<std::string>(&result)) return ClusterStateError{*error};
  return std::get<Json>(std::move(result));
}

StateResult<std::vector<Json>> WatchClusterState::active_pods(std::string_view ns) {
  if (auto error = unusable(*pods_)) return *error;
  std::vector<Json> pods;
  for (const auto& pod : pods_->list(std::string(ns))) {
    if (!terminated(*pod)) pods.push_back(*pod);
  }
  return pods;
}

}  // namespace sizeguard
