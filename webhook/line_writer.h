// Whole lines (decision log, audit records) written off the request path: write() appends
// to a bounded in-memory buffer and returns; one background thread writes what has
// gathered with a single write(2) per batch, at most `delay` after the first line of the
// batch. A review then costs a memcpy instead of a system call, and at a low rate the
// writer wakes once per batch, not once per line. Past `max_buffered_bytes` (the
// destination is slower than the reviews, e.g. a blocked pipe) lines are dropped and
// counted (dropped(), on_drop), never blocking a review. flush() and the destructor
// write everything accepted so far.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace sizeguard {

struct LineWriterOptions {
  std::size_t max_buffered_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds delay{50};
  std::function<void(std::size_t lines)> on_drop;  // called outside the lock, by the writing thread
  std::string thread_name = "sg-lines";
};

class LineWriter {
 public:
  // Writes to `fd`, which the caller keeps open for the writer's lifetime.
  LineWriter(int fd, LineWriterOptions options = {});
  ~LineWriter();
  LineWriter(const LineWriter&) = delete;
  LineWriter& operator=(const LineWriter&) = delete;

  // Queues `line` (which should end with '\n'); false if it was dropped for want of room.
  bool write(std::string_view line);
  // Returns once every line accepted before the call is written (or failed to be).
  void flush();
  std::uint64_t dropped() const;
  std::uint64_t write_errors() const;

 private:
  void run();
  void write_out(const std::string& bytes);

  int fd_;
  LineWriterOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, written_;
  std::string pending_;
  std::uint64_t accepted_ = 0, done_ = 0;  // batches: generation counters for flush()
  std::uint64_t dropped_ = 0, write_errors_ = 0;
  bool stopping_ = false, urgent_ = false;
  bool sleeping_ = false;  // the writer waits for a first line (untimed)
  std::thread thread_;
};

}  // namespace sizeguard
