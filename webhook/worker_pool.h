// The worker pool behind each listener's event loop (webhook/connection_server.h).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace sizeguard {

// Worker pool: answers complete requests. Unlike httplib::ThreadPool it blocks SIGPIPE in
// its threads (a peer closing mid-write must not kill the process), and it hands a job to
// the worker that went idle last (a stack, each worker waiting on its own condition
// variable): at the apiserver's rate, one request at a time, the same one or two threads
// answer every request with warm caches and a warm malloc arena, instead of a condition
// variable shared by all waking whichever of the 128 threads has slept longest.
class WorkerPool final : public httplib::TaskQueue {
 public:
  WorkerPool(std::size_t count, std::string thread_name);
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> job) override;

  // Runs every queued job (accepted connections are served, not dropped), then joins.
  void shutdown() override;

  // Workers waiting for a job right now.
  std::size_t idle() const {
    std::lock_guard lock(mutex_);
    return idle_.size();
  }

 private:
  struct Idle {
    std::condition_variable wake;
    std::function<void()> job;  // set by enqueue when it picks this worker
  };

  void run();

  std::string thread_name_;
  mutable std::mutex mutex_;
  std::deque<std::function<void()>> jobs_;
  std::vector<Idle*> idle_;  // most recently idle last
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sizeguard
