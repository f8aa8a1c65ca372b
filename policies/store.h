// The policy set in force, hot-reloaded from a directory (a mounted ConfigMap). Readers
// take an immutable snapshot without locking; a reload that finds any error keeps the
// last good set and reports why.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "policies/policy.h"
#include "kube/metrics.h"
#include "kube/periodic.h"
#include "kube/shared_snapshot.h"

namespace sizeguard {

class PolicyStore {
 public:
  // Called after every load attempt that changed something: `ready` is false only while
  // no good set was ever loaded; `reason` says what is wrong (empty when all is well).
  using StatusCallback = std::function<void(bool ready, const std::string& reason)>;

  // An empty `path` means "no policies" (an empty set, always ready).
  PolicyStore(std::filesystem::path path, Metrics& metrics, StatusCallback on_status = {});
  ~PolicyStore();
  PolicyStore(const PolicyStore&) = delete;
  PolicyStore& operator=(const PolicyStore&) = delete;

  // Reloads if the files changed since the last attempt. Returns the errors of this
  // attempt (empty when it loaded or nothing changed).
  std::vector<std::string> reload();

  // The set in force; never null (an empty set until a good one loads).
  std::shared_ptr<const PolicySet> current() const { return current_.load(); }

  // Polls for changes every `interval` on a background thread until stop()/destruction.
  // Polling reads a few small files and parses them only when their fingerprint changed; it
  // catches the kubelet's ..data symlink swap and plain edits alike, which inotify on a
  // symlinked tree does not do reliably.
  void start(std::chrono::milliseconds interval);
  void stop();

 private:
  std::filesystem::path path_;
  Metrics& metrics_;
  StatusCallback on_status_;
  SharedSnapshot<PolicySet> current_;
  std::mutex reload_mutex_;  // one reload at a time (poller vs explicit calls)
  std::string last_fingerprint_;
  bool have_good_set_ = false;
  PeriodicTask poller_;
};

}  // namespace sizeguard
