// `sizeguard scan` (the real binary) against a fake apiserver through a kubeconfig: every
// output format, the exit codes of `review`, progress on stderr, and the HTML report rendered
// in headless Chromium when it is installed (as tests/scripts/evaluate_report.sh does).
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <httplib.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/fake_apiserver.h"
#include "webhook/devcerts.h"
#include "kube/review.h"

namespace sizeguard {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kApps = "apis/apps/v1";

Json deployment(const std::string& ns, const std::string& name, Json resources, int replicas = 3) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-" + name}}},
          {"spec",
           {{"replicas", replicas},
            {"template",
             {{"metadata", {{"labels", {{"app", name}}}}},
              {"spec", {{"containers", Json::array({{{"name", "app"}, {"image", "app:1"}, {"resources", resources}}})}}}}}}}};
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_private_temp_directory("sizeguard-scan-test");
    api_.write_kubeconfig(dir_ / "kubeconfig");
    std::ofstream(dir_ / "policies.yaml")
        << "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: requirements}\nspec:\n  mode: enforce\n"
           "  resources:\n    required: {requests: [cpu, memory]}\n---\n"
           "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: rightsizing}\nspec:\n  rightsizing: {mode: audit}\n";
    Json snapshot = {{"modelVersion", "xgb-test"}, {"generatedAt", "2026-11-20T00:00:00Z"}};
    snapshot["recommendations"]["shop/Deployment/web/app"] = {{"cpu", "250m"}, {"memory", "256Mi"}, {"confidence", 0.8}};
    std::ofstream(dir_ / "recommendations.json") << snapshot.dump();
    api_.put("api/v1", "namespaces", "", {{"metadata", {{"name", "shop"}}}});
    api_.put(kApps, "deployments", "shop", deployment("shop", "web", {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}}));
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Runs scan with `extra` arguments; stdout and stderr into files; returns the exit code.
  int scan(const std::string& extra) {
    const std::string command = std::string(SIZEGUARD_BINARY) + " scan --kubeconfig " + (dir_ / "kubeconfig").string() +
                                " --policies " + (dir_ / "policies.yaml").string() + " --recommendations " +
                                (dir_ / "recommendations.json").string() + " " + extra + " > " +
                                (dir_ / "out").string() + " 2> " + (dir_ / "err").string();
    const int status = std::system(command.c_str());
    out_ = slurp(dir_ / "out");
    err_ = slurp(dir_ / "err");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  test::FakeApiServer api_;
  std::filesystem::path dir_;
  std::string out_, err_;
};

TEST_F(ScanTest, CleanClusterTableShowsCurrentVsRecommendedAndExitsZero) {
  ASSERT_EQ(scan(""), 0) << err_;
  EXPECT_THAT(out_, HasSubstr("NAMESPACE"));
  EXPECT_THAT(out_, HasSubstr("Deployment/web"));
  EXPECT_THAT(out_, HasSubstr("1 -> 250m"));
  EXPECT_THAT(out_, HasSubstr("1Gi -> 256Mi"));
  EXPECT_THAT(out_, HasSubstr("2.25 cores, 2304Mi"));  // (1 - 0.25) x 3 replicas, (1024 - 256) x 3
  EXPECT_THAT(out_, Not(HasSubstr("FINDINGS")));
  EXPECT_THAT(err_, HasSubstr("scan: 1 deployments"));  // progress on stderr
}

TEST_F(ScanTest, FindingsThatWouldDenyExitOneInEveryFormat) {
  api_.put(kApps, "deployments", "shop", deployment("shop", "bare", Json::object(), 1));
  ASSERT_EQ(scan("--output table"), 1) << err_;
  EXPECT_THAT(out_, HasSubstr("FINDINGS"));
  EXPECT_THAT(out_, HasSubstr("DENY fail  shop/Deployment/bare  requirements/resources (MissingRequest)"));

  ASSERT_EQ(scan("--output json"), 1) << err_;
  const Json json = Json::parse(out_);
  EXPECT_EQ(json["summary"]["workloads"], 2);
  EXPECT_EQ(json["summary"]["denies"], 1);
  ASSERT_EQ(json["workloads"].size(), 2u);
  const Json& bare = json["workloads"][0];
  EXPECT_EQ(bare["name"], "bare");
  EXPECT_EQ(bare["denies"], true);
  EXPECT_EQ(bare["findings"][0]["reason"], "MissingRequest");
  EXPECT_EQ(bare["rightsizing"]["coldStart"], true);
  const Json& web = json["workloads"][1];
  EXPECT_EQ(web["containers"][0]["cpu"]["request"], Json({{"current", "1"}, {"recommended", "250m"}}));
  EXPECT_EQ(web["rightsizing"]["confidence"], 0.8);
  EXPECT_DOUBLE_EQ(web["rightsizing"]["cpuSavingsCores"].get<double>(), 2.25);

  ASSERT_EQ(scan("-o csv -n shop"), 1) << err_;
  EXPECT_THAT(out_, HasSubstr("namespace,kind,name,replicas,container,cpu_request,cpu_request_recommended"));
  EXPECT_THAT(out_, HasSubstr("shop,Deployment,web,3,app,1,250m,,,1Gi,256Mi,,,2.250,"));
  // No history for bare: the snapshot-only cold-start estimate fills its missing requests,
  // which costs (negative savings), as admission of its Pods would.
  EXPECT_THAT(out_, HasSubstr("shop,Deployment,bare,1,app,,110m,,,,282Mi,,,-0.110,-295698432,requirements/resources=fail"));
}

TEST_F(ScanTest, BadInputAndUnreachableClustersExitTwo) {
  EXPECT_EQ(scan("--output yaml"), 2);
  EXPECT_THAT(err_, HasSubstr("--output: expected table, json, csv or html, got 'yaml'"));
  api_.fail_next(403, 1, "deployments is forbidden");
  EXPECT_EQ(scan(""), 2);
  EXPECT_THAT(err_, HasSubstr("403"));
}

TEST_F(ScanTest, HtmlReportRendersItsCharts) {
  ASSERT_EQ(scan("--output html --out " + (dir_ / "scan.html").string()), 0) << err_;
  const std::string html = slurp(dir_ / "scan.html");
  EXPECT_THAT(html, HasSubstr("<h1>sizeguard scan</h1>"));
  EXPECT_GE(std::count(html.begin(), html.end(), '<') , 10);
  std::size_t charts = 0;
  for (auto at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++charts;
  EXPECT_EQ(charts, 4u);  // savings and requested vs recommended, CPU and memory
  if (std::system("command -v chromium >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "chromium not installed: the rendering is not checked (tests/run.sh installs it)";
  }
  const std::string dom = (dir_ / "dom.html").string();
  ASSERT_EQ(std::system(("chromium --headless --no-sandbox --disable-gpu --dump-dom file://" + (dir_ / "scan.html").string() +
                         " > " + dom + " 2>/dev/null")
                            .c_str()),
            0);
  const std::string rendered = slurp(dom);
  std::size_t rendered_charts = 0;
  for (auto at = rendered.find("<svg"); at != std::string::npos; at = rendered.find("<svg", at + 1)) ++rendered_charts;
  EXPECT_EQ(rendered_charts, 4u);
  EXPECT_THAT(rendered, HasSubstr("Requested vs recommended"));
  EXPECT_THAT(rendered, HasSubstr("Deployment/web"));
}

// A stand-in for Prometheus: cAdvisor CPU and memory of one pod of Deployment shop/web
// (0.2 cores, 200 MiB with a daily wave) for any range asked; no kube-state-metrics.
class FakePrometheus {
 public:
  FakePrometheus() {
    server_.Get("/api/v1/query_range", [](const httplib::Request& request, httplib::Response& response) {
      const long start = std::stol(request.get_param_value("start"));
      const long end = std::stol(request.get_param_value("end"));
      const long step = std::stol(request.get_param_value("step"));
      const bool cpu = request.get_param_value("query").find("cpu") != std::string::npos;
      Json values = Json::array();
      for (long t = start; t <= end; t += step) {
        const double wave = 1 + 0.2 * std::sin(static_cast<double>(t % 86400) / 86400 * 6.283);
        values.push_back({t, std::to_string(cpu ? 0.2 * wave : 200.0 * 1048576 * wave)});
      }
      Json series = {{"metric", {{"namespace", "shop"}, {"pod", "web-7d4b9c8f5d-xk2zq"}, {"container", "app"}}},
                     {"values", values}};
      Json body = {{"status", "success"}, {"data", {{"resultType", "matrix"}, {"result", Json::array({series})}}}};
      response.set_content(body.dump(), "application/json");
    });
    auto empty = [](const httplib::Request&, httplib::Response& response) {
      response.set_content(R"({"status":"success","data":[]})", "application/json");
    };
    server_.Get("/api/v1/series", empty);
    server_.Get("/api/v1/query", [](const httplib::Request&, httplib::Response& response) {
      response.set_content(R"({"status":"success","data":{"resultType":"vector","result":[]}})", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });  // bound and listening: connects queue
  }
  ~FakePrometheus() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST_F(ScanTest, PrometheusUsageIsRecommendedOnTheSpotAndCharted) {
  FakePrometheus prometheus;
  const std::string command = std::string(SIZEGUARD_BINARY) + " scan --kubeconfig " + (dir_ / "kubeconfig").string() +
                              " --policies " + (dir_ / "policies.yaml").string() + " --prometheus " + prometheus.url() +
                              " --history 4d --step 10m -o html --out " + (dir_ / "scan.html").string() + " 2> " +
                              (dir_ / "err").string();
  const int status = std::system(command.c_str());
  err_ = slurp(dir_ / "err");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << err_;
  EXPECT_THAT(err_, HasSubstr("recommended 1 containers from 1 usage series"));
  const std::string html = slurp(dir_ / "scan.html");
  auto has = [&](const std::string& text) { return html.find(text) != std::string::npos; };
  EXPECT_TRUE(has("Usage and recommendations")) << err_;
  EXPECT_TRUE(has("shop/Deployment/web app CPU"));
  EXPECT_TRUE(has("shop/Deployment/web app memory"));
  std::size_t charts = 0;
  for (auto at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++charts;
  EXPECT_EQ(charts, 6u);  // + the usage of web's one container, CPU and memory
  EXPECT_TRUE(has("<td>1 -&gt; "));  // its CPU request of 1 core comes down
}

}  // namespace
}  // namespace sizeguard
