// Cluster state from watches (kube/informer, policies/watch_cluster_state) against the
// fake apiserver's watch endpoint: list then watch, events applied, resume after a dropped
// stream, re-list after 410 Gone, bookmarks, bounded staleness, /readyz and metrics, and a
// namespace relabel reaching the next reviews through `serve`'s runtime with no TTL.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <httplib.h>
#include <openssl/evp.h>

#include "policies/watch_cluster_state.h"
#include "support/child_process.h"
#include "support/fake_apiserver.h"
#include "webhook/app/handlers.h"
#include "webhook/app/runtime.h"
#include "webhook/devcerts.h"
#include "kube/informer.h"
#include "kube/kubeapi.h"
#include "webhook/server.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using test::FakeApiServer;

const std::string kCore = "api/v1";
const std::string kApps = "apis/apps/v1";

// Polls `condition` every 5 ms for at most `limit`; true when it held.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

Json namespace_object(const std::string& name, Json labels = Json::object()) {
  return {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}, {"labels", labels}}}};
}

Json pod(const std::string& name, const std::string& phase, int gpus) {
  Json container = {{"name", "main"},
                    {"image", "trainer:1"},
                    {"env", Json::array({{{"name", "BIG"}, {"value", std::string(1000, 'x')}}})},
                    {"resources", {{"limits", {{"nvidia.com/gpu", std::to_string(gpus)}}}}}};
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"labels", {{"app", "train"}}}, {"managedFields", Json::array({{{"manager", "kubectl"}}})}}},
          {"spec", {{"containers", Json::array({container})}}},
          {"status", {{"phase", phase}}}};
}

Json deployment(const std::string& name, int replicas) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata",
           {{"name", name},
            {"labels", {{"app", name}}},
            {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", "{...}"}, {"team", "web"}}},
            {"managedFields", Json::array({{{"manager", "kubectl"}}})}}},
          {"spec", {{"replicas", replicas}, {"template", {{"spec", {{"containers", Json::array()}}}}}}}};
}

InformerOptions namespaces_informer(Metrics* metrics = nullptr) {
  InformerOptions o;
  o.name = "namespaces";
  o.path = "/api/v1/namespaces";
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  o.metrics = metrics;
  return o;
}

WatchClusterStateOptions fast_options() {
  WatchClusterStateOptions o;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  o.metrics_interval = 20ms;
  return o;
}

std::string label_of(const std::shared_ptr<const Json>& object, const std::string& key) {
  if (!object) return "<absent>";
  return object->value("/metadata/labels"_json_pointer, Json::object()).value(key, std::string());
}

std::size_t count_requests(const FakeApiServer& api, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& r : api.requests()) n += r.rfind(prefix, 0) == 0;
  return n;
}

class WatchTest : public ::testing::Test {
 protected:
  FakeApiServer api_;
  KubeClient client_{api_.client_config()};
};

TEST_F(WatchTest, ListsThenWatchesFromTheListsResourceVersion) {
  api_.put(kCore, "namespaces", "", namespace_object("a", {{"team", "x"}}));
  api_.put(kCore, "namespaces", "", namespace_object("b"));
  Informer informer(client_, namespaces_informer());
  EXPECT_FALSE(informer.synced());
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced(); }));
  EXPECT_EQ(label_of(informer.get("", "a"), "team"), "x");
  EXPECT_NE(informer.get("", "b"), nullptr);
  const std::string listed = informer.status().resource_version;
  ASSERT_TRUE(eventually([&] { return api_.open_watches() == 1; }));
  bool watched_from_list = false;
  for (const auto& r : api_.requests()) {
    if (r.find("watch=1") == std::string::npos) continue;
    EXPECT_THAT(r, HasSubstr("allowWatchBookmarks=true"));
    EXPECT_THAT(r, HasSubstr("timeoutSeconds="));
    watched_from_list = watched_from_list || r.find("resourceVersion=" + listed) != std::string::npos;
  }
  EXPECT_TRUE(watched_from_list) << ::testing::PrintToString(api_.requests());

  // Added, modified, deleted: each applied from the stream, no further LIST.
  const auto lists = count_requests(api_, "GET /api/v1/namespaces?limit=");
  api_.put(kCore, "namespaces", "", namespace_object("c"));
  api_.put(kCore, "namespaces", "", namespace_object("a", {{"team", "y"}}));
  api_.remove(kCore, "namespaces", "", "b");
  EXPECT_TRUE(eventually([&] {
    return informer.get("", "c") && label_of(informer.get("", "a"), "team") == "y" && !informer.get("", "b");
  }));
  EXPECT_EQ(count_requests(api_, "GET /api/v1/namespaces?limit="), lists);
  EXPECT_EQ(informer.status().relists, 0u);
  EXPECT_FALSE(informer.status().broken_since.has_value());
}

TEST_F(WatchTest, ListsInPages) {
  for (int i = 0; i < 5; ++i) api_.put(kCore, "namespaces", "", namespace_object("ns-" + std::to_string(i)));
  InformerOptions o = namespaces_informer();
  o.page_size = 2;
  Informer informer(client_, o);
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced(); }));
  EXPECT_EQ(informer.size(), 5u);
  EXPECT_EQ(count_requests(api_, "GET /api/v1/namespaces?limit=2"), 3u);
  EXPECT_EQ(count_requests(api_, "GET /api/v1/namespaces?limit=2&continue=4"), 1u);
}

// A stream that goes silent (a dead connection sends no FIN) is noticed by the read
// timeout and resumed, without a re-list.
TEST_F(WatchTest, SilentStreamIsReplacedAfterTheReadTimeout) {
  api_.put(kCore, "namespaces", "", namespace_object("a"));
  api_.set_watch_heartbeats(false);
  InformerOptions o = namespaces_informer();
  o.read_timeout = 300ms;
  Informer informer(client_, o);
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced(); }));
  EXPECT_TRUE(eventually([&] { return api_.watches_started() >= 2; })) << informer.status().last_error;
  EXPECT_THAT(informer.status().last_error, HasSubstr("nothing received for 300ms"));
  EXPECT_EQ(informer.status().relists, 0u);
  api_.put(kCore, "namespaces", "", namespace_object("b"));  // and the resumed stream works
  EXPECT_TRUE(eventually([&] { return informer.get("", "b") != nullptr; }));
}

TEST_F(WatchTest, StoredObjectsDropManagedFields) {
  api_.put(kApps, "deployments", "shop", deployment("web", 2));
  InformerOptions o;
  o.name = "deployments";
  o.path = "/apis/apps/v1/deployments";
  Informer informer(client_, o);
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced(); }));
  auto web = informer.get("shop", "web");
  ASSERT_NE(web, nullptr);
  EXPECT_FALSE(web->at("metadata").contains("managedFields"));
  EXPECT_EQ(web->at("spec").at("replicas"), 2);
}

TEST_F(WatchTest, ResumesFromTheLastResourceVersionWhenTheStreamDrops) {
  api_.put(kCore, "namespaces", "", namespace_object("a"));
  Informer informer(client_, namespaces_informer());
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced() && api_.open_watches() == 1; }));
  api_.drop_watches();
  ASSERT_TRUE(eventually([&] { return api_.watches_started() >= 2 && api_.open_watches() == 1; }));
  api_.put(kCore, "namespaces", "", namespace_object("late"));
  EXPECT_TRUE(eventually([&] { return informer.get("", "late") != nullptr; }));
  // A clean end (timeoutSeconds) resumes too.
  api_.end_watches();
  ASSERT_TRUE(eventually([&] { return api_.watches_started() >= 3 && api_.open_watches() == 1; }));
  api_.put(kCore, "namespaces", "", namespace_object("later"));
  EXPECT_TRUE(eventually([&] { return informer.get("", "later") != nullptr; }));
  EXPECT_EQ(informer.status().relists, 0u);  // resumed, never re-listed
  EXPECT_EQ(count_requests(api_, "GET /api/v1/namespaces?limit="), 1u);
}

// The informer reconnects from a resourceVersion the server has compacted away: 410 Gone,
// then a fresh LIST that also brings what it missed meanwhile.
void relist_after_gone(FakeApiServer& api, KubeClient& client, bool gone_as_http) {
  api.set_gone_as_http_status(gone_as_http);
  api.put(kCore, "namespaces", "", namespace_object("a"));
  Metrics metrics;
  describe_watch_metrics(metrics);
  Informer informer(client, namespaces_informer(&metrics));
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced() && api.open_watches() == 1; }));
  api.fail_next(503, 1'000'000);  // hold the reconnect until the history is gone
  api.drop_watches();
  api.put(kCore, "namespaces", "", namespace_object("missed"));
  api.compact();
  api.fail_next(503, 0);
  ASSERT_TRUE(eventually([&] { return informer.get("", "missed") != nullptr; }));
  EXPECT_EQ(informer.status().relists, 1u);
  // The counter is exported just after the list is stored.
  EXPECT_TRUE(eventually([&] {
    return metrics.render().find("sizeguard_watch_relists_total{resource=\"namespaces\"} 1") != std::string::npos;
  })) << metrics.render();
  ASSERT_TRUE(eventually([&] { return api.open_watches() == 1; }));
  api.put(kCore, "namespaces", "", namespace_object("after"));
  EXPECT_TRUE(eventually([&] { return informer.get("", "after") != nullptr; }));
}

TEST_F(WatchTest, RelistsAfterGoneErrorEvent) { relist_after_gone(api_, client_, false); }
TEST_F(WatchTest, RelistsAfterGoneHttpStatus) { relist_after_gone(api_, client_, true); }

TEST_F(WatchTest, BookmarksAdvanceTheResourceVersion) {
  api_.put(kCore, "namespaces", "", namespace_object("a"));
  Informer informer(client_, namespaces_informer());
  informer.start();
  ASSERT_TRUE(eventually([&] { return informer.synced() && api_.open_watches() == 1; }));
  // A write to another resource moves the global resourceVersion but sends no event here.
  const Json other = api_.put(kApps, "deployments", "shop", deployment("web", 1));
  const std::string latest = other["metadata"]["resourceVersion"].get<std::string>();
  EXPECT_NE(informer.status().resource_version, latest);
  api_.send_bookmarks();
  EXPECT_TRUE(eventually([&] { return informer.status().resource_version == latest; }));
}

TEST_F(WatchTest, ReadsFailBeforeTheFirstSync) {
  api_.fail_next(503, 1'000'000, "etcd is down");
  WatchClusterState state(client_, fast_options());
  state.start();
  ASSERT_TRUE(eventually([&] { return state.informer("namespaces")->status().last_error.find("etcd") != std::string::npos; }));
  auto labels = state.namespace_labels("a");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(labels));
  EXPECT_THAT(std::get<ClusterStateError>(labels).message, HasSubstr("watch of namespaces not synced yet"));
  EXPECT_THAT(std::get<ClusterStateError>(labels).message, HasSubstr("etcd is down"));
  EXPECT_TRUE(std::holds_alternative<ClusterStateError>(state.active_pods("a")));
  EXPECT_FALSE(state.synced());
  EXPECT_EQ(state.pending().size(), 5u);
  api_.fail_next(503, 0);
  ASSERT_TRUE(eventually([&] { return state.synced(); }));
  EXPECT_TRUE(std::holds_alternative<std::vector<Json>>(state.active_pods("a")));
}

TEST_F(WatchTest, ReadsFailOnceTheWatchIsBrokenLongerThanTheBound) {
  api_.put(kCore, "namespaces", "", namespace_object("a", {{"team", "x"}}));
  auto options = fast_options();
  options.max_staleness = 300ms;
  WatchClusterState state(client_, options);
  state.start();
  ASSERT_TRUE(eventually([&] { return state.synced(); }));
  auto labels = state.namespace_labels("a");
  ASSERT_TRUE(std::holds_alternative<Json>(labels));
  EXPECT_EQ(std::get<Json>(labels).value("team", ""), "x");
  api_.fail_next(503, 1'000'000);
  api_.drop_watches();
  // Every reconnect fails: after the bound, the state is refused rather than used stale.
  ASSERT_TRUE(eventually([&] { return std::holds_alternative<ClusterStateError>(state.namespace_labels("a")); }));
  EXPECT_THAT(std::get<ClusterStateError>(state.namespace_labels("a")).message,
              HasSubstr("watch of namespaces broken for"));
  api_.fail_next(503, 0);
  EXPECT_TRUE(eventually([&] { return std::holds_alternative<Json>(state.namespace_labels("a")); }));
}

TEST_F(WatchTest, ClusterStateReadsTheStoresAndGetsWhatIsNotWatched) {
  api_.put(kCore, "namespaces", "", namespace_object("ml", {{"sizeguard.io/mode", "enforce"}}));
  api_.put(kCore, "pods", "ml", pod("running", "Running", 2));
  api_.put(kCore, "pods", "ml", pod("pending", "Pending", 1));
  api_.put(kCore, "pods", "ml", pod("done", "Succeeded", 4));
  api_.put(kCore, "pods", "other", pod("elsewhere", "Running", 8));
  api_.put(kApps, "deployments", "ml", deployment("web", 3));
  api_.put(kCore, "replicationcontrollers", "ml", {{"metadata", {{"name", "legacy"}}}, {"spec", {{"replicas", 1}}}});
  Metrics metrics;
  auto options = fast_options();
  options.metrics = &metrics;
  WatchClusterState state(client_, options);
  state.start();
  ASSERT_TRUE(eventually([&] { return state.synced() && api_.open_watches() == 5; }));
  api_.clear_requests();

  auto pods = state.active_pods("ml");
  ASSERT_TRUE(std::holds_alternative<std::vector<Json>>(pods));
  std::vector<std::string> names;
  for (const auto& p : std::get<std::vector<Json>>(pods)) names.push_back(p["metadata"]["name"].get<std::string>());
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("running", "pending"));
  // Trimmed to what GPU counting reads.
  const Json& first = std::get<std::vector<Json>>(pods).front();
  EXPECT_FALSE(first["metadata"].contains("managedFields"));
  EXPECT_FALSE(first["spec"]["containers"][0].contains("env"));
  EXPECT_TRUE(first["spec"]["containers"][0]["resources"]["limits"].contains("nvidia.com/gpu"));

  auto web = state.get_object("apps", "v1", "deployments", "ml", "web");
  ASSERT_TRUE(std::holds_alternative<Json>(web));
  EXPECT_EQ(std::get<Json>(web)["spec"]["replicas"], 3);
  EXPECT_FALSE(std::get<Json>(web)["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
  EXPECT_EQ(std::get<Json>(web)["metadata"]["annotations"]["team"], "web");
  EXPECT_EQ(std::get<Json>(state.namespace_labels("ml")).value("sizeguard.io/mode", ""), "enforce");
  EXPECT_TRUE(api_.requests().empty()) << "watched reads must not call the API: " << ::testing::PrintToString(api_.requests());

  // Not watched: a direct GET. Not seen by the watch: a direct GET too (404 here).
  auto legacy = state.get_object("", "v1", "replicationcontrollers", "ml", "legacy");
  ASSERT_TRUE(std::holds_alternative<Json>(legacy));
  EXPECT_EQ(std::get<Json>(legacy)["spec"]["replicas"], 1);
  auto missing = state.get_object("apps", "v1", "statefulsets", "ml", "db");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(missing));
  EXPECT_THAT(std::get<ClusterStateError>(missing).message, HasSubstr("404"));
  EXPECT_THAT(api_.requests(), ::testing::ElementsAre("GET /api/v1/namespaces/ml/replicationcontrollers/legacy",
                                                      "GET /apis/apps/v1/namespaces/ml/statefulsets/db"));

  // A pod that terminates leaves the selector: the server sends DELETED.
  api_.put(kCore, "pods", "ml", pod("running", "Failed", 2));
  EXPECT_TRUE(eventually([&] { return std::get<std::vector<Json>>(state.active_pods("ml")).size() == 1; }));

  // Freshness metrics for every watched resource.
  ASSERT_TRUE(eventually([&] {
    return metrics.render().find("sizeguard_watch_staleness_seconds{resource=\"replicasets\"}") != std::string::npos;
  }));
  const std::string text = metrics.render();
  for (const char* resource : {"namespaces", "pods", "deployments", "statefulsets", "replicasets"}) {
    EXPECT_THAT(text, HasSubstr("sizeguard_watch_synced{resource=\"" + std::string(resource) + "\"} 1"));
    EXPECT_THAT(text, HasSubstr("sizeguard_watch_staleness_seconds{resource=\"" + std::string(resource) + "\"}"));
    EXPECT_THAT(text, HasSubstr("sizeguard_watch_relists_total{resource=\"" + std::string(resource) + "\"} 0"));
  }
  EXPECT_THAT(text, HasSubstr("# TYPE sizeguard_watch_relists_total counter"));
}

// --- through serve's runtime and the /validate handler ------------------------------------

class ServeRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_private_temp_directory("sizeguard-watch-test");
    unsigned char encoded[8192];
    const int n = EVP_EncodeBlock(encoded, reinterpret_cast<const unsigned char*>(api_.ca_pem().data()),
                                  static_cast<int>(api_.ca_pem().size()));
    std::ofstream(dir_ / "kubeconfig") << "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                                          "clusters:\n- name: fake\n  cluster:\n    server: " << api_.url()
                                       << "\n    certificate-authority-data: " << std::string(reinterpret_cast<char*>(encoded), n)
                                       << "\nusers:\n- name: u\n  user:\n    token: " << api_.token()
                                       << "\ncontexts:\n- name: fake\n  context: {cluster: fake, user: u}\n";
    std::ofstream(dir_ / "policy.yaml") << "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: floor}\n"
                                           "spec:\n  replicas: {min: 2}\n";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  RuntimeOptions options() const {
    RuntimeOptions o;
    o.policies = (dir_ / "policy.yaml").string();
    o.kubeconfig = (dir_ / "kubeconfig").string();
    o.audit_log = "";
    o.watch_policies = false;
    o.watch_cluster_state = true;  // as serve sets it
    return o;
  }

  static AdmissionRequest create_deployment(int replicas) {
    AdmissionRequest r;
    r.api_version = "admission.k8s.io/v1";
    r.uid = "u-" + std::to_string(replicas);
    r.kind = {"apps", "v1", "Deployment"};
    r.resource = {"apps", "v1", "deployments"};
    r.namespace_ = "team-a";
    r.name = "web";
    r.operation = Operation::Create;
    r.object = {{"apiVersion", "apps/v1"},
                {"kind", "Deployment"},
                {"metadata", {{"name", "web"}, {"namespace", "team-a"}}},
                {"spec", {{"replicas", replicas}, {"template", {{"spec", {{"containers", Json::array()}}}}}}}};
    return r;
  }

  FakeApiServer api_;
  std::filesystem::path dir_;
};

TEST_F(ServeRuntimeTest, ReadyAfterEveryWatchSyncedAndRelabelReachesTheNextReviews) {
  api_.put(kCore, "namespaces", "", namespace_object("team-a"));
  api_.fail_next(503, 1'000'000);  // hold the first LISTs
  Metrics metrics;
  Readiness readiness;
  auto runtime = make_runtime(options(), metrics, &readiness);
  ASSERT_TRUE(eventually([&] { return readiness.report().text.find("injected failure") != std::string::npos; }));
  auto report = readiness.report();
  EXPECT_FALSE(report.ready);
  EXPECT_THAT(report.text, HasSubstr("watch namespaces: not ready"));
  EXPECT_THAT(report.text, HasSubstr("watch pods: not ready"));
  EXPECT_THAT(report.text, HasSubstr("watch deployments: not ready"));
  // Before the sync, state reads fail (the engine then applies onClusterStateError).
  auto early = runtime->cluster_state->namespace_labels("team-a");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(early));
  EXPECT_THAT(std::get<ClusterStateError>(early).message, HasSubstr("not synced yet"));

  api_.fail_next(503, 0);
  ASSERT_TRUE(eventually([&] { return readiness.report().ready; })) << readiness.report().text;
  EXPECT_THAT(metrics.render(), HasSubstr("sizeguard_watch_synced{resource=\"namespaces\"} 1"));
  EXPECT_THAT(readiness.report().text, HasSubstr("watch replicasets: ok"));
  EXPECT_FALSE(validate(create_deployment(1), runtime->context).allowed);  // enforced

  // Relabel to audit: seen by the reviews as soon as the event arrives (the old 10 s TTL
  // cache kept enforcing), with no GET per review.
  api_.clear_requests();
  const auto relabelled = std::chrono::steady_clock::now();
  api_.put(kCore, "namespaces", "", namespace_object("team-a", {{"sizeguard.io/mode", "audit"}}));
  ASSERT_TRUE(eventually([&] { return validate(create_deployment(1), runtime->context).allowed; }, 9s));
  EXPECT_LT(std::chrono::steady_clock::now() - relabelled, 5s);  // milliseconds unless the machine is starved
  EXPECT_EQ(count_requests(api_, "GET /api/v1/namespaces/team-a"), 0u);
}

// The real binary: `serve` wires the watches to /readyz and /metrics.
TEST_F(ServeRuntimeTest, ServeBinaryIsNotReadyUntilEveryWatchHasListed) {
  api_.put(kCore, "namespaces", "", namespace_object("team-a"));
  api_.fail_next(503, 1'000'000);
  const std::string log = (dir_ / "serve.log").string();
  const std::string kubeconfig = (dir_ / "kubeconfig").string();
  std::vector<std::string> args = {SIZEGUARD_BINARY, "serve", "--dev", "--listen", "127.0.0.1:0",
                                   "--metrics-listen", "127.0.0.1:0", "--kubeconfig", kubeconfig,
                                   "--policies", "", "--audit-log", ""};
  test::ChildProcess child(args, log);
  ASSERT_TRUE(child.started());
  int metrics_port = 0;
  ASSERT_TRUE(eventually([&] { return (metrics_port = child.logged_metrics_port()) > 0; })) << child.log_text();
  httplib::Client metrics("127.0.0.1", metrics_port);
  auto readyz = metrics.Get("/readyz");
  ASSERT_TRUE(readyz);
  EXPECT_EQ(readyz->status, 503);
  EXPECT_THAT(readyz->body, HasSubstr("watch pods: not ready"));
  EXPECT_THAT(readyz->body, HasSubstr("watch namespaces: not ready"));
  api_.fail_next(503, 0);
  ASSERT_TRUE(eventually([&] {
    auto r = metrics.Get("/readyz");
    return r && r->status == 200;
  }));
  auto text = metrics.Get("/metrics");
  ASSERT_TRUE(text);
  for (const char* resource : {"namespaces", "pods", "deployments", "statefulsets", "replicasets"}) {
    EXPECT_THAT(text->body, HasSubstr("sizeguard_watch_synced{resource=\"" + std::string(resource) + "\"} 1"));
  }
  EXPECT_THAT(text->body, HasSubstr("sizeguard_watch_staleness_seconds{resource=\"pods\"}"));
  EXPECT_THAT(text->body, HasSubstr("sizeguard_watch_relists_total{resource=\"pods\"} 0"));
}

}  // namespace
}  // namespace sizeguard
