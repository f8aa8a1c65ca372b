// The recommendations snapshot in force (`--recommendations FILE`, written by
// `sizeguard recommend`), hot-reloaded like policies: polled, swapped atomically, and a
// file that does not load leaves the last good snapshot in force.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "recommender/recommend.h"
#include "kube/metrics.h"
#include "kube/periodic.h"
#include "webhook/server.h"
#include "kube/shared_snapshot.h"

namespace sizeguard {

class RecommendationStore {
 public:
  // `readiness` (may be null) gets component "recommendations": not ready only until the
  // first good load, degraded (with the reason) after a failed reload.
  RecommendationStore(std::filesystem::path path, Metrics& metrics, Readiness* readiness);
  ~RecommendationStore();

  // Reloads if the file changed; returns the error of this attempt, or "".
  std::string reload();
  std::shared_ptr<const RecommendationSnapshot> current() const { return current_.load(); }  // null before the first load
  void start(std::chrono::milliseconds interval);

 private:
  std::filesystem::path path_;
  Metrics& metrics_;
  Readiness* readiness_;
  SharedSnapshot<RecommendationSnapshot> current_;
  std::mutex reload_mutex_;
  size_t last_hash_ = 0;
  bool loaded_once_ = false;
  PeriodicTask poller_;
};

}  // namespace sizeguard
