#include "webhook/line_writer.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "webhook/thread_name.h"

namespace sizeguard {

LineWriter::LineWriter(int fd, LineWriterOptions options) : fd_(fd), options_(std::move(options)) {
  thread_ = std::thread([this] { run(); });
}

LineWriter::~LineWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

bool LineWriter::write(std::string_view line) {
  bool accepted, wake;
  {
    std::lock_guard lock(mutex_);
    accepted = pending_.size() + line.size() <= options_.max_buffered_bytes;
    if (accepted) {
      // Only a writer asleep for want of lines is woken; a gathering one takes this along.
      wake = sleeping_ && pending_.empty();
      pending_.append(line);
      ++accepted_;
    } else {
      ++dropped_;
      wake = sleeping_;  // so the drop gets reported
    }
  }
  if (wake) wake_.notify_one();
  return accepted;
}

void LineWriter::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = accepted_;
  urgent_ = true;
  wake_.notify_one();
  written_.wait(lock, [&] { return done_ >= target; });
}

std::uint64_t LineWriter::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

std::uint64_t LineWriter::write_errors() const {
  std::lock_guard lock(mutex_);
  return write_errors_;
}

void LineWriter::run() {
  name_this_thread(options_.thread_name);
  // Signals belong to whoever waits for them (serve's sigwait); a write to a closed pipe
  // fails with EPIPE instead of killing the process.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  std::string batch;
  std::uint64_t reported_drops = 0;
  std::unique_lock lock(mutex_);
  bool busy = false;  // the last round wrote something: more is probably on its way
  for (;;) {
    if (!busy) {
      // Idle: sleep until a line arrives (write() wakes only this untimed wait).
      sleeping_ = true;
      wake_.wait(lock, [&] { return stopping_ || urgent_ || !pending_.empty() || dropped_ != reported_drops; });
      sleeping_ = false;
    }
    // Let the batch gather, unless a flush or shutdown is waiting or the buffer fills up.
    // Under a steady flow this timed wait is the only wake-up: one per `delay`.
    wake_.wait_for(lock, options_.delay, [&] {
      return stopping_ || urgent_ || pending_.size() * 2 > options_.max_buffered_bytes;
    });
    urgent_ = false;
    batch.clear();
    batch.swap(pending_);
    const std::uint64_t upto = accepted_;
    const std::uint64_t new_drops = dropped_ - reported_drops;
    reported_drops = dropped_;
    const bool stop = stopping_;
    lock.unlock();
    if (!batch.empty()) write_out(batch);
    if (new_drops > 0 && options_.on_drop) options_.on_drop(static_cast<std::size_t>(new_drops));
    if (batch.capacity() > 1024 * 1024) std::string().swap(batch);  // after a burst, give the memory back
    lock.lock();
    busy = !batch.empty();
    done_ = upto;
    written_.notify_all();
    if (stop && pending_.empty()) return;
  }
}

void LineWriter::write_out(const std::string& bytes) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::lock_guard lock(mutex_);
      ++write_errors_;
      return;
    }
    at += static_cast<std::size_t>(n);
  }
}

}  // namespace sizeguard
