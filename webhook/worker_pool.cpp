#include "webhook/worker_pool.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>

#include "webhook/thread_name.h"

namespace sizeguard {

WorkerPool::WorkerPool(std::size_t count, std::string thread_name) : thread_name_(std::move(thread_name)) {
  for (std::size_t i = 0; i < std::max<std::size_t>(count, 1); ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

void WorkerPool::enqueue(std::function<void()> job) {
  std::unique_lock lock(mutex_);
  if (idle_.empty()) {  // every worker busy: the first to finish takes it
    jobs_.push_back(std::move(job));
    return;
  }
  Idle* worker = idle_.back();
  idle_.pop_back();
  worker->job = std::move(job);
  lock.unlock();
  worker->wake.notify_one();
}

void WorkerPool::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (Idle* worker : idle_) worker->wake.notify_one();
  }
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void WorkerPool::run() {
  name_this_thread(thread_name_);
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  Idle self;
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      if (!jobs_.empty()) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      } else if (stopping_) {
        return;
      } else {
        idle_.push_back(&self);
        self.wake.wait(lock, [&] { return self.job || stopping_; });
        if (!self.job) {  // stopping, and never picked: leave the idle stack
          idle_.erase(std::find(idle_.begin(), idle_.end(), &self));
          continue;  // queued jobs still run before the thread ends
        }
        job = std::move(self.job);
        self.job = nullptr;
      }
    }
    job();
  }
}

}  // namespace sizeguard
