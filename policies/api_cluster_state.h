// ClusterState over the Kubernetes API, with a short-TTL cache: namespace labels and
// objects are cached for `object_ttl`, active pods for `pods_ttl` (0 = always fresh).
// Errors are never cached. Thread-safe; concurrent misses may each fetch. For one-shot use
// (`review --kubeconfig`); `serve` reads watches kept in memory (watch_cluster_state.h).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "policies/cluster_state.h"
#include "kube/kubeapi.h"

namespace sizeguard {

class ApiClusterState : public ClusterState {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  explicit ApiClusterState(KubeClient& client, std::chrono::milliseconds object_ttl = std::chrono::seconds(10),
                           std::chrono::milliseconds pods_ttl = std::chrono::milliseconds(0),
                           Clock clock = [] { return std::chrono::steady_clock::now(); });

  StateResult<Json> namespace_labels(std::string_view ns) override;
  StateResult<Json> get_object(std::string_view group, std::string_view version, std::string_view resource,
                               std::string_view ns, std::string_view name) override;
  StateResult<std::vector<Json>> active_pods(std::string_view ns) override;

  // The API paths used (escaped), for messages and tests.
  static std::string namespace_path(std::string_view ns);
  static std::string object_path(std::string_view group, std::string_view version, std::string_view resource,
                                 std::string_view ns, std::string_view name);
  static std::string active_pods_path(std::string_view ns);

  void clear_cache();

 private:
  struct Entry {
    Json value;
    std::chrono::steady_clock::time_point expires;
  };
  // The cached JSON for `path` if fresh, else fetches it (caching successes for `ttl`).
  std::variant<Json, std::string> fetch(const std::string& path, std::chrono::milliseconds ttl);

  KubeClient& client_;
  std::chrono::milliseconds object_ttl_;
  std::chrono::milliseconds pods_ttl_;
  Clock clock_;
  std::mutex mutex_;
  std::map<std::string, Entry> cache_;
};

}  // namespace sizeguard
