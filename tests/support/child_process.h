// A program (usually `sizeguard serve`) run as a child of an integration test: its stdout and
// stderr go to a log file the test can read, and it is stopped and reaped when the test ends,
// even when an assertion returns early.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace sizeguard::test {

class ChildProcess {
 public:
  // args[0] is the path of the program. started() is false when fork failed.
  ChildProcess(std::vector<std::string> args, std::filesystem::path log);
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // terminate()

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // SIGTERM, then the wait status once it exits (SIGKILL after 30 s); 0 when not running.
  int terminate();
  // The exit code (128 + signal when killed), or -1 if it has not exited within `limit`.
  int wait_exit(std::chrono::milliseconds limit = std::chrono::minutes(1));
  std::string log_text() const;
  // The metrics port `serve` logged on its "listening" line; 0 until it has.
  int logged_metrics_port() const;

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
};

}  // namespace sizeguard::test
