// read_prometheus against a REAL Prometheus: hand-made OpenMetrics (cAdvisor CPU counters and
// memory gauges for two pods of Deployment "web", one pod of StatefulSet "db" and one bare pod,
// kube_pod_owner for some of them) backfilled with promtool, served by a child prometheus.
#include "recommender/prometheus.h"
#include "recommender/recommend.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace sizeguard {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr int64_t kScrape = 60;        // seconds between samples
constexpr int64_t kSamples = 121;      // two hours, t0 .. t0 + 7200
constexpr int64_t kStep = 300;

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return {};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Starts argv with stdout+stderr into log; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// The synthetic cluster. Pod A and B belong to Deployment web (A has kube_pod_owner, B is
// grouped by its name), db-0 to StatefulSet db (kube_pod_owner), toolbox is a bare pod.
struct Cluster {
  int64_t t0 = 0;
  // CPU counters grow linearly, so rate() over any full window is exactly the slope (cores).
  static constexpr double kCpuA = 0.25, kCpuB = 0.5, kCpuDb = 1.0, kCpuToolbox = 0.125;
  // Memory: A is the bigger pod during the first hour, B afterwards.
  static double memory_a(int64_t i) { return (i < 60 ? 300 : 100) * kMiB; }
  static double memory_b(int64_t) { return 200 * kMiB; }
  static double memory_db(int64_t i) { return 1024 * kMiB + static_cast<double>(i) * kMiB; }
  static double memory_toolbox(int64_t) { return 10 * kMiB; }

  std::string openmetrics() const {
    std::ostringstream out;
    out.precision(17);
    struct Pod {
      const char* name;
      const char* container;
      double cpu_slope;
      double cpu_start;
      double (*memory)(int64_t);
    };
    const Pod pods[] = {{"web-7d4b9c-x7k2p", "app", kCpuA, 1000, memory_a},
                        {"web-7d4b9c-q9z5w", "app", kCpuB, 5000, memory_b},
                        {"db-0", "postgres", kCpuDb, 100, memory_db},
                        {"toolbox", "shell", kCpuToolbox, 7, memory_toolbox}};
    auto ns_of = [](const Pod& p) { return std::string(p.name) == "db-0" ? "data" : "shop"; };
    out << "# TYPE container_cpu_usage_seconds counter\n";
    for (const auto& p : pods) {
      for (int64_t i = 0; i < kSamples; ++i) {
        out << "container_cpu_usage_seconds_total{namespace=\"" << ns_of(p) << "\",pod=\"" << p.name
            << "\",container=\"" << p.container << "\"} " << p.cpu_start + p.cpu_slope * static_cast<double>(i * kScrape)
            << " " << t0 + i * kScrape << "\n";
      }
    }
    out << "# TYPE container_memory_working_set_bytes gauge\n";
    for (const auto& p : pods) {
      for (int64_t i = 0; i < kSamples; ++i) {
        out << "container_memory_working_set_bytes{namespace=\"" << ns_of(p) << "\",pod=\"" << p.name
            << "\",container=\"" << p.container << "\"} " << p.memory(i) << " " << t0 + i * kScrape << "\n";
      }
    }
    out << "# TYPE kube_pod_owner gauge\n";
    const char* owners[][4] = {{"shop", "web-7d4b9c-x7k2p", "ReplicaSet", "web-7d4b9c"},
                               {"data", "db-0", "StatefulSet", "db"},
                               {"shop", "toolbox", "<none>", "<none>"}};
    for (const auto& o : owners) {
      for (int64_t i = 0; i < kSamples; ++i) {
        out << "kube_pod_owner{namespace=\"" << o[0] << "\",pod=\"" << o[1] << "\",owner_kind=\"" << o[2]
            << "\",owner_name=\"" << o[3] << "\",owner_is_controller=\"" << (o[2][0] == '<' ? "false" : "true")
            << "\"} 1 " << t0 + i * kScrape << "\n";
      }
    }
    // db-0's postgres was OOM-killed; toolbox's shell only completed.
    out << "# TYPE kube_pod_container_status_last_terminated_reason gauge\n";
    const char* terminations[][4] = {{"data", "db-0", "postgres", "OOMKilled"}, {"shop", "toolbox", "shell", "Completed"}};
    for (const auto& o : terminations) {
      for (int64_t i = 0; i < kSamples; ++i) {
        out << "kube_pod_container_status_last_terminated_reason{namespace=\"" << o[0] << "\",pod=\"" << o[1]
            << "\",container=\"" << o[2] << "\",reason=\"" << o[3] << "\"} 1 " << t0 + i * kScrape << "\n";
      }
    }
    out << "# EOF\n";
    return out.str();
  }
};

class PrometheusTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    prometheus_ = find_in_path("prometheus");
    promtool_ = find_in_path("promtool");
    if (prometheus_.empty() || promtool_.empty()) {
      skip_ = "prometheus/promtool not installed (tests/run.sh installs the Debian prometheus package)";
      return;
    }
    try {
      start();
    } catch (const std::exception& e) {
      setup_error_ = e.what();
    }
  }

  static void start() {
    std::string pattern = (fs::temp_directory_path() / "sizeguard-prom-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    // Backfill needs data older than the head block: use two hours starting ~2 days ago.
    cluster_.t0 = (static_cast<int64_t>(std::time(nullptr)) - 2 * 86400) / 3600 * 3600;
    std::ofstream(dir_ / "metrics.om") << cluster_.openmetrics();
    std::ofstream(dir_ / "prometheus.yml") << "global:\n  scrape_interval: 1h\n";

    const pid_t tool = spawn({promtool_, "tsdb", "create-blocks-from", "openmetrics", (dir_ / "metrics.om").string(),
                              (dir_ / "tsdb").string()},
                             dir_ / "promtool.log");
    int status = 0;
    waitpid(tool, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw std::runtime_error("promtool backfill failed: " + slurp(dir_ / "promtool.log"));
    }

    port_ = free_port();
    pid_ = spawn({prometheus_, "--config.file=" + (dir_ / "prometheus.yml").string(),
                  "--storage.tsdb.path=" + (dir_ / "tsdb").string(),
                  "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--storage.tsdb.retention.time=100y"},
                 dir_ / "prometheus.log");
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(1s);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      int child = 0;
      if (waitpid(pid_, &child, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("prometheus exited during startup: " + slurp(dir_ / "prometheus.log"));
      }
      if (auto res = client.Get("/-/ready"); res && res->status == 200) return;
      std::this_thread::sleep_for(200ms);
    }
    throw std::runtime_error("prometheus not ready after 60 s: " + slurp(dir_ / "prometheus.log"));
  }

  static void TearDownTestSuite() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      bool exited = false;
      for (int i = 0; i < 100 && !exited; ++i) {
        exited = waitpid(pid_, &status, WNOHANG) == pid_;
        if (!exited) std::this_thread::sleep_for(100ms);
      }
      if (!exited) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  static PrometheusOptions options() {
    PrometheusOptions o;
    o.url = "http://127.0.0.1:" + std::to_string(port_);
    o.start = cluster_.t0 + 600;  // every rate() window lies inside the data
    o.end = cluster_.t0 + 6600;
    o.step_seconds = kStep;
    o.timeout = 10s;
    return o;
  }

  static const UsageSeries* find(const std::vector<UsageSeries>& all, const std::string& key) {
    for (const auto& s : all) {
      if (s.key.to_string() == key) return &s;
    }
    return nullptr;
  }

  static inline std::string prometheus_, promtool_, skip_, setup_error_;
  static inline fs::path dir_;
  static inline pid_t pid_ = -1;
  static inline int port_ = 0;
  static inline Cluster cluster_;
};

void expect_cluster(const std::vector<UsageSeries>& series, int64_t t0, int64_t start, int64_t end) {
  std::vector<std::string> keys;
  for (const auto& s : series) keys.push_back(s.key.to_string());
  EXPECT_EQ(keys, (std::vector<std::string>{"data/StatefulSet/db/postgres", "shop/Deployment/web/app",
                                            "shop/Pod/toolbox/shell"}));
  const size_t points = static_cast<size_t>((end - start) / kStep + 1);
  for (const auto& s : series) {
    ASSERT_EQ(s.samples.size(), points) << s.key.to_string();
    for (size_t k = 0; k < points; ++k) {
      const auto& p = s.samples[k];
      const int64_t t = start + static_cast<int64_t>(k) * kStep;
      ASSERT_EQ(p.timestamp, t) << s.key.to_string();
      const int64_t i = (t - t0) / kScrape;  // the sample index in force at t
      if (s.key.name == "web") {
        // Max over the two pods, per metric: CPU from pod B always, memory from A then B.
        EXPECT_NEAR(p.cpu_cores, Cluster::kCpuB, 1e-9) << "t=" << t;
        EXPECT_DOUBLE_EQ(p.memory_bytes, std::max(Cluster::memory_a(i), Cluster::memory_b(i))) << "t=" << t;
        EXPECT_DOUBLE_EQ(p.memory_bytes, (t - t0 < 3600 ? 300 : 200) * kMiB) << "t=" << t;
      } else if (s.key.name == "db") {
        EXPECT_NEAR(p.cpu_cores, Cluster::kCpuDb, 1e-9) << "t=" << t;
        EXPECT_DOUBLE_EQ(p.memory_bytes, Cluster::memory_db(i)) << "t=" << t;
      } else {
        EXPECT_NEAR(p.cpu_cores, Cluster::kCpuToolbox, 1e-9) << "t=" << t;
        EXPECT_DOUBLE_EQ(p.memory_bytes, 10 * kMiB);
      }
    }
    EXPECT_FALSE(s.spec.cpu_request.has_value());
  }
}

TEST_F(PrometheusTest, ReadsWorkloadsWithMaxOverPods) {
  IngestReport report;
  const auto o = options();
  const auto series = read_prometheus(o, report);
  expect_cluster(series, cluster_.t0, o.start, o.end);
  EXPECT_EQ(report.rows_read, 3u * 21u);
  EXPECT_EQ(report.rows_used, 3u * 21u);
  EXPECT_EQ(report.rows_bad, 0u);
  EXPECT_TRUE(report.errors.empty()) << report.errors.front();
  for (const auto& s : series) EXPECT_EQ(s.oom_killed, s.key.name == "db") << s.key.to_string() << ": only db-0 was OOM-killed";
}

TEST_F(PrometheusTest, ChunkedRequestsGiveTheSameSeries) {
  IngestReport report;
  auto o = options();
  o.max_points_per_request = 4;  // 21 points per series in 6 requests
  o.bearer_token = "ignored-by-this-prometheus";
  expect_cluster(read_prometheus(o, report), cluster_.t0, o.start, o.end);
  EXPECT_EQ(report.rows_used, 3u * 21u);
}

TEST_F(PrometheusTest, WithoutOwnersPodNamesStillGroupTheDeployment) {
  IngestReport report;
  auto o = options();
  o.use_pod_owner = false;
  const auto series = read_prometheus(o, report);
  std::vector<std::string> keys;
  for (const auto& s : series) keys.push_back(s.key.to_string());
  EXPECT_EQ(keys, (std::vector<std::string>{"data/StatefulSet/db/postgres", "shop/Deployment/web/app",
                                            "shop/Pod/toolbox/shell"}));
}

TEST_F(PrometheusTest, InvalidPromQLSurfacesPrometheusError) {
  IngestReport report;
  auto o = options();
  o.cpu_query = "sum(rate(container_cpu_usage_seconds_total[5m]";
  try {
    read_prometheus(o, report);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad_data"), std::string::npos) << what;
    EXPECT_NE(what.find("parse error"), std::string::npos) << what;
    EXPECT_NE(what.find("HTTP 400"), std::string::npos) << what;
  }
}

TEST_F(PrometheusTest, EmptyRangeThrows) {
  IngestReport report;
  auto o = options();
  o.start -= 30 * 86400;
  o.end = o.start + 3600;
  try {
    read_prometheus(o, report);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no usable series from Prometheus"), std::string::npos) << e.what();
  }
}

TEST_F(PrometheusTest, UnreachableUrlGivesClearError) {
  IngestReport report;
  auto o = options();
  o.url = "http://127.0.0.1:" + std::to_string(free_port());
  o.timeout = 2s;
  try {
    read_prometheus(o, report);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach Prometheus at " + o.url + ": "), std::string::npos)
        << e.what();
  }
  o.url = "ftp://example";
  EXPECT_THROW(read_prometheus(o, report), std::invalid_argument);
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

// `sizeguard recommend --prometheus` on the real server: the CLI path end to end.
TEST_F(PrometheusTest, RecommendCommandWritesASnapshotFromPrometheus) {
  const auto o = options();
  const fs::path out = dir_ / "recommendations.json";
  const std::string command = std::string(SIZEGUARD_BINARY) + " recommend --prometheus " + o.url +
                              " --start " + std::to_string(o.start) + " --end " + std::to_string(o.end) +
                              " --step 5m --out " + out.string() + " 2>" + (dir_ / "recommend.err").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << std::ifstream(dir_ / "recommend.err").rdbuf();
  const RecommendationSnapshot snapshot = load_recommendations(out);
  for (const char* key : {"shop/Deployment/web/app", "data/StatefulSet/db/postgres", "shop/Pod/toolbox/shell"}) {
    ASSERT_EQ(snapshot.recommendations.count(key), 1u) << key;
    EXPECT_GT(snapshot.recommendations.at(key).cpu_cores, 0) << key;
    EXPECT_GT(snapshot.recommendations.at(key).memory_peak_bytes, 0) << key;
    EXPECT_EQ(snapshot.recommendations.at(key).oom_killed, std::string(key).starts_with("data/")) << key;
  }
}

}  // namespace
}  // namespace sizeguard
