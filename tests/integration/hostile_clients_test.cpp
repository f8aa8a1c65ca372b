// Hostile clients against the real admission server (small worker pool, loopback, throwaway
// certificates): more slow or silent connections than there are workers, huge declared
// bodies that never arrive, invalid UTF-8. Good clients opening NEW connections meanwhile
// must get correct answers. Every blocking client call has a 5 s bound, far below the
// server's read timeout, so a starved server fails the test instead of hanging it; these
// are functional bounds, not latency assertions.
#include "webhook/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include "support/fixtures.h"
#include "support/tls_client.h"
#include "webhook/app/handlers.h"
#include "webhook/devcerts.h"
#include "webhook/logging.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using test::ConnectStage;
using test::HttpResponse;

constexpr auto kClientBound = 5s;  // far below the server's read timeout below
constexpr std::size_t kWorkers = 8;
constexpr int kHostileConnections = 64;  // 8x the workers

struct TempDir {
  std::filesystem::path path = make_private_temp_directory("sizeguard-hostile-test");
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A plain TCP connection to the webhook port (no TLS), closed on destruction.
struct RawSocket {
  int fd = -1;
  explicit RawSocket(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{static_cast<time_t>(kClientBound.count()), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~RawSocket() {
    if (fd >= 0) ::close(fd);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  bool send_byte(char byte) const { return fd >= 0 && ::send(fd, &byte, 1, MSG_NOSIGNAL) == 1; }
};

// True if every byte sequence in `text` is well-formed UTF-8.
bool valid_utf8(std::string_view text) {
  try {
    (void)Json(std::string(text)).dump();  // the strict encoder throws on ill-formed UTF-8
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

class HostileClientsTest : public ::testing::Test {
 protected:
  void SetUp() override { certs_ = make_dev_certificates(dir_.path / "certs"); }

  void start(std::chrono::milliseconds read_timeout, std::size_t max_buffered_bytes = ServerOptions{}.max_buffered_bytes,
             std::size_t max_connections = ServerOptions{}.max_connections,
             const std::function<void(ServerOptions&)>& adjust = {}) {
    AdmissionHandlers handlers;
    handlers.mutate = [this](const AdmissionRequest& r) {
      if (before_mutate_) before_mutate_(r);
      return mutate(r, context_);
    };
    handlers.validate = [this](const AdmissionRequest& r) { return validate(r, context_); };
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.tls_cert = certs_.server_cert.string();
    options.tls_key = certs_.server_key.string();
    options.read_timeout = read_timeout;
    options.idle_timeout = 60s;
    options.workers = kWorkers;
    options.drain_timeout = 10s;
    options.max_buffered_bytes = max_buffered_bytes;
    options.max_connections = max_connections;
    if (adjust) adjust(options);
    auto logger = make_logger("test", LogFormat::Json, std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    server_ = std::make_unique<AdmissionServer>(options, std::move(handlers), metrics_, readiness_, logger);
    server_->start();
    port_ = server_->webhook_port();
  }

  test::TlsConnectResult connect() { return test::connect_tls(port_, certs_.ca_cert.string(), kClientBound); }

  // Opens `count` verified TLS connections in parallel (a starved server would otherwise
  // make a serial loop take count x kClientBound); returns the ones that connected.
  std::vector<std::unique_ptr<test::TlsConnection>> connect_many(int count) {
    std::vector<std::unique_ptr<test::TlsConnection>> connections(count);
    std::vector<std::thread> threads;
    for (int i = 0; i < count; ++i) {
      threads.emplace_back([&, i] { connections[i] = connect().connection; });
    }
    for (auto& thread : threads) thread.join();
    std::erase(connections, nullptr);
    return connections;
  }

  // A good client: every shared fixture on a NEW connection each, answered correctly
  // within kClientBound. Returns the problems seen.
  std::vector<std::string> good_client_round() {
    std::vector<std::string> problems;
    for (const auto& fixture : test::apiserver_fixtures()) {
      const std::string name = fixture.filename().string();
      const std::string body = test::read_file(fixture);
      const std::string path = name.rfind("validate-", 0) == 0 ? "/validate" : "/mutate";
      auto result = connect();
      if (result.stage != ConnectStage::Connected) {
        problems.push_back(name + ": connect: " + result.error);
        continue;
      }
      auto& connection = *result.connection;
      if (!connection.send(test::apiserver_request(path + "?timeout=10s", body, port_))) {
        problems.push_back(name + ": send: " + connection.last_error());
        continue;
      }
      auto response = connection.read_response();
      if (!response) {
        problems.push_back(name + ": no answer: " + connection.last_error());
        continue;
      }
      Json answer = Json::parse(response->body, nullptr, false);
      std::string uid = Json::parse(body)["request"]["uid"].get<std::string>();
      if (response->status != 200 || !answer.is_object() || answer["response"].value("uid", "") != uid ||
          !answer["response"].contains("allowed")) {
        problems.push_back(name + ": wrong answer " + std::to_string(response->status) + " " + response->body);
      }
    }
    return problems;
  }

  double gauge(const std::string& series) {
    std::string text = metrics_.render();
    auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
  }

  std::string log_text() {
    std::lock_guard lock(log_mutex_);
    return log_.str();
  }

  std::function<void(const AdmissionRequest&)> before_mutate_;  // runs on the serving thread
  TempDir dir_;
  DevCertificates certs_;
  AdmissionContext context_;
  Metrics metrics_;
  Readiness readiness_;
  std::mutex log_mutex_;
  std::ostringstream log_;
  std::unique_ptr<AdmissionServer> server_;
  int port_ = 0;
};

// Slowloris: half the attackers are still in the TLS handshake, half finished it and
// trickle an HTTP request; each sends one byte per 200 ms, 8x as many as there are workers.
TEST_F(HostileClientsTest, SlowlorisBeyondTheWorkerCountDoesNotStarveNewConnections) {
  start(30s);
  std::vector<std::unique_ptr<RawSocket>> in_handshake;
  for (int i = 0; i < kHostileConnections / 2; ++i) {
    in_handshake.push_back(std::make_unique<RawSocket>(port_));
    ASSERT_GE(in_handshake.back()->fd, 0);
  }
  auto in_request = connect_many(kHostileConnections / 2);
  const std::size_t tls_attackers = in_request.size();

  // A TLS record header announcing a 512-byte ClientHello, then its bytes, one at a time.
  const std::string hello = std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + std::string(501, 'a');
  const std::string slow_request = "POST /mutate HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(4096, 'a');
  std::atomic<bool> stop{false};
  std::atomic<int> trickled{0}, cut_off{0};
  std::thread trickler([&] {
    for (std::size_t step = 0; !stop; ++step) {
      for (auto& raw : in_handshake) {
        if (raw->send_byte(hello[step % hello.size()])) ++trickled;
        else ++cut_off;
      }
      for (auto& tls : in_request) {
        if (tls->send(std::string_view(&slow_request[step % slow_request.size()], 1))) ++trickled;
        else ++cut_off;
      }
      std::this_thread::sleep_for(200ms);
    }
  });
  std::this_thread::sleep_for(500ms);  // every attacker has sent something

  auto problems = good_client_round();
  std::this_thread::sleep_for(500ms);
  auto more_problems = good_client_round();  // still served while the trickle goes on
  problems.insert(problems.end(), more_problems.begin(), more_problems.end());
  const double open = gauge("sizeguard_http_open_connections{listener=\"webhook\"}");
  stop = true;
  trickler.join();

  EXPECT_EQ(tls_attackers, static_cast<std::size_t>(kHostileConnections / 2))
      << "attackers could not even complete the TLS handshake";
  EXPECT_THAT(problems, ::testing::IsEmpty());
  EXPECT_GT(trickled.load(), kHostileConnections * 2);
  EXPECT_EQ(cut_off.load(), 0) << "slow connections are held within the read timeout, not dropped early";
  EXPECT_GE(open, kHostileConnections) << "the server held every slow connection while serving";
}

// Silent connections (TCP only, and TLS done but no request) plus requests declaring a
// huge body that never arrives: none of them may keep good clients waiting.
TEST_F(HostileClientsTest, SilentConnectionsAndHugeDeclaredBodiesDoNotStarveNewConnections) {
  start(30s);
  std::vector<std::unique_ptr<RawSocket>> silent_tcp;
  for (int i = 0; i < kHostileConnections; ++i) {
    silent_tcp.push_back(std::make_unique<RawSocket>(port_));
    ASSERT_GE(silent_tcp.back()->fd, 0);
  }
  auto silent_tls = connect_many(kHostileConnections);
  auto huge_body = connect_many(kHostileConnections / 4);
  const std::string huge_headers =
      "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000000000000\r\n\r\n{\"apiVersion\":";
  for (auto& connection : huge_body) EXPECT_TRUE(connection->send(huge_headers));

  auto problems = good_client_round();
  EXPECT_EQ(silent_tls.size(), static_cast<std::size_t>(kHostileConnections));
  EXPECT_EQ(huge_body.size(), static_cast<std::size_t>(kHostileConnections / 4));
  EXPECT_THAT(problems, ::testing::IsEmpty());
  EXPECT_GE(gauge("sizeguard_http_open_connections{listener=\"webhook\"}"),
            kHostileConnections * 2 + kHostileConnections / 4);
}

// A huge declared body is refused with 413 as soon as the headers are in, without waiting
// for (or decrypting) the body; the connection then ends, at the latest when the read
// timeout passes while the client sends nothing more.
TEST_F(HostileClientsTest, HugeDeclaredBodyIsRefusedAtOnceAndTheConnectionEnds) {
  start(2s);
  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  ASSERT_TRUE(result.connection->send("POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{"));
  auto response = result.connection->read_response();  // bounded by kClientBound
  ASSERT_TRUE(response) << result.connection->last_error();
  EXPECT_EQ(response->status, 413) << response->body;
  EXPECT_EQ(response->headers["connection"], "close");
  EXPECT_TRUE(valid_utf8(response->body));
  EXPECT_TRUE(result.connection->wait_closed()) << "still open after the 2 s read timeout";
  // And the server still serves.
  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
}

// --max-connections: a listener that already holds that many closes new connections at
// accept (and counts them), and accepts again once connections have gone.
TEST_F(HostileClientsTest, ConnectionsBeyondTheLimitAreClosedAtAccept) {
  start(30s, ServerOptions{}.max_buffered_bytes, 16);
  const std::string open = "sizeguard_http_open_connections{listener=\"webhook\"}";
  const std::string rejected = "sizeguard_http_rejected_connections_total{listener=\"webhook\"}";
  {
    std::vector<std::unique_ptr<RawSocket>> silent;
    for (int i = 0; i < 16; ++i) silent.push_back(std::make_unique<RawSocket>(port_));
    for (int i = 0; i < 500 && gauge(open) < 16; ++i) std::this_thread::sleep_for(10ms);
    ASSERT_EQ(gauge(open), 16);
    RawSocket extra(port_);
    ASSERT_GE(extra.fd, 0);  // the kernel completes the TCP handshake
    char byte;
    EXPECT_EQ(::recv(extra.fd, &byte, 1, 0), 0) << "closed at accept, not left waiting";
    EXPECT_EQ(gauge(rejected), 1);
    EXPECT_EQ(gauge(open), 16);
  }
  for (int i = 0; i < 500 && gauge(open) > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
  EXPECT_EQ(gauge(rejected), 1);
}

// Past the buffer budget, connections still receiving go to workers (which read the rest
// within the read timeout) instead of growing the loop's memory; their requests are still
// answered once complete, and the remaining workers keep serving new connections.
TEST_F(HostileClientsTest, OverTheBufferBudgetReceivingMovesToWorkers) {
  start(30s, 256 * 1024);
  const std::string fixture = test::load_apiserver_fixture("deployment-create.json");
  const std::string uid = Json::parse(fixture)["request"]["uid"].get<std::string>();
  const std::string body = fixture + std::string((1 << 20) - fixture.size(), ' ');  // 1 MiB, valid JSON
  const std::string request = test::apiserver_request("/validate", body, port_);
  const std::size_t first_part = request.size() - body.size() + 200 * 1024;
  auto senders = connect_many(4);
  ASSERT_EQ(senders.size(), 4u);
  for (auto& sender : senders) ASSERT_TRUE(sender->send(std::string_view(request).substr(0, first_part)));
  const std::string busy = "sizeguard_http_busy_workers{listener=\"webhook\"}";
  for (int i = 0; i < 500 && gauge(busy) < 3; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(gauge(busy), 3) << "800 KiB of partial bodies against a 256 KiB budget";

  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
  for (auto& sender : senders) {
    ASSERT_TRUE(sender->send(std::string_view(request).substr(first_part)));
    auto response = sender->read_response();
    ASSERT_TRUE(response) << sender->last_error();
    EXPECT_EQ(response->status, 200) << response->body;
    EXPECT_THAT(response->body, HasSubstr(uid));
  }
  for (int i = 0; i < 500 && gauge(busy) > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(gauge(busy), 0);
}

// The decoder-level hostile bodies of tests/unit/webhook/app/handlers_test.cpp, over the
// wire: JSON nested 100,000 deep and a Pod with 10,000 containers get well-formed
// answers on a connection that keeps serving.
TEST_F(HostileClientsTest, DeepJsonAndTenThousandContainersOverTheWire) {
  start(30s);
  Json review = Json::parse(test::load_apiserver_fixture("pod-create-from-replicaset.json"));
  const std::string uid = review["request"]["uid"].get<std::string>();
  Json& containers = review["request"]["object"]["spec"]["containers"];
  const Json first = containers[0];
  for (int i = 0; i < 10'000; ++i) {
    Json container = {{"name", "c" + std::to_string(i)}, {"image", first["image"]}};
    if (first.contains("resources")) container["resources"] = first["resources"];
    containers.push_back(std::move(container));
  }
  const std::string many = review.dump();
  review["request"]["object"]["spec"]["containers"] = Json::array({first});
  std::string deep = review.dump();
  deep.insert(deep.rfind("}}"), ",\"x\":" + std::string(100'000, '[') + std::string(100'000, ']'));
  ASSERT_FALSE(Json::parse(deep, nullptr, false).is_discarded());

  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  auto& connection = *result.connection;
  const std::vector<std::pair<std::string, const std::string*>> bodies = {{"10,000 containers", &many},
                                                                           {"100,000 deep", &deep}};
  for (const auto& [name, body] : bodies) {
    for (const char* path : {"/mutate", "/validate"}) {
      ASSERT_TRUE(connection.send(test::apiserver_request(path, *body, port_))) << name;
      auto response = connection.read_response();
      ASSERT_TRUE(response) << name << " " << path << ": " << connection.last_error();
      Json answer = Json::parse(response->body, nullptr, false);
      ASSERT_TRUE(answer.is_object()) << name;
      if (body == &deep) {
        // Deeper than Go's decoder (and so the apiserver) accepts: a Status naming it.
        EXPECT_EQ(response->status, 400) << path;
        EXPECT_THAT(answer.value("message", ""), HasSubstr("levels deep")) << path;
        continue;
      }
      EXPECT_EQ(response->status, 200) << name << " " << path << ": " << response->body.substr(0, 500);
      EXPECT_EQ(answer["response"].value("uid", ""), uid) << name;
      EXPECT_LT(response->body.size(), 4u << 20) << name;
    }
  }
  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
}

// Reviews over --large-review-bytes go to the one low-priority lane: answered like any
// other, counted, and while one is stuck there ordinary reviews are still answered at
// once; past the lane's queue a large review gets a 429 Status.
TEST_F(HostileClientsTest, LargeReviewsQueueOnTheirLaneWhileOrdinaryOnesAreAnswered) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> blocked{0};
  before_mutate_ = [&](const AdmissionRequest& r) {
    const Json* containers = json_at(r.object, "/spec/containers");
    if (containers && containers->is_array() && containers->size() > 100) {
      ++blocked;
      released.wait();
    }
  };
  start(30s, ServerOptions{}.max_buffered_bytes, ServerOptions{}.max_connections, [](ServerOptions& options) {
    options.large_review_bytes = 64 * 1024;
    options.large_review_queue = 1;
  });
  Json review = Json::parse(test::load_apiserver_fixture("pod-create-from-replicaset.json"));
  Json& containers = review["request"]["object"]["spec"]["containers"];
  const Json first = containers[0];
  for (int i = 0; i < 1000; ++i) {
    Json container = first;
    container["name"] = "c" + std::to_string(i);
    containers.push_back(std::move(container));
  }
  const std::string large = review.dump();
  ASSERT_GT(large.size(), 64u * 1024);

  auto send_large = [&] {
    auto result = connect();
    if (result.stage != ConnectStage::Connected) return -1;
    if (!result.connection->send(test::apiserver_request("/mutate", large, port_))) return -2;
    auto response = result.connection->read_response();
    return response ? response->status : -3;
  };
  auto running = std::async(std::launch::async, send_large);  // runs on the lane, held
  for (int i = 0; i < 500 && blocked.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(blocked.load(), 1);
  auto queued = std::async(std::launch::async, send_large);  // waits behind it
  const std::string waiting = "sizeguard_large_reviews_waiting";
  for (int i = 0; i < 1000 && gauge(waiting) < 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(gauge(waiting), 1) << "the second large review never queued";
  // No ASSERT before release: returning early would leave the lane blocked.
  const int refused = gauge(waiting) == 1 ? send_large() : 0;  // the queue is full now
  EXPECT_EQ(refused, 429);
  // Ordinary reviews do not wait for the lane.
  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
  EXPECT_EQ(blocked.load(), 1);
  release.set_value();
  EXPECT_EQ(running.get(), 200);
  EXPECT_EQ(queued.get(), 200);
  EXPECT_GE(gauge("sizeguard_large_reviews_total{outcome=\"decided\"}"), 2);
  EXPECT_GE(gauge("sizeguard_large_reviews_total{outcome=\"refused\"}"), 1);
  EXPECT_GE(gauge("sizeguard_http_errors_total{listener=\"webhook\",path=\"/mutate\",code=\"429\"}"), 1);
}

// Invalid UTF-8 inside JSON strings of an otherwise real review (label value, object
// name, a lone surrogate escape) and in the request path: a 400 Status that names the
// problem, every answer and log line well-formed UTF-8, and the connection keeps serving.
TEST_F(HostileClientsTest, InvalidUtf8GetsAWellFormedErrorAndTheServerKeepsServing) {
  start(30s);
  const std::string good = test::load_apiserver_fixture("pod-create-from-replicaset.json");
  auto with_name = [&](std::string_view raw_json_string) {
    // Splices raw bytes into the JSON text, since a Json value cannot hold them.
    Json review = Json::parse(good);
    review["request"]["object"]["metadata"]["name"] = "NAME-PLACEHOLDER";
    review["request"]["object"]["metadata"]["labels"] = {{"app", "LABEL-PLACEHOLDER"}};
    std::string text = review.dump();
    text.replace(text.find("NAME-PLACEHOLDER"), 16, "web-\xff\xfe");
    text.replace(text.find("LABEL-PLACEHOLDER"), 17, std::string(raw_json_string));
    return text;
  };
  struct Case {
    std::string name, body;
  };
  const std::vector<Case> cases = {
      {"truncated 2-byte sequence", with_name("caf\xc3")},
      {"bad continuation", with_name("\xc3\x28")},
      {"overlong slash", with_name("\xc0\xaf")},
      {"encoded surrogate", with_name("\xed\xa0\x80")},
      {"lone surrogate escape", with_name("\\udc00")},
      {"truncated 4-byte emoji", with_name("\xf0\x9f\x98")},
  };
  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  auto& connection = *result.connection;
  for (const auto& c : cases) {
    for (const char* path : {"/mutate", "/validate"}) {
      ASSERT_TRUE(connection.send(test::apiserver_request(path, c.body, port_))) << c.name;
      auto response = connection.read_response();
      ASSERT_TRUE(response) << c.name << ": " << connection.last_error();
      EXPECT_EQ(response->status, 400) << c.name << " " << path << ": " << response->body;
      ASSERT_TRUE(valid_utf8(response->body)) << c.name << ": answer is not UTF-8: " << response->body;
      Json status = Json::parse(response->body);
      EXPECT_EQ(status["kind"], "Status") << c.name;
      EXPECT_THAT(status["message"].get<std::string>(), HasSubstr("invalid AdmissionReview")) << c.name;
      EXPECT_THAT(status["message"].get<std::string>(), ::testing::AnyOf(HasSubstr("UTF-8"), HasSubstr("surrogate")))
          << c.name;
    }
  }
  // Invalid UTF-8 in the request target is echoed in a 404 Status, replaced, not raw.
  ASSERT_TRUE(connection.send("GET /\xff\xfe-admit HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto not_found = connection.read_response();
  ASSERT_TRUE(not_found) << connection.last_error();
  EXPECT_EQ(not_found->status, 404);
  EXPECT_TRUE(valid_utf8(not_found->body)) << not_found->body;
  EXPECT_THAT(not_found->body, HasSubstr("\xef\xbf\xbd"));  // U+FFFD

  // The same connection still answers a real review.
  ASSERT_TRUE(connection.send(test::apiserver_request("/mutate", good, port_)));
  auto after = connection.read_response();
  ASSERT_TRUE(after) << connection.last_error();
  EXPECT_EQ(after->status, 200) << after->body;
  EXPECT_THAT(after->body, HasSubstr(Json::parse(good)["request"]["uid"].get<std::string>()));

  server_->shutdown();
  std::istringstream lines(log_text());
  int rejected = 0;
  for (std::string line; std::getline(lines, line);) {
    ASSERT_TRUE(valid_utf8(line)) << "log line is not UTF-8: " << line;
    Json entry = Json::parse(line);
    if (entry["msg"] == "admission request rejected") ++rejected;
  }
  EXPECT_EQ(rejected, static_cast<int>(cases.size() * 2));
}

// Requests whose body is still to come, framed in every way a worker used to wait on
// (chunked, "Expect: 100-continue"), 3x as many as there are workers: the loop holds them
// like any incomplete request, good clients are answered meanwhile, and each is answered
// once its body arrives.
TEST_F(HostileClientsTest, ChunkedAndExpectContinueBodiesStillToComeHoldNoWorker) {
  start(30s);
  const std::string fixture = test::load_apiserver_fixture("deployment-create.json");
  const std::string uid = Json::parse(fixture)["request"]["uid"].get<std::string>();
  const std::string head = "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
  auto chunked = connect_many(kWorkers * 3 / 2);
  auto expecting = connect_many(kWorkers * 3 / 2);
  ASSERT_EQ(chunked.size() + expecting.size(), kWorkers * 3);
  const std::size_t half = fixture.size() / 2;
  auto hex = [](std::size_t n) {
    std::ostringstream out;
    out << std::hex << n;
    return out.str();
  };
  for (auto& c : chunked) {  // headers and a first chunk; the rest later
    ASSERT_TRUE(c->send(head + "Transfer-Encoding: chunked\r\n\r\n" + hex(half) + "\r\n" + fixture.substr(0, half) + "\r\n"));
  }
  for (auto& c : expecting) {
    ASSERT_TRUE(c->send(head + "Expect: 100-continue\r\nContent-Length: " + std::to_string(fixture.size()) + "\r\n\r\n"));
  }

  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());

  for (auto& c : chunked) {  // the rest in two chunks (one with an extension), a trailer
    const std::string rest = fixture.substr(half);
    ASSERT_TRUE(c->send(hex(10) + ";ext=1\r\n" + rest.substr(0, 10) + "\r\n" + hex(rest.size() - 10) + "\r\n" +
                        rest.substr(10) + "\r\n0\r\nX-Trailer: t\r\n\r\n"));
  }
  for (auto& c : expecting) ASSERT_TRUE(c->send(fixture));
  for (auto* group : {&chunked, &expecting}) {
    for (auto& c : *group) {
      auto response = c->read_response();  // skips "100 Continue"
      ASSERT_TRUE(response) << c->last_error();
      EXPECT_EQ(response->status, 200) << response->body;
      EXPECT_THAT(response->body, HasSubstr(uid));
      // The connection stays in step: a next (plain) request on it is answered.
      ASSERT_TRUE(c->send(test::apiserver_request("/validate", fixture, port_)));
      auto next = c->read_response();
      ASSERT_TRUE(next) << c->last_error();
      EXPECT_EQ(next->status, 200) << next->body;
    }
  }
}

// Framing Go's server refuses, or a worker could only have waited on (a length it cannot
// read, a coding it does not know), is answered at once with a Status and the connection
// ends; 3x as many such requests as workers leave good clients unaffected.
TEST_F(HostileClientsTest, BadFramingIsRefusedAtOnce) {
  start(30s);
  const std::string head = "POST /mutate HTTP/1.1\r\nHost: x\r\n";
  struct Case {
    std::string name, raw;
    int status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"negative length", head + "Content-Length: -5\r\n\r\n", 400, "invalid Content-Length"},
      {"2^64 length", head + "Content-Length: 18446744073709551616\r\n\r\n", 400, "invalid Content-Length"},
      {"2^63 length", head + "Content-Length: 9223372036854775808\r\n\r\n", 400, "invalid Content-Length"},
      {"signed length", head + "Content-Length: +5\r\n\r\n", 400, "invalid Content-Length"},
      {"hex length", head + "Content-Length: 0x10\r\n\r\n", 400, "invalid Content-Length"},
      {"two numbers", head + "Content-Length: 5 5\r\n\r\n", 400, "invalid Content-Length"},
      {"empty length", head + "Content-Length:\r\n\r\n", 400, "invalid Content-Length"},
      {"conflicting lengths", head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, "conflicting"},
      {"bad length beside chunked", head + "Transfer-Encoding: chunked\r\nContent-Length: -1\r\n\r\n", 400,
       "invalid Content-Length"},
      {"gzip coding", head + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "Transfer-Encoding"},
      {"identity coding", head + "Transfer-Encoding: identity\r\n\r\n", 501, "Transfer-Encoding"},
      {"two codings", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501,
       "Transfer-Encoding"},
      {"unknown expectation", head + "Expect: something\r\nContent-Length: 5\r\n\r\n", 417, "Expect"},
      {"bare LF", "POST /mutate HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}", 400, "bare LF"},
      {"bad chunk size", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"},
      {"chunk without CRLF", head + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}xx", 400, "CRLF"},
      {"chunks over the limit", head + "Transfer-Encoding: chunked\r\n\r\n300001\r\n", 413, "3145728 bytes"},
      {"headers over 64 KiB", head + "X-Big: " + std::string(70'000, 'a'), 431, "65536"},
  };
  // Each held a worker until the read timeout before; here 3x the workers at once.
  std::vector<std::unique_ptr<test::TlsConnection>> held;
  for (int round = 0; round < 3; ++round) {
    for (auto& c : connect_many(static_cast<int>(kWorkers))) {
      EXPECT_TRUE(c->send(cases[round].raw));
      held.push_back(std::move(c));
    }
  }
  EXPECT_THAT(good_client_round(), ::testing::IsEmpty());
  for (auto& c : held) {
    auto response = c->read_response();
    ASSERT_TRUE(response) << c->last_error();
    EXPECT_EQ(response->status, 400) << response->body;
  }

  for (const auto& c : cases) {
    auto result = connect();
    ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
    ASSERT_TRUE(result.connection->send(c.raw)) << c.name;
    auto response = result.connection->read_response();
    ASSERT_TRUE(response) << c.name << ": " << result.connection->last_error();
    EXPECT_EQ(response->status, c.status) << c.name << ": " << response->body;
    EXPECT_EQ(response->headers["connection"], "close") << c.name;
    Json status = Json::parse(response->body, nullptr, false);
    EXPECT_EQ(status.value("kind", ""), "Status") << c.name << ": " << response->body;
    EXPECT_THAT(status.value("message", ""), HasSubstr(c.message)) << c.name;
    EXPECT_TRUE(result.connection->wait_closed()) << c.name;
  }
  EXPECT_GE(gauge("sizeguard_http_errors_total{listener=\"webhook\",path=\"/mutate\",code=\"400\"}"), 11);
}

// The loop itself owes "100 Continue" once the headers are in: a client that waits for it
// before sending its body (as Go's and curl's do) gets it at once. Checked on the plain
// metrics listener, where the interim response can be read raw.
TEST_F(HostileClientsTest, ExpectContinueIsAnsweredByTheLoop) {
  start(30s);
  RawSocket raw(server_->metrics_port());
  ASSERT_GE(raw.fd, 0);
  const std::string head = "POST /metrics HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
  ASSERT_EQ(::send(raw.fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  std::string got;
  char buffer[512];
  while (got.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(raw.fd, buffer, sizeof buffer, 0);  // bounded by kClientBound
    ASSERT_GT(n, 0) << "no 100 Continue before the body";
    got.append(buffer, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(::send(raw.fd, "{}", 2, MSG_NOSIGNAL), 2);
  got.clear();
  while (got.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(raw.fd, buffer, sizeof buffer, 0);
    ASSERT_GT(n, 0);
    got.append(buffer, static_cast<std::size_t>(n));
  }
  EXPECT_THAT(got, ::testing::StartsWith("HTTP/1.1 404"));  // one final answer, no second 100
}

// One whole HTTP/1.1 answer from `fd` (headers, then Content-Length bytes of body), or what
// arrived before the socket closed or timed out.
// One HTTP answer at a time from a raw socket. Answers to pipelined requests can arrive in one
// recv: what follows the first stays here for the next call.
struct AnswerReader {
  int fd;
  std::string got;
  std::string next() {
    std::size_t end = std::string::npos;
    char buffer[512];
    for (;;) {
      if (end == std::string::npos) end = got.find("\r\n\r\n");
      if (end != std::string::npos) {
        const auto at = got.find("Content-Length: ");
        const std::size_t length = at == std::string::npos || at > end ? 0 : std::stoul(got.substr(at + 16));
        if (got.size() >= end + 4 + length) {
          std::string answer = got.substr(0, end + 4 + length);
          got.erase(0, end + 4 + length);
          return answer;
        }
      }
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);  // bounded by kClientBound
      if (n <= 0) return std::exchange(got, {});
      got.append(buffer, static_cast<std::size_t>(n));
    }
  }
};

bool send_all(int fd, std::string_view text) {
  return ::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
}

// After an answer on a keep-alive connection the worker waits a moment on it for the next
// request instead of handing it back to the loop at once: what arrives then in pieces, or
// with "Expect: 100-continue", or a close, must come out as it does through the loop.
TEST_F(HostileClientsTest, RequestsRightAfterAKeepAliveAnswerArriveInPiecesOrAskToContinue) {
  start(30s);
  const std::string healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  RawSocket raw(server_->metrics_port());
  ASSERT_GE(raw.fd, 0);
  AnswerReader answers{raw.fd, {}};
  ASSERT_TRUE(send_all(raw.fd, healthz));
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 200"));

  // Half a request at once, the rest well after the worker stopped waiting (it hands back
  // what it read): one answer, to the whole request.
  ASSERT_TRUE(send_all(raw.fd, healthz.substr(0, 9)));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(send_all(raw.fd, healthz.substr(9)));
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 200"));

  // The same in several pieces within the wait.
  for (std::size_t at = 0; at < healthz.size(); at += 7) {
    ASSERT_TRUE(send_all(raw.fd, healthz.substr(at, 7)));
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 200"));

  // "Expect: 100-continue" at once after an answer: one 100 Continue, then the answer.
  ASSERT_TRUE(send_all(raw.fd, "POST /metrics HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_EQ(answers.next(), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(send_all(raw.fd, "{}"));
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 404"));

  // Two requests in one write right after an answer: both answered, in order.
  // (Read after both are answered: they then come in one recv.)
  ASSERT_TRUE(send_all(raw.fd, healthz + "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(answers.next(), ::testing::StartsWith("HTTP/1.1 404"));

  // The client closes while the worker waits: the server keeps serving, no worker stays busy.
  ::shutdown(raw.fd, SHUT_RDWR);
  RawSocket next(server_->metrics_port());
  ASSERT_TRUE(send_all(next.fd, healthz));
  EXPECT_THAT((AnswerReader{next.fd, {}}.next()), ::testing::StartsWith("HTTP/1.1 200"));
  ::shutdown(next.fd, SHUT_RDWR);
  const std::string busy = "sizeguard_http_busy_workers{listener=\"metrics\"}";
  for (int i = 0; i < 100 && gauge(busy) != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(gauge(busy), 0);

  // And over TLS: the webhook answers two reviews back to back on one connection.
  auto result = connect();
  ASSERT_EQ(result.stage, ConnectStage::Connected) << result.error;
  const std::string body = test::load_apiserver_fixture("pod-create-kubectl-run.json");
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(result.connection->send(test::apiserver_request("/mutate?timeout=10s", body, port_)));
    auto response = result.connection->read_response();
    ASSERT_TRUE(response) << result.connection->last_error();
    EXPECT_EQ(response->status, 200);
  }
}

}  // namespace
}  // namespace sizeguard
