// The recommendations snapshot in force (`--recommendations FILE`, written by
// `sizeguard recommend`), hot-reloaded like policies: polled, swapped atomically, and a
// file that does not load leaves the last good snapshot in force.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "kube/metrics.h"
#include "kube/periodic.h"
#include "kube/shared_snapshot.h"
#include "recommender/recommend.h"

namespace sizeguard {

class RecommendationStore {
 public:
  // Called after every load attempt that changed something (as PolicyStore's): `ready` is
  // false only until the first good load; `reason` says what is wrong (empty when all is
  // well, "last reload failed, previous snapshot in force: ..." when degraded).
  using StatusCallback = std::function<void(bool ready, const std::string& reason)>;

  RecommendationStore(std::filesystem::path path, Metrics& metrics, StatusCallback on_status = {});
  ~RecommendationStore();

  // Reloads if the file changed; returns the error of this attempt, or "".
  // The file is read and hashed only when its stat (inode, size, modification and change
  // times) differs from the last attempt's, or was taken within 2 s of a write (a second
  // write in the same clock tick would keep the times: those are always re-read).
  std::string reload();
  std::shared_ptr<const RecommendationSnapshot> current() const { return current_.load(); }  // null before the first load
  void start(std::chrono::milliseconds interval);

 private:
  std::filesystem::path path_;
  Metrics& metrics_;
  StatusCallback on_status_;
  SharedSnapshot<RecommendationSnapshot> current_;
  std::mutex reload_mutex_;
  size_t last_hash_ = 0;
  std::string last_stamp_;  // the stat of the last attempt, "" when it must be read again
  bool loaded_once_ = false;
  PeriodicTask poller_;
};

}  // namespace sizeguard
