// The real admission server on ephemeral loopback ports with throwaway certificates:
// every apiserver fixture over verified TLS keep-alive, bad inputs, stalled clients,
// metrics, decision logs, graceful drain in-process and SIGTERM on the real binary.
#include "webhook/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/evp.h>
#include <zlib.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include "support/child_process.h"
#include "support/temp_dir.h"
#include "support/fixtures.h"
#include "support/tls_client.h"
#include "webhook/app/handlers.h"
#include "webhook/devcerts.h"
#include "webhook/logging.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using test::ConnectStage;
using test::HttpResponse;

// Generous limits: they only keep a broken server from hanging the suite.
constexpr auto kHangGuard = 30s;

std::string base64_decode(const std::string& text) {
  std::string out(text.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return {};
  size_t padding = text.size() >= 2 ? (text.end()[-1] == '=') + (text.end()[-2] == '=') : 0;
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

// Checks the shape every answer to a valid review must have; returns the parsed answer.
Json expect_review_answer(const std::string& request_body, const HttpResponse& response, const std::string& what) {
  EXPECT_EQ(response.status, 200) << what << ": " << response.body;
  Json request = Json::parse(request_body);
  Json answer = Json::parse(response.body, nullptr, false);
  EXPECT_FALSE(answer.is_discarded()) << what << ": answer is not JSON: " << response.body;
  if (answer.is_discarded()) return answer;
  EXPECT_EQ(answer.value("apiVersion", ""), request["apiVersion"].get<std::string>()) << what;
  EXPECT_EQ(answer.value("kind", ""), "AdmissionReview") << what;
  EXPECT_TRUE(answer.contains("response")) << what;
  const Json& r = answer["response"];
  EXPECT_EQ(r.value("uid", ""), request["request"]["uid"].get<std::string>()) << what;
  EXPECT_TRUE(r.contains("allowed") && r["allowed"].is_boolean()) << what;
  if (r.contains("patch")) {
    EXPECT_EQ(r.value("patchType", ""), "JSONPatch") << what;
    Json patch = Json::parse(base64_decode(r["patch"].get<std::string>()), nullptr, false);
    EXPECT_TRUE(patch.is_array() && !patch.empty()) << what << ": patch is not a non-empty JSON array";
  } else {
    EXPECT_FALSE(r.contains("patchType")) << what << ": patchType without a patch";
  }
  return answer;
}

std::string webhook_for(const std::filesystem::path& fixture) {
  return fixture.filename().string().rfind("validate-", 0) == 0 ? "/validate" : "/mutate";
}

std::string uid_of(const std::string& body) { return Json::parse(body)["request"]["uid"].get<std::string>(); }

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("sizeguard-server-test") {}
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { certs_ = make_dev_certificates(dir_.path / "certs"); }

  // Real handlers unless given; JSON logs into log_.
  void start(AdmissionHandlers handlers = {}, std::function<void(AdmissionServer&)> before_start = {}) {
    if (!handlers.mutate) handlers.mutate = [this](const AdmissionRequest& r) { return mutate(r, context_); };
    if (!handlers.validate) handlers.validate = [this](const AdmissionRequest& r) { return validate(r, context_); };
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.tls_cert = certs_.server_cert.string();
    options.tls_key = certs_.server_key.string();
    options.read_timeout = 2s;  // how long a stalled client may hold a worker
    options.idle_timeout = 10s;
    options.workers = 8;
    auto logger = make_logger("test", LogFormat::Json, std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    server_ = std::make_unique<AdmissionServer>(options, std::move(handlers), metrics_, readiness_, logger);
    if (before_start) before_start(*server_);
    server_->start();
  }

  test::TlsConnectResult connect() {
    return test::connect_tls(server_->webhook_port(), certs_.ca_cert.string(), kHangGuard);
  }

  // One request on a fresh verified connection.
  std::optional<HttpResponse> exchange(const std::string& raw_request) {
    auto result = connect();
    EXPECT_EQ(result.stage, ConnectStage::Connected) << result.error;
    if (!result.connection || !result.connection->send(raw_request)) return std::nullopt;
    return result.connection->read_response();
  }

  httplib::Result metrics_get(const std::string& path) {
    httplib::Client client("127.0.0.1", server_->metrics_port());
    client.set_read_timeout(kHangGuard);
    return client.Get(path.c_str());
  }

  std::string log_text() {
    std::lock_guard lock(log_mutex_);
    return log_.str();
  }

  TempDir dir_;
  DevCertificates certs_;
  AdmissionContext context_;
  Metrics metrics_;
  Readiness readiness_;
  std::mutex log_mutex_;
  std::ostringstream log_;
  std::unique_ptr<AdmissionServer> server_;
};

TEST_F(ServerTest, DevCertificatesAreWrittenWithAPrivateKey) {
  for (const auto& file : {certs_.ca_cert, certs_.server_cert, certs_.server_key}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(file)) << file;
  }
  struct stat info {};
  ASSERT_EQ(::stat(certs_.server_key.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_THAT(test::read_file(certs_.ca_cert), HasSubstr("BEGIN CERTIFICATE"));
  EXPECT_THROW(TlsContext("/nonexistent/tls.crt", certs_.server_key.string()), std::runtime_error);
  EXPECT_THROW(TlsContext(certs_.ca_cert.string(), certs_.server_key.string()), std::runtime_error);  // key mismatch
}

TEST_F(ServerTest, EveryApiserverFixtureOverOneVerifiedKeepAliveConnection) {
  start();
  auto fixtures = test::apiserver_fixtures();
  ASSERT_GE(fixtures.size(), 10u) << "fixtures missing under " << test::apiserver_fixture_dir();
  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  auto& connection = *result.connection;
  EXPECT_THAT(connection.negotiated_protocol(), ::testing::AnyOf("TLSv1.2", "TLSv1.3"));
  for (const auto& fixture : fixtures) {
    std::string body = test::read_file(fixture);
    for (std::string path : {webhook_for(fixture), std::string("/validate")}) {
      std::string what = fixture.filename().string() + " -> " + path;
      ASSERT_TRUE(connection.send(test::apiserver_request(path + "?timeout=10s", body, server_->webhook_port())));
      auto response = connection.read_response();
      ASSERT_TRUE(response) << what << ": " << connection.last_error();
      EXPECT_EQ(response->headers.count("content-encoding"), 0u) << what << ": answers are plain";
      EXPECT_THAT(response->headers["content-type"], HasSubstr("application/json")) << what;
      expect_review_answer(body, *response, what);
    }
  }
  // All of it went over the one connection.
  EXPECT_THAT(metrics_.render(), HasSubstr("sizeguard_http_connections_total{listener=\"webhook\"} 1\n"));
}

TEST_F(ServerTest, HttplibClientWithCaVerificationAndGzip) {
  start();
  httplib::SSLClient client("127.0.0.1", server_->webhook_port());
  client.set_ca_cert_path(certs_.ca_cert.c_str());
  client.enable_server_certificate_verification(true);
  client.set_keep_alive(true);
  client.set_read_timeout(kHangGuard);
  std::string body = test::load_apiserver_fixture("pod-create-from-replicaset.json");
  httplib::Headers headers{{"Accept-Encoding", "gzip"}, {"User-Agent", "kube-apiserver-admission"}};
  for (int i = 0; i < 3; ++i) {
    auto result = client.Post("/mutate?timeout=10s", headers, body, "application/json");
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    expect_review_answer(body, HttpResponse{result->status, {}, result->body}, "httplib client");
  }
  // A client that does not trust our CA must fail the handshake.
  httplib::SSLClient untrusting("127.0.0.1", server_->webhook_port());
  untrusting.set_ca_cert_path(certs_.server_cert.c_str());
  untrusting.enable_server_certificate_verification(true);
  EXPECT_FALSE(untrusting.Post("/mutate", body, "application/json"));
}

TEST_F(ServerTest, AnswersCarryPatchWarningsAndDenialStatus) {
  AdmissionHandlers handlers;
  handlers.mutate = [](const AdmissionRequest& request) {
    AdmissionResponse response;
    response.uid = "a-different-uid";  // the server must echo the request's uid anyway
    response.patch = Json::array({{{"op", "add"}, {"path", "/metadata/annotations"}, {"value", {{"a", "b"}}}}});
    response.warnings = {"requests raised"};
    (void)request;
    return response;
  };
  handlers.validate = [](const AdmissionRequest& request) {
    AdmissionResponse response;
    response.uid = request.uid;
    response.allowed = false;
    response.status = Status{403, "Forbidden", "replicas below minimum", {{"ReplicasBelowMin", "too few", "spec.replicas"}}};
    return response;
  };
  start(handlers);
  std::string body = test::load_apiserver_fixture("deployment-create.json");
  auto patched = exchange(test::apiserver_request("/mutate", body, server_->webhook_port()));
  ASSERT_TRUE(patched);
  Json answer = expect_review_answer(body, *patched, "patched");
  EXPECT_EQ(answer["response"].value("patchType", ""), "JSONPatch");
  EXPECT_EQ(Json::parse(base64_decode(answer["response"]["patch"].get<std::string>()))[0]["path"],
            "/metadata/annotations");
  EXPECT_EQ(answer["response"]["warnings"], Json::array({"requests raised"}));

  auto denied = exchange(test::apiserver_request("/validate", body, server_->webhook_port()));
  ASSERT_TRUE(denied);
  answer = expect_review_answer(body, *denied, "denied");
  EXPECT_EQ(answer["response"]["allowed"], false);
  EXPECT_EQ(answer["response"]["status"]["code"], 403);
  EXPECT_EQ(answer["response"]["status"]["message"], "replicas below minimum");

  std::string metrics = metrics_.render();
  EXPECT_THAT(metrics, HasSubstr("sizeguard_admission_requests_total{webhook=\"mutate\",operation=\"CREATE\","
                                 "kind=\"Deployment\",decision=\"patched\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("sizeguard_admission_requests_total{webhook=\"validate\",operation=\"CREATE\","
                                 "kind=\"Deployment\",decision=\"denied\"} 1\n"));
}

TEST_F(ServerTest, ReloadedCertificateServesNewConnectionsWhileOpenOnesContinue) {
  start();
  int port = server_->webhook_port();
  std::string body = test::load_apiserver_fixture("pod-create-kubectl-run.json");
  auto old_connection = connect();
  ASSERT_EQ(old_connection.stage, ConnectStage::Connected) << old_connection.error;

  // A different CA and cert replace the files in place, then reload() picks them up.
  DevCertificates rotated = make_dev_certificates(dir_.path / "rotated");
  std::filesystem::copy_file(rotated.server_cert, certs_.server_cert, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(rotated.server_key, certs_.server_key, std::filesystem::copy_options::overwrite_existing);
  server_->reload_tls();

  ASSERT_TRUE(old_connection.connection->send(test::apiserver_request("/mutate", body, port)));
  auto answer = old_connection.connection->read_response();
  ASSERT_TRUE(answer) << old_connection.connection->last_error();
  expect_review_answer(body, *answer, "open connection after reload");

  EXPECT_EQ(test::connect_tls(port, certs_.ca_cert.string(), kHangGuard).stage, ConnectStage::HandshakeFailed);
  auto fresh = test::connect_tls(port, rotated.ca_cert.string(), kHangGuard);
  ASSERT_EQ(fresh.stage, ConnectStage::Connected) << fresh.error;
  ASSERT_TRUE(fresh.connection->send(test::apiserver_request("/mutate", body, port)));
  answer = fresh.connection->read_response();
  ASSERT_TRUE(answer) << fresh.connection->last_error();
  expect_review_answer(body, *answer, "new connection after reload");

  // A broken file is refused and the current certificate keeps serving.
  std::ofstream(certs_.server_cert) << "not a certificate";
  EXPECT_THROW(server_->tls().reload(), std::runtime_error);
  EXPECT_EQ(test::connect_tls(port, rotated.ca_cert.string(), kHangGuard).stage, ConnectStage::Connected);
}

// Sends `raw` on its own connection and returns the answer's status and Status message.
std::pair<int, std::string> status_and_message(const std::optional<HttpResponse>& response) {
  if (!response) return {0, "no response"};
  Json status = Json::parse(response->body, nullptr, false);
  std::string message = status.is_object() ? status.value("message", "") : response->body;
  if (status.is_object()) {
    EXPECT_EQ(status.value("kind", ""), "Status");
    EXPECT_EQ(status.value("code", 0), response->status);
  }
  return {response->status, message};
}

std::string gzip(const std::string& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);  // 15+16: gzip wrapper
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

TEST_F(ServerTest, CompressedBodiesAreAcceptedAndLimitedAfterInflating) {
  start();
  int port = server_->webhook_port();
  std::string body = test::load_apiserver_fixture("deployment-create.json");
  auto with_encoding = [&](const std::string& payload) {
    std::string raw = test::apiserver_request("/mutate", payload, port);
    return raw.insert(raw.find("\r\n") + 2, "Content-Encoding: gzip\r\n");
  };
  auto small = exchange(with_encoding(gzip(body)));
  ASSERT_TRUE(small);
  expect_review_answer(body, *small, "gzip request body");

  std::string bomb = gzip(std::string(16 << 20, ' '));  // 16 MiB inflated, ~16 KiB on the wire
  ASSERT_LT(bomb.size(), 1u << 20);
  auto refused = exchange(with_encoding(bomb));
  auto [status, message] = status_and_message(refused);
  EXPECT_EQ(status, 413) << message;
  ASSERT_TRUE(exchange(test::apiserver_request("/mutate", body, port)));
}

TEST_F(ServerTest, BadInputsGetSpecificErrorsAndConnectionsStayUsableExceptAfterOversize) {
  AdmissionHandlers handlers;
  handlers.validate = [](const AdmissionRequest&) -> AdmissionResponse { throw std::runtime_error("policy exploded"); };
  start(handlers);
  int port = server_->webhook_port();
  std::string good = test::load_apiserver_fixture("pod-create-from-replicaset.json");
  Json no_uid = Json::parse(good);
  no_uid["request"].erase("uid");
  Json wrong_kind = Json::parse(good);
  wrong_kind["kind"] = "Pod";

  struct Case {
    std::string name, raw;
    int status;
    std::string message;
  };
  std::vector<Case> cases = {
      {"truncated JSON", test::apiserver_request("/mutate", good.substr(0, good.size() / 2), port), 400,
       "invalid AdmissionReview"},
      {"not JSON", test::apiserver_request("/mutate", "hello", port), 400, "invalid AdmissionReview"},
      {"wrong kind", test::apiserver_request("/mutate", wrong_kind.dump(), port), 400, "invalid AdmissionReview"},
      {"no uid", test::apiserver_request("/mutate?timeout=10s", no_uid.dump(), port), 400, "uid"},
      {"GET on /mutate", "GET /mutate HTTP/1.1\r\nHost: x\r\n\r\n", 405, "POST only"},
      {"unknown path", test::apiserver_request("/admit", good, port), 404, "/admit"},
      {"handler throws", test::apiserver_request("/validate", good, port), 500, "policy exploded"},
      {"POST without length", "POST /mutate HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"},
      {"4 MiB body", test::apiserver_request("/mutate", std::string(4 << 20, ' '), port), 413, "3145728 bytes"},
  };
  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  auto connection_holder = std::move(result.connection);
  for (const auto& c : cases) {
    auto& connection = *connection_holder;
    ASSERT_TRUE(connection.send(c.raw)) << c.name;
    auto response = connection.read_response();
    ASSERT_TRUE(response) << c.name << ": " << connection.last_error();
    auto [status, message] = status_and_message(response);
    EXPECT_EQ(status, c.status) << c.name << ": " << message;
    EXPECT_THAT(message, HasSubstr(c.message)) << c.name;
    if (c.status == 405) {
      EXPECT_EQ(response->headers["allow"], "POST");
    }
    if (c.status == 413) {
      // Staying in step would mean decrypting the whole oversize body: the connection ends
      // after the answer instead (the apiserver never sends more than 3 MiB).
      EXPECT_EQ(response->headers["connection"], "close") << c.name;
      auto fresh = connect();
      ASSERT_EQ(fresh.stage, ConnectStage::Connected) << fresh.error;
      connection_holder = std::move(fresh.connection);
    }
    // The connection (a fresh one after a 413) serves a good review afterwards.
    auto& next = *connection_holder;
    ASSERT_TRUE(next.send(test::apiserver_request("/mutate", good, port))) << c.name;
    auto after = next.read_response();
    ASSERT_TRUE(after) << "after " << c.name << ": " << next.last_error();
    expect_review_answer(good, *after, "after " + c.name);
  }
  std::string metrics = metrics_.render();
  EXPECT_THAT(metrics, HasSubstr("sizeguard_http_errors_total{listener=\"webhook\",path=\"/mutate\",code=\"400\"} 4\n"));
  EXPECT_THAT(metrics, HasSubstr("sizeguard_http_errors_total{listener=\"webhook\",path=\"/mutate\",code=\"413\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("sizeguard_http_errors_total{listener=\"webhook\",path=\"other\",code=\"404\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("decision=\"error\"} 1\n"));
}

TEST_F(ServerTest, StalledClientsAreTimedOutWhileGoodRequestsSucceed) {
  start();
  int port = server_->webhook_port();
  std::string good = test::load_apiserver_fixture("pod-create-kubectl-run.json");

  // 1) TCP connected, never starts TLS.
  int raw_tcp = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(raw_tcp, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  // 2) headers sent, then silence; 3) headers and part of the body, then silence.
  auto headers_only = connect();
  auto partial_body = connect();
  ASSERT_EQ(headers_only.stage, ConnectStage::Connected);
  ASSERT_EQ(partial_body.stage, ConnectStage::Connected);
  std::string request = test::apiserver_request("/mutate", good, port);
  ASSERT_TRUE(headers_only.connection->send(request.substr(0, request.find("\r\n\r\n") + 4)));
  ASSERT_TRUE(partial_body.connection->send(request.substr(0, request.size() - 100)));

  std::atomic<int> good_answers{0}, failures{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      auto result = connect();
      if (result.stage != ConnectStage::Connected) {
        ++failures;
        return;
      }
      for (int i = 0; i < 25; ++i) {
        auto response = result.connection->send(request) ? result.connection->read_response() : std::nullopt;
        if (response && response->status == 200 && response->body.find(uid_of(good)) != std::string::npos) {
          ++good_answers;
        } else {
          ++failures;
        }
      }
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(good_answers.load(), 100);
  EXPECT_EQ(failures.load(), 0);

  // The stalled ones are cut off by the server (an error answer at most), not left open.
  for (auto* stalled : {&headers_only, &partial_body}) {
    auto response = stalled->connection->read_response();
    if (response) {
      EXPECT_GE(response->status, 400);
    }
    EXPECT_TRUE(stalled->connection->wait_closed());
  }
  char byte;
  timeval guard{30, 0};
  ::setsockopt(raw_tcp, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
  EXPECT_LE(::recv(raw_tcp, &byte, 1, 0), 0) << "the server should close a connection that never handshakes";
  ::close(raw_tcp);
  EXPECT_THAT(metrics_.render(), HasSubstr("sizeguard_tls_handshake_failures_total 1\n"));
}

TEST_F(ServerTest, MetricsHealthAndReadinessEndpoints) {
  bool ready_before_start = true;
  start({}, [&](AdmissionServer& server) {
    ready_before_start = readiness_.report().ready;
    server.add_get_route("/recommendations", [](const std::multimap<std::string, std::string>& query) {
      auto ns = query.find("namespace");
      return HttpAnswer{200, "application/json", Json{{"namespace", ns == query.end() ? "" : ns->second}}.dump()};
    });
  });
  EXPECT_FALSE(ready_before_start);
  EXPECT_THROW(server_->add_get_route("/late", {}), std::logic_error);

  std::string body = test::load_apiserver_fixture("pod-create-from-replicaset.json");
  ASSERT_TRUE(exchange(test::apiserver_request("/mutate", body, server_->webhook_port())));
  ASSERT_TRUE(exchange(test::apiserver_request("/mutate", "{", server_->webhook_port())));

  auto healthz = metrics_get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
  auto readyz = metrics_get("/readyz");
  ASSERT_TRUE(readyz);
  EXPECT_EQ(readyz->status, 200);
  EXPECT_THAT(readyz->body, HasSubstr("webhook-listener: ok"));
  auto extra = metrics_get("/recommendations?namespace=team-a");
  ASSERT_TRUE(extra);
  EXPECT_EQ(Json::parse(extra->body)["namespace"], "team-a");
  EXPECT_EQ(metrics_get("/nope")->status, 404);

  auto metrics = metrics_get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  const std::string& text = metrics->body;
  EXPECT_THAT(text, HasSubstr("sizeguard_build_info{version=\"" SIZEGUARD_VERSION "\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_requests_total{webhook=\"mutate\",operation=\"CREATE\",kind=\"Pod\","));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_count{webhook=\"mutate\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_admission_duration_seconds_bucket{webhook=\"mutate\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sizeguard_http_errors_total{listener=\"webhook\",path=\"/mutate\",code=\"400\"} 1\n"));
  // The dev certificate is valid for 30 days: its expiry lies ahead.
  auto expiry = text.find("\nsizeguard_tls_cert_expiry_timestamp_seconds ");
  ASSERT_NE(expiry, std::string::npos) << text;
  double not_after = std::stod(text.substr(expiry + 45));
  EXPECT_GT(not_after, static_cast<double>(std::time(nullptr)) + 86400);
  if (std::filesystem::exists("/usr/bin/promtool")) {
    auto file = dir_.path / "metrics.txt";
    std::ofstream(file) << text;
    std::string command = "/usr/bin/promtool check metrics < '" + file.string() + "' > /dev/null 2>&1";
    EXPECT_EQ(std::system(command.c_str()), 0) << text;
  }

  ASSERT_TRUE(server_->shutdown());
  EXPECT_FALSE(readiness_.report().ready);
  EXPECT_THAT(readiness_.report().text, HasSubstr("shutting down"));
}

TEST_F(ServerTest, OneJsonLogLinePerDecision) {
  start();
  std::string body = test::load_apiserver_fixture("pod-create-from-replicaset.json");
  ASSERT_TRUE(exchange(test::apiserver_request("/mutate", body, server_->webhook_port())));
  ASSERT_TRUE(exchange(test::apiserver_request("/validate", "[]", server_->webhook_port())));
  server_->shutdown();
  Json request = Json::parse(body)["request"];
  int decisions = 0, rejected = 0;
  std::istringstream lines(log_text());
  for (std::string line; std::getline(lines, line);) {
    Json entry = Json::parse(line, nullptr, false);
    ASSERT_FALSE(entry.is_discarded()) << "not a JSON line: " << line;
    ASSERT_TRUE(entry.contains("time") && entry.contains("level")) << line;
    if (entry["msg"] == "admission decision") {
      ++decisions;
      EXPECT_EQ(entry["uid"], request["uid"]);
      EXPECT_EQ(entry["kind"], "Pod");
      EXPECT_EQ(entry["namespace"], request["namespace"]);
      EXPECT_EQ(entry["name"], request["object"]["metadata"].value("generateName", request.value("name", "")));
      EXPECT_EQ(entry["operation"], "CREATE");
      EXPECT_EQ(entry["username"], request["userInfo"]["username"]);
      EXPECT_TRUE(entry["decision"] == "allowed" || entry["decision"] == "patched" || entry["decision"] == "denied");
      EXPECT_TRUE(entry["latency_ms"].is_number());
    } else if (entry["msg"] == "admission request rejected") {
      ++rejected;
      EXPECT_EQ(entry["status"], 400);
      EXPECT_THAT(entry["error"].get<std::string>(), HasSubstr("invalid AdmissionReview"));
    }
  }
  EXPECT_EQ(decisions, 1);
  EXPECT_EQ(rejected, 1);
}

TEST(DecisionLogTest, TextFormatIsOneLineWithQuotedValues) {
  std::ostringstream out;
  auto logger = make_logger("t", LogFormat::Text, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  AdmissionRequest request;
  request.uid = "u-1";
  request.kind = {"apps", "v1", "Deployment"};
  request.namespace_ = "team a";
  request.name = "web";
  request.user_info.username = "system:serviceaccount:kube-system:replicaset-controller";
  AdmissionResponse response;
  response.allowed = false;
  response.status = Status{403, "Forbidden", "no", {}};
  DecisionRecord record;
  record.webhook = Webhook::Validate;
  record.request = &request;
  record.response = &response;
  record.latency = std::chrono::microseconds(1500);
  log_decision(*logger, record);
  std::string line = out.str();
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
  EXPECT_THAT(line, HasSubstr(" info admission decision webhook=validate uid=u-1 kind=Deployment namespace=\"team a\" "
                              "name=web operation=CREATE "
                              "username=system:serviceaccount:kube-system:replicaset-controller dry_run=false "
                              "decision=denied reason=Forbidden latency_ms=1.500\n"));
  EXPECT_THROW(parse_log_format("yaml"), std::invalid_argument);
}

// Hostile bytes quoted in an error (nlohmann's "last read: ..." echoes them) must not make
// a text line invalid UTF-8: log shippers drop or reject such lines.
TEST(DecisionLogTest, TextLinesStayValidUtf8ForHostileText) {
  std::ostringstream out;
  auto logger = make_logger("t", LogFormat::Text, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  DecisionRecord record;
  record.webhook = Webhook::Mutate;
  record.http_status = 400;
  record.error = "invalid AdmissionReview: last read: '\"\x80\xc0\xaf' and caf\xc3\xa9\x01";
  log_decision(*logger, record);
  const std::string line = out.str();
  EXPECT_THAT(line, HasSubstr("last read: '\\\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD' and caf\xc3\xa9 \"")) << line;
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
}

TEST(DecisionLogTest, JsonLinesStayValidForHostileText) {
  std::ostringstream out;
  auto logger = make_logger("t", LogFormat::Json, std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  std::string hostile = "quote\" backslash\\ newline\n tab\t ctl\x01 bad-utf8 \xC3\x28 \xF0\x9F\x98 ok-utf8 \xC3\xA9";
  log_event(*logger, spdlog::level::warn, hostile, {{"error", hostile}, {"\x1f\x1e", hostile}});
  logger->warn("plain spdlog call: {}", hostile);
  std::istringstream lines(out.str());
  int count = 0;
  for (std::string line; std::getline(lines, line); ++count) {
    Json entry = Json::parse(line, nullptr, false);
    ASSERT_FALSE(entry.is_discarded()) << line;
    EXPECT_THAT(entry["msg"].get<std::string>(), HasSubstr("ok-utf8 \xC3\xA9"));
    EXPECT_THAT(entry["msg"].get<std::string>(), HasSubstr("\xEF\xBF\xBD"));
  }
  EXPECT_EQ(count, 2);
}

TEST(AdmissionCoreTest, BytesInStatusAndBodyOut) {
  std::string body = test::load_apiserver_fixture("scale-update.json");
  int observed = 0;
  auto allow = [](const AdmissionRequest&) { return AdmissionResponse{}; };
  HttpAnswer ok = handle_admission(Webhook::Validate, body, allow, [&](const DecisionRecord& record) {
    ++observed;
    EXPECT_EQ(decision_label(record), "allowed");
    EXPECT_EQ(record.request->kind.kind, "Scale");
  });
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(Json::parse(ok.body)["response"]["uid"], uid_of(body));
  EXPECT_EQ(observed, 1);

  HttpAnswer bad = handle_admission(Webhook::Mutate, "{\"kind\":\"AdmissionReview\"", allow);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Json::parse(bad.body)["reason"], "BadRequest");

  auto boom = [](const AdmissionRequest&) -> AdmissionResponse { throw std::runtime_error("boom"); };
  HttpAnswer failed = handle_admission(Webhook::Mutate, body, boom, [](const DecisionRecord&) {
    throw std::runtime_error("observers cannot break answers");
  });
  EXPECT_EQ(failed.status, 500);
  EXPECT_THAT(Json::parse(failed.body)["message"].get<std::string>(), HasSubstr("boom"));
}

TEST(ListenAddressTest, ParsesAndRejects) {
  EXPECT_EQ(parse_listen_address(":8443").host, "0.0.0.0");
  EXPECT_EQ(parse_listen_address(":8443").port, 8443);
  EXPECT_EQ(parse_listen_address("127.0.0.1:0").host, "127.0.0.1");
  EXPECT_EQ(parse_listen_address("[::1]:9090").host, "::1");
  for (const char* bad : {"8443", ":", ":70000", "host:port", "[::1:9", "::1:9"}) {
    EXPECT_THROW(parse_listen_address(bad), std::invalid_argument) << bad;
  }
}

TEST_F(ServerTest, ShutdownAnswersEveryAcceptedRequest) {
  std::atomic<int> entered{0};
  AdmissionHandlers handlers;
  handlers.mutate = [&](const AdmissionRequest& request) {
    ++entered;
    // Stay in flight until shutdown() has begun (readiness turns false once draining).
    for (int i = 0; i < 30'000 && readiness_.report().ready; ++i) std::this_thread::sleep_for(1ms);
    AdmissionResponse response;
    response.uid = request.uid;
    return response;
  };
  start(handlers);
  std::string body = test::load_apiserver_fixture("deployment-update.json");
  std::vector<std::optional<HttpResponse>> answers(6);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < answers.size(); ++i) {
    clients.emplace_back([&, i] { answers[i] = exchange(test::apiserver_request("/mutate", body, server_->webhook_port())); });
  }
  for (int i = 0; i < 3000 && entered.load() < static_cast<int>(answers.size()); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(entered.load(), static_cast<int>(answers.size()));
  EXPECT_TRUE(server_->shutdown());
  for (auto& client : clients) client.join();
  for (const auto& answer : answers) {
    ASSERT_TRUE(answer);
    expect_review_answer(body, *answer, "in flight during shutdown");
    EXPECT_EQ(answer->headers.at("connection"), "close");
  }
  EXPECT_EQ(connect().stage, ConnectStage::Refused);
}

// An idle keep-alive connection is not closed the moment shutdown starts: a request its
// client sends during the grace is answered (with "Connection: close"), and the connection
// then ends; one that stays silent is closed when the grace is over.
TEST_F(ServerTest, IdleConnectionsGetAGraceAtShutdown) {
  start({});
  const std::string body = test::load_apiserver_fixture("deployment-update.json");
  auto talking = connect();
  auto silent = connect();
  ASSERT_EQ(talking.stage, ConnectStage::Connected) << talking.error;
  ASSERT_EQ(silent.stage, ConnectStage::Connected) << silent.error;
  for (auto* connection : {talking.connection.get(), silent.connection.get()}) {  // both now idle
    ASSERT_TRUE(connection->send(test::apiserver_request("/mutate", body, server_->webhook_port())));
    auto answer = connection->read_response();
    ASSERT_TRUE(answer);
    EXPECT_NE(answer->headers.count("connection") ? answer->headers.at("connection") : "", "close");
  }
  std::atomic<bool> drained{false};
  std::thread stopper([&] { drained = server_->shutdown(); });
  for (int i = 0; i < 3000 && readiness_.report().ready; ++i) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms);  // well inside the 1 s grace
  ASSERT_TRUE(talking.connection->send(test::apiserver_request("/mutate", body, server_->webhook_port())));
  auto late = talking.connection->read_response();
  ASSERT_TRUE(late) << "a request sent on an idle connection just after shutdown began was dropped";
  expect_review_answer(body, *late, "sent during the grace");
  EXPECT_EQ(late->headers.at("connection"), "close");
  EXPECT_TRUE(talking.connection->wait_closed());
  EXPECT_TRUE(silent.connection->wait_closed()) << "the silent connection outlived the grace";
  stopper.join();
  EXPECT_TRUE(drained);
}

// ---------------------------------------------------------------------------------------
// The real binary: SIGTERM under load.

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

TEST(ServeProcessTest, SigtermUnderLoadAnswersEveryAcceptedRequest) {
  TempDir dir;
  int port = free_port(), metrics_port = free_port();
  auto cert_dir = dir.path / "certs";
  auto log_file = dir.path / "server.log";
  std::vector<std::string> args = {SIZEGUARD_BINARY, "serve", "--dev", "--dev-cert-dir", cert_dir.string(),
                                   "--listen", "127.0.0.1:" + std::to_string(port), "--metrics-listen",
                                   "127.0.0.1:" + std::to_string(metrics_port), "--workers", "2",
                                   "--drain-timeout", "20s", "--log-format", "json"};
  test::ChildProcess child(args, log_file);
  ASSERT_TRUE(child.started());
  auto server_log = [&] { return std::filesystem::exists(log_file) ? test::read_file(log_file) : std::string(); };

  bool ready = false;
  httplib::Client probe("127.0.0.1", metrics_port);
  for (int i = 0; i < 3000 && !ready; ++i) {  // hang guard: 30 s
    auto result = probe.Get("/readyz");
    ready = result && result->status == 200;
    if (!ready) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(ready) << server_log();
  std::string ca = (cert_dir / "ca.crt").string();

  std::vector<std::string> bodies;
  for (const auto& fixture : test::apiserver_fixtures()) bodies.push_back(test::read_file(fixture));
  std::atomic<int> answered{0}, accepted{0}, broken{0}, refused{0};
  std::atomic<bool> signalled{false};
  std::mutex problems_mutex;
  std::vector<std::string> problems;
  std::vector<std::thread> clients;
  // More clients than server workers, so at SIGTERM some accepted connections are still
  // queued for a worker: they must be answered too.
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      // Fresh connections, so "accepted" is observable: the TLS handshake completed.
      for (size_t i = t;; i += 8) {
        const std::string& body = bodies[i % bodies.size()];
        auto result = test::connect_tls(port, ca, kHangGuard);
        if (result.stage != ConnectStage::Connected) {
          if (signalled) {
            ++refused;
            if (refused > 20) return;
            std::this_thread::sleep_for(5ms);
          }
          continue;
        }
        ++accepted;
        auto& connection = *result.connection;
        auto response = connection.send(test::apiserver_request("/mutate?timeout=10s", body, port))
                            ? connection.read_response()
                            : std::nullopt;
        Json answer = response ? Json::parse(response->body, nullptr, false) : Json();
        if (response && response->status == 200 && answer.is_object() &&
            answer["response"].value("uid", "") == uid_of(body)) {
          ++answered;
        } else {
          ++broken;
          std::lock_guard lock(problems_mutex);
          problems.push_back(response ? std::to_string(response->status) + " " + response->body
                                      : connection.last_error());
        }
      }
    });
  }
  for (int i = 0; i < 30'000 && answered.load() < 60; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_GE(answered.load(), 60) << server_log();
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  signalled = true;
  int exit_code = child.wait_exit();
  for (auto& client : clients) client.join();

  std::cout << "[ INFO     ] accepted=" << accepted << " answered=" << answered << " refused after SIGTERM=" << refused
            << "\n";
  EXPECT_EQ(exit_code, 0) << server_log();
  EXPECT_EQ(broken.load(), 0) << "accepted but not answered: " << ::testing::PrintToString(problems);
  EXPECT_EQ(answered.load(), accepted.load());
  EXPECT_THAT(server_log(), HasSubstr("\"msg\":\"drained\""));
}

}  // namespace
}  // namespace sizeguard
