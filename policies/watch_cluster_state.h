// ClusterState from watches kept in memory (client-go informers): namespaces, the active
// pods (GPU totals) and the workloads a Scale can refer to (apps/v1 deployments,
// statefulsets, replicasets). A review reads memory, never waits on the API, and sees a
// change as soon as its watch event arrives (no TTL).
//
// Reads fail with a ClusterStateError (the policy's onClusterStateError applies) before
// the resource's first LIST, and once its watch has been broken for longer than
// `max_staleness`: stale state is never used silently. An object the watch has not seen
// (created an instant ago) and get_object of an unwatched resource (replicationcontrollers,
// custom resources) are read with a direct GET.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policies/cluster_state.h"
#include "kube/informer.h"
#include "kube/kubeapi.h"
#include "kube/metrics.h"
#include "kube/periodic.h"

namespace sizeguard {

struct WatchClusterStateOptions {
  std::chrono::milliseconds max_staleness{60'000};  // a watch broken this long: reads fail
  std::chrono::seconds watch_timeout{300};
  std::chrono::milliseconds read_timeout{120'000};
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30'000};
  std::chrono::milliseconds metrics_interval{1000};  // staleness gauges and readiness refresh
  Metrics* metrics = nullptr;
  // Readiness of component "watch <resource>": false until its first LIST.
  std::function<void(const std::string& component, bool ready, const std::string& reason)> readiness;
};

class WatchClusterState : public ClusterState {
 public:
  explicit WatchClusterState(KubeClient& client, WatchClusterStateOptions options = {});
  ~WatchClusterState() override;

  void start();
  void stop();

  bool synced() const;
  std::vector<std::string> pending() const;  // resources not listed yet
  const Informer* informer(const std::string& resource) const;

  StateResult<Json> namespace_labels(std::string_view ns) override;
  StateResult<Json> get_object(std::string_view group, std::string_view version, std::string_view resource,
                               std::string_view ns, std::string_view name) override;
  StateResult<std::vector<Json>> active_pods(std::string_view ns) override;

  // What the stores keep of a Pod: what GPU counting and matching read.
  static Json trim_pod(Json pod);

 private:
  std::optional<ClusterStateError> unusable(const Informer& informer) const;
  // The watched object, else (not seen yet) a direct GET of `path`.
  StateResult<Json> read(const Informer& informer, const std::string& ns, const std::string& name,
                         const std::string& path);
  void refresh();

  KubeClient& client_;
  WatchClusterStateOptions options_;
  std::vector<std::unique_ptr<Informer>> informers_;
  Informer* namespaces_ = nullptr;
  Informer* pods_ = nullptr;
  std::map<std::string, Informer*, std::less<>> workloads_;  // apps/v1 resource → informer
  PeriodicTask refresher_;
};

}  // namespace sizeguard
