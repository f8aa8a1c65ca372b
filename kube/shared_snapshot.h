// An immutable snapshot shared between a reloader and the request threads: readers take
// the current shared_ptr, a reload swaps in a new one, and old snapshots live on until
// their last reader drops them.
#pragma once

#include <memory>
#include <mutex>

namespace sizeguard {

// A mutex rather than std::atomic<std::shared_ptr>: GCC 12's implementation hides its
// lock from ThreadSanitizer (every reload would be reported as a race), and an
// uncontended lock costs tens of nanoseconds per review.
template <typename T>
class SharedSnapshot {
 public:
  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  void store(std::shared_ptr<const T> next) {
    std::lock_guard lock(mutex_);
    current_.swap(next);  // the old snapshot is freed with `next`, after the lock is released
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> current_;
};

}  // namespace sizeguard
