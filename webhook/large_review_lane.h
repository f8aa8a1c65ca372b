// Where large reviews are decided. A Pod with thousands of containers costs a hundred
// milliseconds or more of CPU to decode, evaluate and patch; an ordinary review costs tens
// of microseconds and the apiserver is waiting on it. Large reviews therefore run one at a
// time on a thread of lower CPU priority (nice +10), so ordinary reviews keep their latency
// while one runs, and only a bounded number may wait for it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "webhook/server.h"

namespace sizeguard {

class LargeReviewLane {
 public:
  // `max_waiting`: reviews allowed to queue behind the one running; more are refused.
  // `on_waiting` hears the new queue length each time it changes (for a gauge).
  explicit LargeReviewLane(std::size_t max_waiting = 4, int nice_increment = 10,
                           std::function<void(std::size_t)> on_waiting = {});
  ~LargeReviewLane();  // finishes the queued work, then joins
  LargeReviewLane(const LargeReviewLane&) = delete;
  LargeReviewLane& operator=(const LargeReviewLane&) = delete;

  // Runs `work` on the lane thread and returns its answer (the caller blocks meanwhile);
  // nullopt when `max_waiting` reviews are already waiting. If `work` throws, the answer
  // is a 500 naming the error.
  std::optional<HttpAnswer> run(std::function<HttpAnswer()> work);
  // Reviews queued behind the running one.
  std::size_t waiting();

 private:
  struct Job;
  void loop(int nice_increment);

  std::size_t max_waiting_;
  std::function<void(std::size_t)> on_waiting_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job*> queue_;
  bool running_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sizeguard
