// KubeClient, its configuration loaders and ApiClusterState against the fake apiserver
// (real TLS sockets on 127.0.0.1).
#include <gtest/gtest.h>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <openssl/evp.h>

#include "support/fake_apiserver.h"
#include "support/fixtures.h"
#include "policies/api_cluster_state.h"
#include "webhook/devcerts.h"
#include "kube/kubeapi.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using test::FakeApiServer;

std::string error_of(const std::variant<Json, std::string>& result) {
  if (auto* error = std::get_if<std::string>(&result)) return *error;
  return "";
}

const Json& json_of(const std::variant<Json, std::string>& result) {
  if (auto* error = std::get_if<std::string>(&result)) ADD_FAILURE() << "unexpected error: " << *error;
  static const Json null;
  auto* json = std::get_if<Json>(&result);
  return json ? *json : null;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string base64(const std::string& text) {
  std::string out(4 * ((text.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Json pod(const std::string& name, const std::string& phase, Json labels = Json::object()) {
  Json object = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", {{"name", name}, {"labels", labels}}}};
  if (!phase.empty()) object["status"]["phase"] = phase;
  return object;
}

std::vector<std::string> names(const Json& list) {
  std::vector<std::string> out;
  for (const auto& item : list.at("items")) out.push_back(item.at("metadata").at("name").get<std::string>());
  std::sort(out.begin(), out.end());
  return out;
}

class TempDir {
 public:
  TempDir() : path_(make_private_temp_directory("sizeguard-kubeapi-test")) {}
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class KubeApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server.put("api/v1", "namespaces", "",
               {{"apiVersion", "v1"},
                {"kind", "Namespace"},
                {"metadata", {{"name", "prod"}, {"labels", {{"team", "ml"}, {"sizeguard.io/enforce", "true"}}}}}});
    server.put("api/v1", "namespaces", "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "bare"}}}});
    server.put("apis/apps/v1", "deployments", "prod",
               {{"apiVersion", "apps/v1"},
                {"kind", "Deployment"},
                {"metadata", {{"name", "web"}}},
                {"spec", {{"replicas", 3}}}});
  }

  KubeConfig config(std::chrono::milliseconds timeout = 2000ms) const {
    KubeConfig c;
    c.server = server.url();
    c.ca_pem = server.ca_pem();
    c.token = server.token();
    c.timeout = timeout;
    c.source = "test";
    return c;
  }

  FakeApiServer server;
};

// --- KubeClient -------------------------------------------------------------------------

TEST_F(KubeApiTest, GetsNamespace) {
  KubeClient client(config());
  auto result = client.get_json("/api/v1/namespaces/prod");
  const Json& ns = json_of(result);
  EXPECT_EQ(ns["metadata"]["labels"]["team"], "ml");
  EXPECT_FALSE(ns["metadata"]["resourceVersion"].get<std::string>().empty());
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0], "GET /api/v1/namespaces/prod");
}

TEST_F(KubeApiTest, GetsDeployment) {
  KubeClient client(config());
  auto result = client.get_json("/apis/apps/v1/namespaces/prod/deployments/web");
  EXPECT_EQ(json_of(result)["spec"]["replicas"], 3);
  EXPECT_EQ(json_of(result)["metadata"]["namespace"], "prod");
}

TEST_F(KubeApiTest, NotFoundCarriesStatusMessage) {
  KubeClient client(config());
  auto error = error_of(client.get_json("/apis/apps/v1/namespaces/prod/deployments/missing"));
  EXPECT_EQ(error, "GET /apis/apps/v1/namespaces/prod/deployments/missing: 404 Not Found: "
                   "deployments.apps \"missing\" not found");
  auto response = client.request("GET", "/api/v1/namespaces/nope");
  EXPECT_EQ(response.status, 404);
  EXPECT_EQ(Json::parse(response.body)["reason"], "NotFound");
}

TEST_F(KubeApiTest, ListsPodsWithFieldAndLabelSelectors) {
  server.put("api/v1", "pods", "prod", pod("web-1", "Running", {{"app", "web"}}));
  server.put("api/v1", "pods", "prod", pod("web-2", "", {{"app", "web"}, {"canary", "true"}}));
  server.put("api/v1", "pods", "prod", pod("web-done", "Succeeded", {{"app", "web"}}));
  server.put("api/v1", "pods", "prod", pod("db-1", "Running", {{"app", "db"}}));
  server.put("api/v1", "pods", "prod", pod("db-crashed", "Failed", {{"app", "db"}}));
  server.put("api/v1", "pods", "prod", pod("other", "Running"));
  server.put("api/v1", "pods", "staging", pod("web-staging", "Running", {{"app", "web"}}));
  KubeClient client(config());

  auto list = [&](const std::string& query) {
    auto result = client.get_json("/api/v1/namespaces/prod/pods" + query);
    return names(json_of(result));
  };
  using V = std::vector<std::string>;
  const std::string active = "?fieldSelector=" + kube_path_escape("status.phase!=Succeeded,status.phase!=Failed");
  EXPECT_EQ(list(active), (V{"db-1", "other", "web-1", "web-2"}));
  EXPECT_EQ(list("?fieldSelector=" + kube_path_escape("status.phase=Pending")), (V{"web-2"}));
  EXPECT_EQ(list("?labelSelector=" + kube_path_escape("app=web")), (V{"web-1", "web-2", "web-done"}));
  EXPECT_EQ(list("?labelSelector=" + kube_path_escape("app=web,canary!=true")), (V{"web-1", "web-done"}));
  EXPECT_EQ(list("?labelSelector=" + kube_path_escape("!app")), (V{"other"}));
  EXPECT_EQ(list("?labelSelector=canary"), (V{"web-2"}));
  EXPECT_EQ(list("?labelSelector=" + kube_path_escape("app in (web, db),!canary") + "&" + active.substr(1)),
            (V{"db-1", "web-1"}));

  auto whole = client.get_json("/api/v1/namespaces/prod/pods");
  EXPECT_EQ(json_of(whole)["kind"], "PodList");
  EXPECT_FALSE(json_of(whole)["metadata"]["resourceVersion"].get<std::string>().empty());
  EXPECT_EQ(json_of(whole)["items"].size(), 6u);

  auto bad = client.request("GET", "/api/v1/namespaces/prod/pods?labelSelector=" + kube_path_escape("app notany (x)"));
  EXPECT_EQ(bad.status, 400);
}

TEST_F(KubeApiTest, CreateReplaceDeleteWithOptimisticConcurrency) {
  KubeClient client(config());
  Json cm = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "settings"}}}, {"data", {{"a", "1"}}}};
  auto created = client.request("POST", "/api/v1/namespaces/prod/configmaps", cm.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string rv1 = Json::parse(created.body)["metadata"]["resourceVersion"];

  auto again = client.request("POST", "/api/v1/namespaces/prod/configmaps", cm.dump());
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(Json::parse(again.body)["reason"], "AlreadyExists");

  Json update = Json::parse(created.body);
  update["data"]["a"] = "2";
  auto replaced = client.request("PUT", "/api/v1/namespaces/prod/configmaps/settings", update.dump());
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  const std::string rv2 = Json::parse(replaced.body)["metadata"]["resourceVersion"];
  EXPECT_NE(rv1, rv2);
  EXPECT_EQ(server.get("api/v1", "configmaps", "prod", "settings")->at("data").at("a"), "2");

  update["data"]["a"] = "3";  // still carries rv1: stale
  auto conflict = client.request("PUT", "/api/v1/namespaces/prod/configmaps/settings", update.dump());
  EXPECT_EQ(conflict.status, 409);
  EXPECT_EQ(Json::parse(conflict.body)["reason"], "Conflict");
  EXPECT_NE(kube_error_summary(conflict.status, conflict.body).find("409 Conflict: Operation cannot be fulfilled"),
            std::string::npos);
  EXPECT_EQ(server.get("api/v1", "configmaps", "prod", "settings")->at("data").at("a"), "2");

  auto absent = client.request("PUT", "/api/v1/namespaces/prod/configmaps/nope",
                               Json{{"metadata", {{"name", "nope"}}}}.dump());
  EXPECT_EQ(absent.status, 404);

  auto deleted = client.request("DELETE", "/api/v1/namespaces/prod/configmaps/settings");
  EXPECT_EQ(deleted.status, 200);
  EXPECT_FALSE(server.get("api/v1", "configmaps", "prod", "settings").has_value());
  EXPECT_EQ(client.request("DELETE", "/api/v1/namespaces/prod/configmaps/settings").status, 404);
}

TEST_F(KubeApiTest, WrongTokenIsUnauthorized) {
  auto c = config();
  c.token = "not-the-token";
  KubeClient client(c);
  auto response = client.request("GET", "/api/v1/namespaces/prod");
  EXPECT_EQ(response.status, 401);
  EXPECT_EQ(Json::parse(response.body)["kind"], "Status");
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "GET /api/v1/namespaces/prod: 401 Unauthorized: Unauthorized");

  c.token.clear();
  KubeClient anonymous(c);
  EXPECT_EQ(anonymous.request("GET", "/api/v1/namespaces/prod").status, 401);
}

TEST_F(KubeApiTest, InjectedFailuresSurfaceTheStatusMessage) {
  KubeClient client(config());
  server.fail_next(403, 1, "namespaces \"prod\" is forbidden: User \"system:serviceaccount:sg:sg\" cannot get resource");
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")),
            "GET /api/v1/namespaces/prod: 403 Forbidden: namespaces \"prod\" is forbidden: User "
            "\"system:serviceaccount:sg:sg\" cannot get resource");
  server.fail_next(500, 2, "etcdserver: request timed out");
  for (int i = 0; i < 2; ++i) {
    auto error = error_of(client.get_json("/api/v1/namespaces/prod"));
    EXPECT_NE(error.find("500 Internal Server Error: etcdserver: request timed out"), std::string::npos) << error;
  }
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");
  EXPECT_EQ(server.request_count(), 4u);
}

TEST_F(KubeApiTest, SlowServerTimesOut) {
  KubeClient client(config(300ms));
  ASSERT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");  // warm keep-alive connection
  server.set_delay(2s);
  auto start = std::chrono::steady_clock::now();
  auto error = error_of(client.get_json("/api/v1/namespaces/prod"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_NE(error.find("timeout"), std::string::npos) << error;
  EXPECT_EQ(error.rfind("GET /api/v1/namespaces/prod: ", 0), 0u) << error;
  EXPECT_LT(elapsed, 1500ms) << "gave up at the 300 ms timeout, not when the 2 s answer came";

  // A fresh connection times out the same way.
  KubeClient fresh(config(300ms));
  auto response = fresh.request("GET", "/api/v1/namespaces/prod");
  EXPECT_EQ(response.status, 0);
  EXPECT_NE(response.transport_error.find("timeout"), std::string::npos) << response.transport_error;

  server.set_delay(0ms);
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");  // recovers
}

TEST_F(KubeApiTest, DroppedConnectionIsATransportError) {
  KubeClient client(config());
  ASSERT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");
  server.set_drop_connections(true);
  auto start = std::chrono::steady_clock::now();
  auto response = client.request("GET", "/api/v1/namespaces/prod");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
  EXPECT_EQ(response.status, 0);
  EXPECT_NE(response.transport_error.find("connection failed"), std::string::npos) << response.transport_error;
  EXPECT_EQ(response.transport_error.find("timeout"), std::string::npos) << response.transport_error;
  auto error = error_of(client.get_json("/api/v1/namespaces/prod"));
  EXPECT_NE(error.find("closed the connection without a response"), std::string::npos) << error;

  server.set_drop_connections(false);
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");
}

TEST_F(KubeApiTest, RefusedConnection) {
  auto c = config(500ms);
  int port = server.port();
  server.stop();
  c.server = "https://127.0.0.1:" + std::to_string(port);
  KubeClient client(c);
  auto error = error_of(client.get_json("/api/v1/namespaces/prod"));
  EXPECT_NE(error.find("connection failed"), std::string::npos) << error;
}

TEST_F(KubeApiTest, WrongCertificateAuthorityFailsVerification) {
  TempDir other;
  auto other_ca = test::read_file(make_dev_certificates(other.path()).ca_cert);
  auto c = config();
  c.ca_pem = other_ca;
  KubeClient client(c);
  auto response = client.request("GET", "/api/v1/namespaces/prod");
  EXPECT_EQ(response.status, 0);
  EXPECT_NE(response.transport_error.find("certificate verification failed"), std::string::npos)
      << response.transport_error;
  EXPECT_EQ(server.request_count(), 0u);

  c.insecure_skip_tls_verify = true;
  KubeClient insecure(c);
  EXPECT_EQ(insecure.request("GET", "/api/v1/namespaces/prod").status, 200);

  // The right CA but a name the certificate does not cover.
  auto named = config();
  // "127.1" resolves to 127.0.0.1 (inet_aton shorthand) but is checked as a DNS name,
  // which the serving certificate (localhost, 127.0.0.1, ::1) does not list.
  named.server = "https://127.1:" + std::to_string(server.port());
  KubeClient wrong_host(named);
  auto mismatch = wrong_host.request("GET", "/api/v1/namespaces/prod").transport_error;
  EXPECT_NE(mismatch.find("hostname mismatch"), std::string::npos) << mismatch;
}

TEST_F(KubeApiTest, SystemDefaultTrustRejectsThrowawayCa) {
  auto c = config();
  c.ca_pem.clear();
  KubeClient client(c);
  auto response = client.request("GET", "/api/v1/namespaces/prod");
  EXPECT_EQ(response.status, 0);
  EXPECT_NE(response.transport_error.find("certificate verification failed"), std::string::npos)
      << response.transport_error;
}

TEST_F(KubeApiTest, TokenFileRotationIsPickedUp) {
  TempDir dir;
  const auto token_file = dir.path() / "token";
  server.set_token("token-one");
  write_file(token_file, "token-one\n");
  auto c = config();
  c.token.clear();
  c.token_file = token_file.string();
  KubeClient client(c);
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");

  // The kubelet rotates the projected token and the apiserver stops accepting the old one.
  write_file(token_file, "token-two\n");
  server.set_token("token-two");
  server.clear_requests();
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");
  EXPECT_EQ(server.request_count(), 2u);  // one 401 with the old token, one retry with the new
  server.clear_requests();
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");
  EXPECT_EQ(server.request_count(), 1u);  // the new token is kept
}

TEST_F(KubeApiTest, ConcurrentRequestsShareThePool) {
  KubeClient client(config());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto result = client.get_json(i % 2 ? "/api/v1/namespaces/prod" : "/apis/apps/v1/namespaces/prod/deployments/web");
        if (!std::holds_alternative<Json>(result)) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server.request_count(), 80u);
}

// The apiserver closes idle keep-alive connections (after 90 s); a request written into
// such a connection used to fail, and with it the review's lookup. The client now resends
// an idempotent request once, on a new connection.
TEST(KubeClientIdle, ConnectionClosedByTheServerWhileIdleIsReplacedTransparently) {
  FakeApiServer server("token", /*idle_timeout_seconds=*/1);
  server.put("api/v1", "namespaces", "", {{"metadata", {{"name", "prod"}}}});
  KubeConfig c = server.client_config(2000ms);
  c.max_idle = 60s;  // keep the pooled connection past the server's idle timeout
  KubeClient client(c);
  ASSERT_TRUE(std::holds_alternative<Json>(client.get_json("/api/v1/namespaces/prod")));
  ASSERT_EQ(server.open_connections(), 1);
  // Wait (bounded) for the server to close the idle connection.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server.open_connections() != 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server.open_connections(), 0);
  auto again = client.get_json("/api/v1/namespaces/prod");
  EXPECT_EQ(error_of(again), "");
  EXPECT_EQ(client.connections_opened(), 2u);
  // PUT with a resourceVersion is resent the same way (a conflict would say so, not a lost write).
  while (server.open_connections() != 0 && std::chrono::steady_clock::now() < deadline + 10s) std::this_thread::sleep_for(10ms);
  Json ns = json_of(again);
  ns["metadata"]["labels"] = {{"a", "b"}};
  auto put = client.request("PUT", "/api/v1/namespaces/prod", ns.dump());
  EXPECT_EQ(put.transport_error, "");
  EXPECT_EQ(put.status, 200);
  EXPECT_EQ(client.connections_opened(), 3u);
}

TEST(KubeClientIdle, PooledConnectionsOlderThanMaxIdleAreNotReused) {
  FakeApiServer server;
  server.put("api/v1", "namespaces", "", {{"metadata", {{"name", "prod"}}}});
  KubeConfig c = server.client_config(2000ms);
  c.max_idle = 100ms;
  KubeClient client(c);
  ASSERT_TRUE(std::holds_alternative<Json>(client.get_json("/api/v1/namespaces/prod")));
  ASSERT_TRUE(std::holds_alternative<Json>(client.get_json("/api/v1/namespaces/prod")));
  EXPECT_EQ(client.connections_opened(), 1u);  // reused while fresh
  const auto idle_from = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - idle_from < 150ms) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(std::holds_alternative<Json>(client.get_json("/api/v1/namespaces/prod")));
  EXPECT_EQ(client.connections_opened(), 2u);
  EXPECT_EQ(server.connections_seen(), 2u);
}

TEST_F(KubeApiTest, DefaultMaxIdleIsWellUnderTheApiserversNinetySeconds) {
  EXPECT_EQ(KubeConfig{}.max_idle, 30s);
}

TEST(KubePathEscape, EscapesReservedCharacters) {
  EXPECT_EQ(kube_path_escape("status.phase!=Succeeded,app in (a,b)"),
            "status.phase%21%3DSucceeded%2Capp%20in%20%28a%2Cb%29");
  EXPECT_EQ(kube_path_escape("plain-name_1.~"), "plain-name_1.~");
}

TEST(KubeClientConfig, InvalidServerAddress) {
  KubeConfig c;
  c.server = "http://127.0.0.1:8080";
  KubeClient client(c);
  EXPECT_NE(client.request("GET", "/api").transport_error.find("only https"), std::string::npos);
}

// --- in-cluster config ------------------------------------------------------------------

class EnvGuard {
 public:
  explicit EnvGuard(const char* name) : name_(name) {
    if (const char* value = getenv(name)) old_ = value;
  }
  ~EnvGuard() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST_F(KubeApiTest, InClusterConfigTalksToTheServer) {
  EnvGuard host("KUBERNETES_SERVICE_HOST"), port("KUBERNETES_SERVICE_PORT");
  TempDir sa;
  write_file(sa.path() / "token", server.token() + "\n");
  write_file(sa.path() / "ca.crt", server.ca_pem());
  setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", std::to_string(server.port()).c_str(), 1);
  auto loaded = in_cluster_config(sa.path());
  ASSERT_TRUE(std::holds_alternative<KubeConfig>(loaded)) << std::get<std::string>(loaded);
  const auto& c = std::get<KubeConfig>(loaded);
  EXPECT_EQ(c.server, server.url());
  EXPECT_EQ(c.token_file, (sa.path() / "token").string());
  EXPECT_EQ(c.source, "in-cluster");
  KubeClient client(c);
  EXPECT_EQ(json_of(client.get_json("/api/v1/namespaces/prod"))["metadata"]["name"], "prod");
}

TEST(InClusterConfig, MissingPiecesAreNamed) {
  EnvGuard host("KUBERNETES_SERVICE_HOST"), port("KUBERNETES_SERVICE_PORT");
  TempDir sa;
  setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  write_file(sa.path() / "ca.crt", "-----BEGIN CERTIFICATE-----\n");
  auto loaded = in_cluster_config(sa.path());
  ASSERT_TRUE(std::holds_alternative<std::string>(loaded));
  const auto& error = std::get<std::string>(loaded);
  EXPECT_NE(error.find("cannot read service account token " + (sa.path() / "token").string()), std::string::npos)
      << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
  EXPECT_EQ(error.find("KUBERNETES_SERVICE_HOST"), std::string::npos) << error;

  unsetenv("KUBERNETES_SERVICE_HOST");
  write_file(sa.path() / "token", "abc");
  auto no_env = in_cluster_config(sa.path());
  ASSERT_TRUE(std::holds_alternative<std::string>(no_env));
  EXPECT_NE(std::get<std::string>(no_env).find("KUBERNETES_SERVICE_HOST is not set"), std::string::npos)
      << std::get<std::string>(no_env);
  EXPECT_EQ(std::get<std::string>(no_env).find("token"), std::string::npos) << std::get<std::string>(no_env);
}

// --- kubeconfig -------------------------------------------------------------------------

class KubeconfigTest : public KubeApiTest {
 protected:
  std::filesystem::path write_kubeconfig(const std::string& text) {
    auto path = dir.path() / "config";
    write_file(path, text);
    return path;
  }
  std::string cluster_with_ca_data() const {
    return "  - name: fake\n    cluster:\n      server: " + server.url() +
           "\n      certificate-authority-data: " + base64(server.ca_pem()) + "\n";
  }
  TempDir dir;
};

TEST_F(KubeconfigTest, TokenUserWithCertificateAuthorityData) {
  auto path = write_kubeconfig(
      "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
      "clusters:\n" + cluster_with_ca_data() +
      "contexts:\n  - name: dev\n    context: {cluster: fake, user: robot, namespace: prod}\n"
      "  - name: other\n    context: {cluster: fake, user: nobody}\n"
      "users:\n  - name: robot\n    user:\n      token: " + server.token() + "\n"
      "  - name: nobody\n    user: {token: wrong}\n");
  auto loaded = kubeconfig_config(path);
  ASSERT_TRUE(std::holds_alternative<KubeConfig>(loaded)) << std::get<std::string>(loaded);
  const auto& c = std::get<KubeConfig>(loaded);
  EXPECT_EQ(c.server, server.url());
  EXPECT_EQ(c.ca_pem, server.ca_pem());
  EXPECT_EQ(c.token, server.token());
  EXPECT_EQ(c.source, "kubeconfig " + path.string() + " (context dev)");
  KubeClient client(c);
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");

  auto other = kubeconfig_config(path, "other");
  ASSERT_TRUE(std::holds_alternative<KubeConfig>(other)) << std::get<std::string>(other);
  EXPECT_EQ(std::get<KubeConfig>(other).token, "wrong");
}

TEST_F(KubeconfigTest, ClientCertificateDataUser) {
  TempDir certs_dir;
  auto certs = make_dev_certificates(certs_dir.path());
  const auto cert = test::read_file(certs.server_cert), key = test::read_file(certs.server_key);
  auto path = write_kubeconfig(
      "apiVersion: v1\nkind: Config\ncurrent-context: admin\n"
      "clusters:\n" + cluster_with_ca_data() +
      "contexts:\n  - name: admin\n    context: {cluster: fake, user: admin}\n"
      "users:\n  - name: admin\n    user:\n      client-certificate-data: " + base64(cert) +
      "\n      client-key-data: " + base64(key) + "\n");
  auto loaded = kubeconfig_config(path);
  ASSERT_TRUE(std::holds_alternative<KubeConfig>(loaded)) << std::get<std::string>(loaded);
  const auto& c = std::get<KubeConfig>(loaded);
  EXPECT_EQ(c.client_cert_pem, cert);
  EXPECT_EQ(c.client_key_pem, key);
  EXPECT_TRUE(c.token.empty());
  // The fake only accepts tokens: the TLS connection (with the client certificate loaded)
  // works and the request is answered 401.
  KubeClient client(c);
  auto response = client.request("GET", "/api/v1/namespaces/prod");
  EXPECT_EQ(response.transport_error, "");
  EXPECT_EQ(response.status, 401);

  // A key that does not belong to the certificate is reported, not sent.
  TempDir other_dir;
  auto other = make_dev_certificates(other_dir.path());
  KubeConfig mismatched = c;
  mismatched.client_key_pem = test::read_file(other.server_key);
  KubeClient bad(mismatched);
  EXPECT_NE(bad.request("GET", "/api").transport_error.find("does not match"), std::string::npos);
}

TEST_F(KubeconfigTest, RelativeCertificateAuthorityAndTokenFile) {
  std::filesystem::create_directories(dir.path() / "pki");
  write_file(dir.path() / "pki" / "ca.crt", server.ca_pem());
  write_file(dir.path() / "token", server.token() + "\n");
  auto path = write_kubeconfig(
      "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
      "clusters:\n  - name: fake\n    cluster:\n      server: " + server.url() +
      "\n      certificate-authority: pki/ca.crt\n"
      "contexts:\n  - name: dev\n    context: {cluster: fake, user: robot}\n"
      "users:\n  - name: robot\n    user:\n      tokenFile: token\n");
  auto loaded = kubeconfig_config(path);
  ASSERT_TRUE(std::holds_alternative<KubeConfig>(loaded)) << std::get<std::string>(loaded);
  const auto& c = std::get<KubeConfig>(loaded);
  EXPECT_EQ(c.ca_pem, server.ca_pem());
  EXPECT_EQ(c.token_file, (dir.path() / "token").string());
  KubeClient client(c);
  EXPECT_EQ(error_of(client.get_json("/api/v1/namespaces/prod")), "");

  // A missing relative file names the resolved path.
  std::filesystem::remove(dir.path() / "pki" / "ca.crt");
  auto missing = kubeconfig_config(path);
  ASSERT_TRUE(std::holds_alternative<std::string>(missing));
  EXPECT_NE(std::get<std::string>(missing).find((dir.path() / "pki" / "ca.crt").string()), std::string::npos)
      << std::get<std::string>(missing);
}

TEST_F(KubeconfigTest, UnknownContextIsAnError) {
  auto path = write_kubeconfig("apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n" + cluster_with_ca_data() +
                               "contexts:\n  - name: dev\n    context: {cluster: fake, user: robot}\n"
                               "users:\n  - name: robot\n    user: {token: t}\n");
  auto loaded = kubeconfig_config(path, "staging");
  ASSERT_TRUE(std::holds_alternative<std::string>(loaded));
  EXPECT_EQ(std::get<std::string>(loaded), "kubeconfig " + path.string() + ": context \"staging\" not found");

  auto missing_file = kubeconfig_config(dir.path() / "nope");
  ASSERT_TRUE(std::holds_alternative<std::string>(missing_file));
  EXPECT_NE(std::get<std::string>(missing_file).find("cannot read file"), std::string::npos);
}

TEST_F(KubeconfigTest, ExecPluginIsNotSupported) {
  auto path = write_kubeconfig(
      "apiVersion: v1\nkind: Config\ncurrent-context: eks\nclusters:\n" + cluster_with_ca_data() +
      "contexts:\n  - name: eks\n    context: {cluster: fake, user: aws}\n"
      "users:\n  - name: aws\n    user:\n      exec:\n        apiVersion: client.authentication.k8s.io/v1beta1\n"
      "        command: aws\n        args: [eks, get-token]\n");
  auto loaded = kubeconfig_config(path);
  ASSERT_TRUE(std::holds_alternative<std::string>(loaded));
  const auto& error = std::get<std::string>(loaded);
  EXPECT_NE(error.find("exec credential plugins are not supported"), std::string::npos) << error;
  EXPECT_NE(error.find("\"aws\""), std::string::npos) << error;
}

// --- ApiClusterState --------------------------------------------------------------------

class ApiClusterStateTest : public KubeApiTest {
 protected:
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();
  KubeClient client{config()};
  ApiClusterState state{client, 10s, 0ms, [this] { return now; }};
};

TEST_F(ApiClusterStateTest, NamespaceLabelsAreCachedForTheTtl) {
  auto first = state.namespace_labels("prod");
  ASSERT_TRUE(std::holds_alternative<Json>(first)) << std::get<ClusterStateError>(first).message;
  EXPECT_EQ(std::get<Json>(first), (Json{{"team", "ml"}, {"sizeguard.io/enforce", "true"}}));
  EXPECT_EQ(server.request_count(), 1u);

  now += 9s;
  auto second = state.namespace_labels("prod");
  ASSERT_TRUE(std::holds_alternative<Json>(second));
  EXPECT_EQ(std::get<Json>(second), std::get<Json>(first));
  EXPECT_EQ(server.request_count(), 1u);  // served from the cache

  now += 2s;
  EXPECT_TRUE(std::holds_alternative<Json>(state.namespace_labels("prod")));
  EXPECT_EQ(server.request_count(), 2u);  // expired: fetched again

  auto bare = state.namespace_labels("bare");
  ASSERT_TRUE(std::holds_alternative<Json>(bare));
  EXPECT_EQ(std::get<Json>(bare), Json::object());
}

TEST_F(ApiClusterStateTest, ErrorsAreNotCached) {
  server.fail_next(500, 1, "etcd unavailable");
  auto failed = state.namespace_labels("prod");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(failed));
  EXPECT_EQ(std::get<ClusterStateError>(failed).message,
            "GET /api/v1/namespaces/prod: 500 Internal Server Error: etcd unavailable");
  EXPECT_TRUE(std::holds_alternative<Json>(state.namespace_labels("prod")));
  EXPECT_EQ(server.request_count(), 2u);

  auto missing = state.namespace_labels("ghost");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(missing));
  EXPECT_NE(std::get<ClusterStateError>(missing).message.find("404 Not Found: namespaces \"ghost\" not found"),
            std::string::npos);
  state.namespace_labels("ghost");
  EXPECT_EQ(server.request_count(), 4u);
}

TEST_F(ApiClusterStateTest, GetObjectMapsGroupsAndCaches) {
  auto deploy = state.get_object("apps", "v1", "deployments", "prod", "web");
  ASSERT_TRUE(std::holds_alternative<Json>(deploy)) << std::get<ClusterStateError>(deploy).message;
  EXPECT_EQ(std::get<Json>(deploy)["spec"]["replicas"], 3);
  server.put("api/v1", "configmaps", "prod", {{"metadata", {{"name", "limits"}}}, {"data", {{"x", "y"}}}});
  auto cm = state.get_object("", "v1", "configmaps", "prod", "limits");
  ASSERT_TRUE(std::holds_alternative<Json>(cm)) << std::get<ClusterStateError>(cm).message;
  EXPECT_EQ(std::get<Json>(cm)["data"]["x"], "y");
  EXPECT_TRUE(std::holds_alternative<Json>(state.get_object("apps", "v1", "deployments", "prod", "web")));
  auto log = server.requests();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0], "GET /apis/apps/v1/namespaces/prod/deployments/web");
  EXPECT_EQ(log[1], "GET /api/v1/namespaces/prod/configmaps/limits");
}

TEST_F(ApiClusterStateTest, ActivePodsExcludeTerminatedAndAreAlwaysFresh) {
  server.put("api/v1", "pods", "prod", pod("running", "Running"));
  server.put("api/v1", "pods", "prod", pod("pending", ""));
  server.put("api/v1", "pods", "prod", pod("done", "Succeeded"));
  server.put("api/v1", "pods", "prod", pod("crashed", "Failed"));
  server.put("api/v1", "pods", "other", pod("elsewhere", "Running"));
  auto pods = state.active_pods("prod");
  ASSERT_TRUE(std::holds_alternative<std::vector<Json>>(pods)) << std::get<ClusterStateError>(pods).message;
  std::vector<std::string> got;
  for (const auto& p : std::get<std::vector<Json>>(pods)) got.push_back(p["metadata"]["name"]);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"pending", "running"}));
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0],
            "GET /api/v1/namespaces/prod/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed");

  server.put("api/v1", "pods", "prod", pod("new", "Running"));
  auto again = state.active_pods("prod");
  ASSERT_TRUE(std::holds_alternative<std::vector<Json>>(again));
  EXPECT_EQ(std::get<std::vector<Json>>(again).size(), 3u);
  EXPECT_EQ(server.request_count(), 2u);
}

TEST_F(KubeApiTest, ActivePodsCachedWhenPodsTtlSet) {
  KubeClient client(config());
  auto now = std::chrono::steady_clock::now();
  ApiClusterState state(client, 10s, 2s, [&] { return now; });
  server.put("api/v1", "pods", "prod", pod("running", "Running"));
  EXPECT_TRUE(std::holds_alternative<std::vector<Json>>(state.active_pods("prod")));
  EXPECT_TRUE(std::holds_alternative<std::vector<Json>>(state.active_pods("prod")));
  EXPECT_EQ(server.request_count(), 1u);
  now += 3s;
  EXPECT_TRUE(std::holds_alternative<std::vector<Json>>(state.active_pods("prod")));
  EXPECT_EQ(server.request_count(), 2u);
}

TEST_F(ApiClusterStateTest, TransportErrorsBecomeClusterStateErrors) {
  server.set_drop_connections(true);
  auto result = state.active_pods("prod");
  ASSERT_TRUE(std::holds_alternative<ClusterStateError>(result));
  EXPECT_NE(std::get<ClusterStateError>(result).message.find("GET /api/v1/namespaces/prod/pods?"), std::string::npos);
}

}  // namespace
}  // namespace sizeguard
