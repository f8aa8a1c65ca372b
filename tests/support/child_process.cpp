#include "support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>

namespace sizeguard::test {

ChildProcess::ChildProcess(std::vector<std::string> args, std::filesystem::path log) : log_(std::move(log)) {
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

ChildProcess::~ChildProcess() { terminate(); }

int ChildProcess::wait_exit(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (pid_ > 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return -1;
}

int ChildProcess::terminate() {
  if (pid_ <= 0) return 0;
  ::kill(pid_, SIGTERM);
  int code = wait_exit(std::chrono::seconds(30));
  if (code < 0) {  // a server that does not stop must not outlive the test
    ::kill(pid_, SIGKILL);
    code = wait_exit(std::chrono::seconds(30));
  }
  return code;
}

std::string ChildProcess::log_text() const {
  std::ifstream in(log_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int ChildProcess::logged_metrics_port() const {
  const std::string text = log_text();
  const auto at = text.find("metrics_port=");
  return at == std::string::npos ? 0 : std::atoi(text.c_str() + at + 13);
}

}  // namespace sizeguard::test
