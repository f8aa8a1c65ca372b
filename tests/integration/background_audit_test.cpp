// The background audit against a (fake) Kubernetes API: workloads LISTed in pages, findings
// written as PolicyReports per namespace (created, updated in place, left alone when equal,
// deleted when resolved; reports sizeguard does not manage are never touched), nothing
// written after a failed LIST, and one writer among two replicas through the leader Lease.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <httplib.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policies/api_cluster_state.h"
#include "policies/loader.h"
#include "support/child_process.h"
#include "support/fake_apiserver.h"
#include "support/temp_dir.h"
#include "webhook/app/background_audit.h"
#include "webhook/devcerts.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kApps = "apis/apps/v1";
const std::string kReports = "apis/wgpolicyk8s.io/v1alpha2";
const std::string kLeases = "apis/coordination.k8s.io/v1";

std::shared_ptr<const PolicySet> requirements() {
  PolicyLoad load = parse_policies(R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: requirements}
spec:
  mode: enforce
  resources:
    required: {requests: [cpu, memory]}
)",
                                   "requirements.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

Json deployment(const std::string& ns, const std::string& name, Json resources) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-" + ns + "-" + name}}},
          {"spec",
           {{"replicas", 2},
            {"template",
             {{"metadata", {{"labels", {{"app", name}}}}},
              {"spec", {{"containers", Json::array({{{"name", "app"}, {"image", "app:1"}, {"resources", resources}}})}}}}}}}};
}

const Json kSized = {{"requests", {{"cpu", "100m"}, {"memory", "64Mi"}}}};

struct Cluster {
  Cluster() : client(api.client_config()), state(client) {
    for (const char* ns : {"shop", "ok"}) {
      api.put("api/v1", "namespaces", "", {{"metadata", {{"name", ns}}}});
    }
    api.put(kApps, "deployments", "shop", deployment("shop", "web", Json::object()));
    api.put(kApps, "deployments", "ok", deployment("ok", "api", kSized));
    // Owned by the Deployment: judged there, not here.
    Json rs = deployment("shop", "web-5d8f", Json::object());
    rs["kind"] = "ReplicaSet";
    rs["metadata"]["ownerReferences"] = Json::array({{{"kind", "Deployment"}, {"name", "web"}, {"controller", true}}});
    api.put(kApps, "replicasets", "shop", rs);
    options.policies = [set = requirements()] { return set; };
    options.state = &state;
  }
  std::optional<Json> report(const std::string& ns) const {
    return api.get(kReports, "policyreports", ns, kPolicyReportName);
  }
  ReportSync audit_and_sync() {
    AuditRun run = audit_cluster(client, options);
    EXPECT_EQ(run.error, "");
    return sync_policy_reports(client, run.reports);
  }
  test::FakeApiServer api;
  KubeClient client;
  ApiClusterState state;
  BackgroundAuditOptions options;
};

TEST(BackgroundAudit, WritesOnePolicyReportPerNamespaceAndKeepsItCurrent) {
  Cluster c;
  // A report someone else (Kyverno) writes in the same namespace is not ours to touch.
  c.api.put(kReports, "policyreports", "shop",
            {{"metadata", {{"name", "polr-kyverno"}, {"labels", {{"app.kubernetes.io/managed-by", "kyverno"}}}}}});

  ReportSync first = c.audit_and_sync();
  EXPECT_TRUE(first.errors.empty()) << ::testing::PrintToString(first.errors);
  EXPECT_EQ(first.created, 2);
  auto shop = c.report("shop");
  ASSERT_TRUE(shop);
  EXPECT_EQ((*shop)["kind"], "PolicyReport");
  EXPECT_EQ((*shop)["metadata"]["labels"]["app.kubernetes.io/managed-by"], "sizeguard");
  EXPECT_EQ((*shop)["summary"]["fail"], 1);
  EXPECT_EQ((*shop)["summary"]["pass"], 0);
  ASSERT_EQ((*shop)["results"].size(), 1u);  // the ReplicaSet was skipped
  const Json& result = (*shop)["results"][0];
  EXPECT_EQ(result["policy"], "requirements");
  EXPECT_EQ(result["rule"], "resources");
  EXPECT_EQ(result["result"], "fail");
  EXPECT_THAT(result["message"].get<std::string>(), HasSubstr("container app has no cpu request"));
  EXPECT_EQ(result["properties"]["reason"], "MissingRequest");
  EXPECT_EQ(result["resources"][0], Json({{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", "web"},
                                          {"namespace", "shop"}, {"uid", "uid-shop-web"}}));
  auto ok = c.report("ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ((*ok)["summary"]["pass"], 1);

  // Nothing changed: nothing written.
  const std::string version = (*shop)["metadata"]["resourceVersion"];
  c.api.clear_requests();
  ReportSync again = c.audit_and_sync();
  for (const auto& r : c.api.requests()) EXPECT_FALSE(r.starts_with("PUT") || r.starts_with("POST") || r.starts_with("DELETE")) << r;
  EXPECT_EQ(again.unchanged, 2);
  EXPECT_EQ(again.created + again.updated + again.deleted, 0);
  EXPECT_EQ((*c.report("shop"))["metadata"]["resourceVersion"], version);

  // Fixed: the same report, updated in place.
  c.api.put(kApps, "deployments", "shop", deployment("shop", "web", kSized));
  ReportSync fixed = c.audit_and_sync();
  EXPECT_EQ(fixed.updated, 1);
  EXPECT_EQ(fixed.created, 0);
  shop = c.report("shop");
  ASSERT_TRUE(shop);
  EXPECT_NE((*shop)["metadata"]["resourceVersion"], version);
  EXPECT_EQ((*shop)["summary"]["fail"], 0);
  EXPECT_EQ((*shop)["summary"]["pass"], 1);

  // A cluster-scoped report is created and removed the same way.
  ObjectAudit cluster_scoped;
  cluster_scoped.kind = "NodePool";
  cluster_scoped.api_version = "example.io/v1";
  cluster_scoped.name = "gpu-pool";
  cluster_scoped.results = {{"p", "r", "fail", Mode::Enforce, "too big", "X", true}};
  auto desired = audit_cluster(c.client, c.options).reports;
  desired[""] = build_policy_reports({cluster_scoped}).at("");
  EXPECT_EQ(sync_policy_reports(c.client, desired).created, 1);
  EXPECT_TRUE(c.api.get(kReports, "clusterpolicyreports", "", kPolicyReportName));
  desired.erase("");
  EXPECT_EQ(sync_policy_reports(c.client, desired).deleted, 1);
  EXPECT_FALSE(c.api.get(kReports, "clusterpolicyreports", "", kPolicyReportName));

  // Nothing left to judge in the namespace: its report goes, Kyverno's stays.
  c.api.remove(kApps, "deployments", "ok", "api");
  ReportSync emptied = c.audit_and_sync();
  EXPECT_EQ(emptied.deleted, 1);
  EXPECT_FALSE(c.report("ok"));
  EXPECT_TRUE(c.api.get(kReports, "policyreports", "shop", "polr-kyverno"));
}

TEST(BackgroundAudit, ListsInPagesAndWritesNothingAfterAFailedList) {
  Cluster c;
  for (int i = 0; i < 7; ++i) c.api.put(kApps, "deployments", "shop", deployment("shop", "w" + std::to_string(i), Json::object()));
  c.options.page_size = 2;
  c.api.clear_requests();
  AuditRun run = audit_cluster(c.client, c.options);
  ASSERT_EQ(run.error, "");
  int deployment_pages = 0;
  for (const auto& r : c.api.requests()) deployment_pages += r.starts_with("GET /apis/apps/v1/deployments?limit=2");
  EXPECT_EQ(deployment_pages, 5);  // 9 Deployments, 2 a page
  ASSERT_TRUE(run.reports.count("shop"));
  EXPECT_EQ(run.reports["shop"]["summary"]["fail"], 8);
  ASSERT_TRUE(sync_policy_reports(c.client, run.reports).errors.empty());

  // A LIST that fails: no reports built, and the ones written stay as they were.
  const std::string version = (*c.report("shop"))["metadata"]["resourceVersion"];
  c.api.put(kApps, "deployments", "shop", deployment("shop", "web", kSized));
  c.api.fail_next(500, 1, "etcd timeout");
  AuditRun failed = audit_cluster(c.client, c.options);
  EXPECT_THAT(failed.error, HasSubstr("500"));
  EXPECT_TRUE(failed.reports.empty());
  EXPECT_EQ((*c.report("shop"))["metadata"]["resourceVersion"], version);
}

bool eventually(const std::function<bool()>& condition) {
  for (auto deadline = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < deadline;) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

TEST(BackgroundAudit, OnlyTheLeaseHolderWritesReports) {
  Cluster c;
  auto replica = [&](const std::string& identity, Metrics& metrics) {
    BackgroundAuditOptions options = c.options;
    options.interval = 100ms;
    options.renew_every = 50ms;
    options.lease = {"sizeguard-system", "sizeguard-audit-leader", identity, 2s};
    options.metrics = &metrics;
    return std::make_unique<BackgroundAudit>(c.client, options);
  };
  Metrics metrics_a, metrics_b;
  auto a = replica("replica-a", metrics_a);
  auto b = replica("replica-b", metrics_b);
  a->start();
  ASSERT_TRUE(eventually([&] { return a->runs() >= 1; }));
  b->start();
  // b contends for the Lease many times while a renews it and keeps auditing.
  const auto a_runs = a->runs();
  ASSERT_TRUE(eventually([&] { return a->runs() >= a_runs + 5; }));
  EXPECT_TRUE(a->leader());
  EXPECT_FALSE(b->leader());
  EXPECT_EQ(b->runs(), 0u);
  EXPECT_THAT(metrics_a.render(), HasSubstr("sizeguard_audit_leader 1"));
  EXPECT_THAT(metrics_b.render(), HasSubstr("sizeguard_audit_leader 0"));
  EXPECT_THAT(metrics_a.render(), HasSubstr("sizeguard_audit_violations{policy=\"requirements\",rule=\"resources\",namespace=\"shop\"} 1"));
  EXPECT_THAT(metrics_a.render(), HasSubstr("sizeguard_audit_runs_total{result=\"success\"}"));
  EXPECT_THAT(metrics_b.render(), ::testing::Not(HasSubstr("sizeguard_audit_violations{")));
  auto lease = c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader");
  ASSERT_TRUE(lease);
  EXPECT_EQ((*lease)["spec"]["holderIdentity"], "replica-a");
  ASSERT_TRUE(c.report("shop"));

  // a stops and gives the Lease up: b takes over well before it would have expired.
  a->stop();
  EXPECT_EQ((*c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader"))["spec"]["holderIdentity"], "");
  ASSERT_TRUE(eventually([&] { return b->runs() >= 1; }));
  EXPECT_TRUE(b->leader());
  EXPECT_EQ((*c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader"))["spec"]["holderIdentity"],
            "replica-b");
  b->stop();
}

TEST(BackgroundAudit, ALeaseUnchangedForItsDurationIsTakenOverWhateverTheClocksSay) {
  Cluster c;
  LeaderLease a{"sizeguard-system", "sizeguard-audit-leader", "replica-a", 30s};
  LeaderLease b = a;
  b.identity = "replica-b";
  LeaseObservation seen_by_a, seen_by_b;
  // a's wall clock is an hour behind: its renewTime looks long expired to b, which must not
  // matter. Local (steady) times are what each replica measures on its own.
  const auto wall = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  const auto local = std::chrono::steady_clock::time_point(std::chrono::seconds(1'000));
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, a, wall - 1h, seen_by_a, local)), true);
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, b, wall + 10s, seen_by_b, local + 10s)), false);
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, a, wall - 1h + 20s, seen_by_a, local + 20s)), true);  // renewed
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, b, wall + 45s, seen_by_b, local + 45s)), false);  // saw the renewal
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, b, wall + 74s, seen_by_b, local + 74s)), false);  // 29 s unchanged
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, b, wall + 76s, seen_by_b, local + 76s)), true);   // 31 s: expired
  auto stored = c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader");
  ASSERT_TRUE(stored);
  EXPECT_EQ((*stored)["spec"]["holderIdentity"], "replica-b");
  EXPECT_EQ((*stored)["spec"]["leaseTransitions"], 1);
  EXPECT_EQ((*stored)["spec"]["leaseDurationSeconds"], 30);
  EXPECT_THAT((*stored)["spec"]["renewTime"].get<std::string>(), HasSubstr(".000000Z"));
  EXPECT_EQ(std::get<bool>(acquire_or_renew(c.client, a, wall - 1h + 77s, seen_by_a, local + 77s)), false);
}

// The real binary: `serve --audit-interval` leads, writes the reports, exports the metrics
// and gives the Lease up on SIGTERM.
TEST(BackgroundAudit, ServeAuditsOnItsIntervalAndReleasesTheLeaseOnShutdown) {
  Cluster c;
  const test::TempDir temp("sizeguard-audit-test");
  const auto& dir = temp.path;
  c.api.write_kubeconfig(dir / "kubeconfig");
  std::ofstream(dir / "policy.yaml") << "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: requirements}\n"
                                        "spec:\n  resources:\n    required: {requests: [cpu, memory]}\n";
  const std::string log = (dir / "serve.log").string();
  std::vector<std::string> args = {SIZEGUARD_BINARY, "serve", "--dev", "--listen", "127.0.0.1:0", "--metrics-listen",
                                   "127.0.0.1:0", "--kubeconfig", (dir / "kubeconfig").string(), "--policies",
                                   (dir / "policy.yaml").string(), "--audit-log", "", "--audit-interval", "1s",
                                   "--budget-namespace", "sizeguard-system"};
  test::ChildProcess child(args, log);
  ASSERT_TRUE(child.started());
  auto log_text = [&] { return child.log_text(); };
  int metrics_port = 0;
  ASSERT_TRUE(eventually([&] { return (metrics_port = child.logged_metrics_port()) > 0; })) << log_text();
  ASSERT_TRUE(eventually([&] { return c.report("shop").has_value(); })) << log_text();
  EXPECT_EQ((*c.report("shop"))["summary"]["fail"], 1);
  httplib::Client metrics("127.0.0.1", metrics_port);
  std::string text;
  ASSERT_TRUE(eventually([&] {
    auto r = metrics.Get("/metrics");
    text = r ? r->body : "";
    return text.find("sizeguard_audit_runs_total{result=\"success\"} 2") != std::string::npos;  // the interval
  })) << text;
  EXPECT_THAT(text, HasSubstr("sizeguard_audit_leader 1"));
  EXPECT_THAT(text, HasSubstr("sizeguard_audit_violations{policy=\"requirements\",rule=\"resources\",namespace=\"shop\"} 1"));
  EXPECT_THAT(text, HasSubstr("sizeguard_audit_last_run_timestamp_seconds "));
  auto lease = c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader");
  ASSERT_TRUE(lease);
  EXPECT_NE((*lease)["spec"]["holderIdentity"], "");
  EXPECT_EQ(child.terminate(), 0) << log_text();
  EXPECT_EQ((*c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader"))["spec"]["holderIdentity"], "");
}

// --audit-interval 0: no Lease, no reports, no audit metrics; a bad value is refused.
TEST(BackgroundAudit, ServeWithTheAuditOffNeverTakesTheLease) {
  Cluster c;
  const test::TempDir temp("sizeguard-audit-off-test");
  const auto& dir = temp.path;
  c.api.write_kubeconfig(dir / "kubeconfig");
  const std::string base = std::string(SIZEGUARD_BINARY) + " serve --dev --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "
                           "--kubeconfig " + (dir / "kubeconfig").string() + " --policies '' --audit-log '' ";
  EXPECT_EQ(WEXITSTATUS(std::system((base + "--audit-interval -5s > /dev/null 2> " + (dir / "bad").string()).c_str())), 2);
  std::ifstream bad(dir / "bad");
  EXPECT_THAT(std::string((std::istreambuf_iterator<char>(bad)), std::istreambuf_iterator<char>()),
              HasSubstr("--audit-interval: '-5s' is not a positive duration"));

  const std::string log = (dir / "serve.log").string();
  std::vector<std::string> args = {SIZEGUARD_BINARY, "serve", "--dev", "--listen", "127.0.0.1:0", "--metrics-listen",
                                   "127.0.0.1:0", "--kubeconfig", (dir / "kubeconfig").string(), "--policies", "",
                                   "--audit-log", "", "--audit-interval", "0", "--budget-namespace", "sizeguard-system"};
  test::ChildProcess child(args, log);
  ASSERT_TRUE(child.started());
  int metrics_port = 0;
  ASSERT_TRUE(eventually([&] { return (metrics_port = child.logged_metrics_port()) > 0; })) << child.log_text();
  httplib::Client metrics("127.0.0.1", metrics_port);
  ASSERT_TRUE(eventually([&] {
    auto r = metrics.Get("/readyz");
    return r && r->status == 200;
  }));
  auto text = metrics.Get("/metrics");
  ASSERT_TRUE(text);
  EXPECT_THAT(text->body, Not(HasSubstr("sizeguard_audit_")));
  EXPECT_FALSE(c.api.get(kLeases, "leases", "sizeguard-system", "sizeguard-audit-leader"));
  EXPECT_FALSE(c.report("shop"));
}

}  // namespace
}  // namespace sizeguard
