// One resource kept in memory from the Kubernetes API, the client-go informer pattern:
// LIST (in pages), then WATCH from the list's resourceVersion with bookmarks; a watch
// that ends is resumed from the last resourceVersion seen, 410 Gone (an HTTP answer or an
// ERROR event) re-lists, and failures reconnect with capped, jittered exponential backoff.
// Watches carry a server-side timeoutSeconds, so streams are renewed regularly, and a read
// timeout, so a connection that went silent is noticed.
//
// Reads are thread-safe and never wait on the network. Whether the store may be trusted
// is the caller's call, from status(): synced() after the first LIST, and `broken_since`
// while no watch stream is established.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/kubeapi.h"
#include "kube/metrics.h"
#include "kube/review.h"

namespace sizeguard {

struct InformerOptions {
  std::string name;            // "pods": the `resource` label of the metrics, and in messages
  std::string path;            // collection path, e.g. "/api/v1/pods", "/apis/apps/v1/deployments"
  std::string field_selector;  // optional, unescaped ("status.phase!=Succeeded")
  // Reduces each stored object to what readers need (memory is per object in the
  // cluster); metadata.managedFields is always dropped before this runs.
  std::function<Json(Json)> transform;
  std::chrono::seconds watch_timeout{300};  // server-side timeoutSeconds, jittered up to 2x
  std::chrono::milliseconds read_timeout{120'000};  // apiserver bookmarks arrive about every minute
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30'000};
  int page_size = 500;  // LIST limit per page
  Metrics* metrics = nullptr;             // sizeguard_watch_* series, when set
  std::function<void()> on_synced;        // after every successful LIST (e.g. readiness)
};

struct InformerStatus {
  bool synced = false;  // a LIST has succeeded
  std::optional<std::chrono::steady_clock::time_point> broken_since;  // no established watch since
  std::chrono::steady_clock::time_point last_event;  // last event, bookmark or LIST
  std::chrono::steady_clock::time_point last_sync;   // last successful LIST
  std::uint64_t relists = 0;                          // LISTs after the first
  std::string resource_version;
  std::string last_error;
};

// Describes the metric families an informer records (once per Metrics).
void describe_watch_metrics(Metrics& metrics);

class Informer {
 public:
  Informer(KubeClient& client, InformerOptions options);
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  void start();
  void stop();  // ends the stream at once; idempotent

  const std::string& name() const { return options_.name; }
  bool synced() const;
  InformerStatus status() const;

  // The stored object (namespace "" for cluster-scoped ones), or null.
  std::shared_ptr<const Json> get(const std::string& ns, const std::string& name) const;
  std::vector<std::shared_ptr<const Json>> list(const std::string& ns) const;
  std::size_t size() const;

  // Sets the freshness gauges (staleness is time since the last event): call before a scrape.
  void export_metrics(std::chrono::steady_clock::time_point now) const;

 private:
  using Objects = std::map<std::string, std::map<std::string, std::shared_ptr<const Json>>>;  // ns → name
  enum class WatchEnd { Ended, Gone, Failed, Stopped };

  void run();
  bool list_all();  // replaces the store; false on failure (last_error set)
  WatchEnd watch_once(bool& established);
  void apply(const Json& event, WatchEnd& end);
  void mark_broken(const std::string& error);
  bool wait(std::chrono::milliseconds delay);  // false when stopping
  std::shared_ptr<const Json> prepare(Json object) const;

  KubeClient& client_;
  InformerOptions options_;

  mutable std::shared_mutex store_mutex_;
  Objects objects_;

  mutable std::mutex status_mutex_;
  InformerStatus status_;

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stopping_{false};
  KubeStreamCancel cancel_;
  std::thread thread_;
};

}  // namespace sizeguard
