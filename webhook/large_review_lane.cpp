#include "webhook/large_review_lane.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <exception>
#include <string>

namespace sizeguard {

struct LargeReviewLane::Job {
  std::function<HttpAnswer()> work;
  std::optional<HttpAnswer> answer;
  bool done = false;
  std::condition_variable finished;
};

LargeReviewLane::LargeReviewLane(std::size_t max_waiting, int nice_increment,
                                 std::function<void(std::size_t)> on_waiting)
    : max_waiting_(max_waiting), on_waiting_(std::move(on_waiting)), thread_([this, nice_increment] { loop(nice_increment); }) {}

LargeReviewLane::~LargeReviewLane() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::optional<HttpAnswer> LargeReviewLane::run(std::function<HttpAnswer()> work) {
  Job job{std::move(work), std::nullopt, false, {}};
  std::unique_lock lock(mutex_);
  if (queue_.size() + (running_ ? 1 : 0) > max_waiting_) return std::nullopt;
  queue_.push_back(&job);
  if (on_waiting_) on_waiting_(queue_.size());
  wake_.notify_one();
  job.finished.wait(lock, [&] { return job.done; });
  return std::move(job.answer);
}

std::size_t LargeReviewLane::waiting() {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void LargeReviewLane::loop(int nice_increment) {
  // On Linux a thread's nice value is its own (setpriority on the thread id), and raising
  // it needs no privilege.
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  ::setpriority(PRIO_PROCESS, tid, ::getpriority(PRIO_PROCESS, tid) + nice_increment);
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to answer
    Job* job = queue_.front();
    queue_.pop_front();
    if (on_waiting_) on_waiting_(queue_.size());
    running_ = true;
    lock.unlock();
    std::optional<HttpAnswer> answer;
    try {
      answer = job->work();
    } catch (const std::exception& e) {
      answer = HttpAnswer{500, "application/json", status_body(500, std::string("review failed: ") + e.what())};
    }
    lock.lock();
    running_ = false;
    job->answer = std::move(answer);
    job->done = true;
    job->finished.notify_one();
  }
}

}  // namespace sizeguard
