// A background thread that runs a task every `interval` until stopped (hot reloads of
// policies, recommendations and certificates). Stopping wakes it at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace sizeguard {

class PeriodicTask {
 public:
  PeriodicTask() = default;
  ~PeriodicTask() { stop(); }
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // Starts the thread (once); `task` must not throw.
  void start(std::chrono::milliseconds interval, std::function<void()> task) {
    if (thread_.joinable()) return;
    thread_ = std::thread([this, interval, task = std::move(task)] {
      std::unique_lock lock(mutex_);
      while (!wake_.wait_for(lock, interval, [this] { return stopping_; })) {
        lock.unlock();
        task();
        lock.lock();
      }
    });
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sizeguard
