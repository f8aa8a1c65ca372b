// LineWriter: lines reach the descriptor whole and in order, flush() waits for them, and a
// destination that does not keep up costs dropped (counted) lines, never a blocked writer.
#include "webhook/line_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "webhook/audit.h"
#include "webhook/devcerts.h"

namespace sizeguard {
namespace {

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(LineWriter, FlushWritesEveryLineWholeAndInOrderFromManyThreads) {
  const auto dir = make_private_temp_directory("sizeguard-lines");
  const auto path = dir / "out.log";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  {
    LineWriterOptions options;
    options.delay = std::chrono::milliseconds(1000);  // only flush() writes within the test
    LineWriter writer(fd, options);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&writer, t] {
        for (int i = 0; i < 500; ++i) writer.write("t" + std::to_string(t) + " line " + std::to_string(i) + "\n");
      });
    }
    for (auto& thread : threads) thread.join();
    writer.flush();
    std::istringstream lines(read_all(path));
    std::vector<int> next(4, 0);
    int count = 0;
    for (std::string line; std::getline(lines, line); ++count) {
      const int t = line[1] - '0';
      ASSERT_EQ(line, "t" + std::to_string(t) + " line " + std::to_string(next[t])) << "torn or out of order";
      ++next[t];
    }
    EXPECT_EQ(count, 2000);
    EXPECT_EQ(writer.dropped(), 0u);
    writer.write("last\n");
  }  // the destructor writes what is left
  EXPECT_TRUE(read_all(path).ends_with("\nlast\n"));
  ::close(fd);
}

TEST(LineWriter, ABlockedDestinationDropsAndCountsInsteadOfBlocking) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);  // nobody reads: the writer thread blocks in write(2)
  ::fcntl(pipe_fds[1], F_SETPIPE_SZ, 4096);
  std::atomic<std::size_t> reported{0};
  {
    LineWriterOptions options;
    options.max_buffered_bytes = 64 * 1024;
    options.delay = std::chrono::milliseconds(1);
    options.on_drop = [&reported](std::size_t lines) { reported += lines; };
    LineWriter writer(pipe_fds[1], options);
    const std::string line(1000, 'x');
    std::size_t accepted = 0;
    for (int i = 0; i < 1000; ++i) accepted += writer.write(line + "\n") ? 1 : 0;  // returns although nothing drains
    EXPECT_LT(accepted, 1000u);
    EXPECT_EQ(writer.dropped(), 1000u - accepted);
    // Drain the pipe so the writer can finish, and close it so a blocked write ends.
    std::thread reader([fd = pipe_fds[0]] {
      char buffer[65536];
      while (::read(fd, buffer, sizeof buffer) > 0) {
      }
    });
    writer.flush();
    ::close(pipe_fds[1]);
    reader.join();
    EXPECT_EQ(reported.load(), writer.dropped()) << "every drop before a flush reaches on_drop";
  }
  ::close(pipe_fds[0]);
}

TEST(AuditLog, BufferedRecordsReachTheFileOnFlushAndDestruction) {
  const auto dir = make_private_temp_directory("sizeguard-audit");
  const auto path = dir / "audit.log";
  {
    LineWriterOptions options;
    options.delay = std::chrono::milliseconds(1000);
    AuditLog audit(path.string(), options);
    audit.write(Json{{"n", 1}});
    audit.flush();
    EXPECT_EQ(read_all(path), "{\"n\":1}\n");
    audit.write(Json{{"n", 2}});
  }
  EXPECT_EQ(read_all(path), "{\"n\":1}\n{\"n\":2}\n");
}

}  // namespace
}  // namespace sizeguard
