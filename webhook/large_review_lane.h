// Where large reviews are answered. A Pod with thousands of containers costs milliseconds
// of CPU to decrypt, decode, evaluate, patch, encode and encrypt; an ordinary review costs
// tens of microseconds and the apiserver is waiting on it. So a connection whose next
// request has a large body is handed, whole, to one thread of the lowest CPU priority
// (SCHED_IDLE: it runs only when no ordinary thread wants the CPU, and any waking one
// preempts it at once), which reads, decides and writes that request. Only a bounded
// number may wait for it; the server answers the rest 429.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace sizeguard {

enum class LanePriority {
  Idle,   // SCHED_IDLE (the server's choice)
  Normal  // the creator's own priority (tests that need the lane to keep pace)
};

class LargeReviewLane {
 public:
  // `max_waiting`: jobs allowed to queue behind the one running; more are refused.
  // `on_waiting` hears the new queue length each time it changes (for a gauge).
  explicit LargeReviewLane(std::size_t max_waiting = 4, LanePriority priority = LanePriority::Idle,
                           std::function<void(std::size_t)> on_waiting = {});
  ~LargeReviewLane();  // runs the queued jobs, then joins
  LargeReviewLane(const LargeReviewLane&) = delete;
  LargeReviewLane& operator=(const LargeReviewLane&) = delete;

  // Queues `job` for the lane thread and returns at once; false (the job is not taken)
  // when `max_waiting` jobs already wait. A job must not throw.
  bool try_post(std::function<void()> job);
  // Jobs queued behind the running one.
  std::size_t waiting();

 private:
  void loop(LanePriority priority);

  std::size_t max_waiting_;
  std::function<void(std::size_t)> on_waiting_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool running_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sizeguard
