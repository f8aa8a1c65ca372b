#include "webhook/large_review_lane.h"

#include <sched.h>

#include "webhook/thread_name.h"

namespace sizeguard {

LargeReviewLane::LargeReviewLane(std::size_t max_waiting, LanePriority priority,
                                 std::function<void(std::size_t)> on_waiting)
    : max_waiting_(max_waiting), on_waiting_(std::move(on_waiting)), thread_([this, priority] { loop(priority); }) {}

LargeReviewLane::~LargeReviewLane() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool LargeReviewLane::try_post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() + (running_ ? 1 : 0) > max_waiting_) return false;
    queue_.push_back(std::move(job));
    if (on_waiting_) on_waiting_(queue_.size());
  }
  wake_.notify_one();
  return true;
}

std::size_t LargeReviewLane::waiting() {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void LargeReviewLane::loop(LanePriority priority) {
  name_this_thread("sg-large-review");
  if (priority == LanePriority::Idle) {
    // Per thread on Linux, and lowering one's own priority needs no privilege. A nice
    // value alone is not enough: the scheduler lets a niced thread finish its time slice
    // (milliseconds) before a waking ordinary review runs; SCHED_IDLE yields at once.
    sched_param none{};
    ::sched_setscheduler(0, SCHED_IDLE, &none);
  }
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to run
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    if (on_waiting_) on_waiting_(queue_.size());
    running_ = true;
    lock.unlock();
    job();
    lock.lock();
    running_ = false;
  }
}

}  // namespace sizeguard
