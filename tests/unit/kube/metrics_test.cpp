#include "kube/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sizeguard {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct ToolResult {
  int exit_code = -1;
  std::string output;
};

// Runs `promtool check metrics` on the text; exit code and combined output.
ToolResult promtool_check(const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("sizeguard-metrics-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(path) << text;
  std::string command = "/usr/bin/promtool check metrics < '" + path.string() + "' 2>&1";
  ToolResult result;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[512];
    while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) result.output.append(buffer, n);
    int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::filesystem::remove(path);
  return result;
}

void populate(Metrics& metrics) {
  metrics.describe("sizeguard_admission_requests_total", MetricType::Counter,
                   "Admission reviews answered.\nSecond line with a \\ backslash.");
  metrics.describe("sizeguard_admission_duration_seconds", MetricType::Histogram, "Review latency in seconds.",
                   {0.001, 0.01, 0.1, 1});
  metrics.describe("sizeguard_build_info", MetricType::Gauge, "Build information.");
  metrics.describe("sizeguard_unused_total", MetricType::Counter, "Declared, never incremented.");
  metrics.set("sizeguard_build_info", {{"version", "0.1.0"}}, 1);
  MetricLabels pod{{"webhook", "mutate"}, {"operation", "CREATE"}, {"kind", "Pod"}, {"decision", "allowed"}};
  metrics.increment("sizeguard_admission_requests_total", pod);
  metrics.increment("sizeguard_admission_requests_total", pod, 2);
  metrics.increment("sizeguard_admission_requests_total",
                    {{"webhook", "validate"}, {"operation", "UPDATE"}, {"kind", "we\"ird\\kind\n"}, {"decision", "denied"}});
  for (double v : {0.0005, 0.005, 0.005, 0.05, 5.0}) {
    metrics.observe("sizeguard_admission_duration_seconds", {{"webhook", "mutate"}}, v);
  }
}

std::string populated_text() {
  Metrics metrics;
  populate(metrics);
  return metrics.render();
}

TEST(MetricsTest, RendersCountersWithLabelsAndEscapes) {
  std::string text = populated_text();
  EXPECT_THAT(text, HasSubstr("# TYPE sizeguard_admission_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# HELP sizeguard_admission_requests_total Admission reviews answered.\\nSecond line "
                              "with a \\\\ backslash.\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_requests_total{webhook=\"mutate\",operation=\"CREATE\","
                              "kind=\"Pod\",decision=\"allowed\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("kind=\"we\\\"ird\\\\kind\\n\""));
  EXPECT_THAT(text, HasSubstr("sizeguard_build_info{version=\"0.1.0\"} 1\n"));
}

TEST(MetricsTest, RendersCumulativeHistogramBuckets) {
  std::string text = populated_text();
  EXPECT_THAT(text, HasSubstr("# TYPE sizeguard_admission_duration_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"0.01\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"0.1\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"1\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"+Inf\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_sum{webhook=\"mutate\"} 5.0605\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_count{webhook=\"mutate\"} 5\n"));
}

TEST(MetricsTest, GaugesSetAndClear) {
  Metrics metrics;
  metrics.describe("sizeguard_namespace_budget", MetricType::Gauge, "Budget per namespace.");
  metrics.set("sizeguard_namespace_budget", {{"namespace", "a"}}, 2.5);
  metrics.set("sizeguard_namespace_budget", {{"namespace", "b"}}, -1);
  metrics.set("sizeguard_namespace_budget", {{"namespace", "a"}}, 4);
  std::string text = metrics.render();
  EXPECT_THAT(text, HasSubstr("sizeguard_namespace_budget{namespace=\"a\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_namespace_budget{namespace=\"b\"} -1\n"));
  metrics.clear("sizeguard_namespace_budget");
  text = metrics.render();
  EXPECT_THAT(text, Not(HasSubstr("namespace=")));
  EXPECT_THAT(text, HasSubstr("# TYPE sizeguard_namespace_budget gauge\n"));
}

TEST(MetricsTest, UndescribedFamiliesStillRender) {
  Metrics metrics;
  metrics.increment("sizeguard_adhoc_total");
  metrics.observe("sizeguard_adhoc_seconds", {}, 0.002);
  std::string text = metrics.render();
  EXPECT_THAT(text, HasSubstr("# TYPE sizeguard_adhoc_total counter\nsizeguard_adhoc_total 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_adhoc_seconds_bucket{le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_adhoc_seconds_count 1\n"));
}

TEST(MetricsTest, RejectsBucketsNotAscending) {
  Metrics metrics;
  EXPECT_THROW(metrics.describe("h", MetricType::Histogram, "h", {0.1, 0.01}), std::invalid_argument);
  EXPECT_THROW(metrics.describe("h", MetricType::Histogram, "h", {0.1, 0.1}), std::invalid_argument);
}

TEST(MetricsTest, ConcurrentIncrementsAreAllCounted) {
  Metrics metrics;
  metrics.describe("sizeguard_hits_total", MetricType::Counter, "Hits.");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < 10000; ++i) {
        metrics.increment("sizeguard_hits_total", {{"thread", std::to_string(t % 2)}});
        metrics.observe("sizeguard_latency_seconds", {}, 0.001);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::string text = metrics.render();
  EXPECT_THAT(text, HasSubstr("sizeguard_hits_total{thread=\"0\"} 20000\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_hits_total{thread=\"1\"} 20000\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_latency_seconds_count 40000\n"));
}

TEST(MetricsTest, PromtoolAcceptsRenderedText) {
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "promtool is not installed";
  std::string text = populated_text();
  ToolResult result = promtool_check(text);
  EXPECT_EQ(result.exit_code, 0) << result.output << "\n--- input:\n" << text;
}

TEST(MetricsTest, PromtoolCheckCanFail) {
  // Guards the check above: promtool must reject text that is not valid exposition.
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "promtool is not installed";
  ToolResult result = promtool_check("# TYPE broken counter\nbroken{label=unquoted} 1\n");
  EXPECT_NE(result.exit_code, 0) << result.output;
}

}  // namespace
}  // namespace sizeguard
