#include "policies/api_cluster_state.h"

#include <utility>

namespace sizeguard {

namespace {
constexpr std::size_t kMaxCacheEntries = 4096;
}

ApiClusterState::ApiClusterState(KubeClient& client, std::chrono::milliseconds object_ttl,
                                 std::chrono::milliseconds pods_ttl, Clock clock)
    : client_(client), object_ttl_(object_ttl), pods_ttl_(pods_ttl), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return std::chrono::steady_clock::now(); };
}

std::string ApiClusterState::namespace_path(std::string_view ns) {
  return "/api/v1/namespaces/" + kube_path_escape(ns);
}

std::string ApiClusterState::object_path(std::string_view group, std::string_view version,
                                         std::string_view resource, std::string_view ns, std::string_view name) {
  std::string path = group.empty() ? "/api/" + kube_path_escape(version)
                                   : "/apis/" + kube_path_escape(group) + "/" + kube_path_escape(version);
  if (!ns.empty()) path += "/namespaces/" + kube_path_escape(ns);
  path += "/" + kube_path_escape(resource) + "/" + kube_path_escape(name);
  return path;
}

std::string ApiClusterState::active_pods_path(std::string_view ns) {
  return "/api/v1/namespaces/" + kube_path_escape(ns) +
         "/pods?fieldSelector=" + kube_path_escape("status.phase!=Succeeded,status.phase!=Failed");
}

void ApiClusterState::clear_cache() {
  std::lock_guard lock(mutex_);
  cache_.clear();
}

std::variant<Json, std::string> ApiClusterState::fetch(const std::string& path, std::chrono::milliseconds ttl) {
  if (ttl.count() > 0) {
    std::lock_guard lock(mutex_);
    auto found = cache_.find(path);
    if (found != cache_.end()) {
      if (clock_() < found->second.expires) return found->second.value;
      cache_.erase(found);
    }
  }
  auto result = client_.get_json(path);  // no lock held: concurrent misses may each fetch
  if (ttl.count() > 0 && std::holds_alternative<Json>(result)) {
    auto now = clock_();
    std::lock_guard lock(mutex_);
    if (cache_.size() >= kMaxCacheEntries) {
      std::erase_if(cache_, [&](const auto& entry) { return entry.second.expires <= now; });
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    }
    cache_[path] = Entry{std::get<Json>(result), now + ttl};
  }
  return result;
}

StateResult<Json> ApiClusterState::namespace_labels(std::string_view ns) {
  auto result = fetch(namespace_path(ns), object_ttl_);
  if (auto* error = std::get_if<std::string>(&result)) return ClusterStateError{*error};
  const Json& object = std::get<Json>(result);
  auto metadata = object.find("metadata");
  if (metadata != object.end() && metadata->is_object()) {
    auto labels = metadata->find("labels");
    if (labels != metadata->end() && labels->is_object()) return *labels;
  }
  return Json::object();
}

StateResult<Json> ApiClusterState::get_object(std::string_view group, std::string_view version,
                                              std::string_view resource, std::string_view ns,
                                              std::string_view name) {
  auto result = fetch(object_path(group, version, resource, ns, name), object_ttl_);
  if (auto* error = std::get_if<std::string>(&result)) return ClusterStateError{*error};
  return std::get<Json>(std::move(result));
}

StateResult<std::vector<Json>> ApiClusterState::active_pods(std::string_view ns) {
  const std::string path = active_pods_path(ns);
  auto result = fetch(path, pods_ttl_);
  if (auto* error = std::get_if<std::string>(&result)) return ClusterStateError{*error};
  const Json& list = std::get<Json>(result);
  auto items = list.find("items");
  if (items == list.end() || !(items->is_array() || items->is_null())) {
    return ClusterStateError{"GET " + path + ": the response has no items list"};
  }
  std::vector<Json> pods;
  if (items->is_array()) {
    for (const auto& pod : *items) {
      if (!pod.is_object()) continue;
      // The server filtered already; skip terminated pods anyway in case it ignored the selector.
      const auto phase = pod.value("/status/phase"_json_pointer, std::string());
      if (phase == "Succeeded" || phase == "Failed") continue;
      pods.push_back(pod);
    }
  }
  return pods;
}

}  // namespace sizeguard
