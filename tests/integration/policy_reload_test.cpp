// The real TLS server validating with a policy directory laid out as a kubelet ConfigMap
// volume, swapped (..data symlink) to new generations, including a broken one, while
// clients keep sending reviews: every review is answered by exactly one whole set.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>

#include "policies/engine.h"
#include "policies/store.h"
#include "support/fixtures.h"
#include "support/tls_client.h"
#include "webhook/app/handlers.h"
#include "webhook/devcerts.h"
#include "webhook/logging.h"
#include "webhook/server.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Generation N holds two files whose policies must be seen together: floor-a requires at
// least N millicores, cap-b allows at most N MiB. Every review violates both, and the
// denial names both numbers: they are equal exactly when one whole generation answered.
std::string generation_file(const std::string& file, int n) {
  const bool a = file == "a.yaml";
  return std::string("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: ") + (a ? "floor-a" : "cap-b") +
         "}\nspec:\n  resources: {" + (a ? "min: {cpu: " + std::to_string(n) + "m}" : "max: {memory: " + std::to_string(n) + "Mi}") +
         "}\n";
}

int number_after(const std::string& text, const std::string& marker) {
  const auto at = text.find(marker);
  return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + marker.size());
}

class ConfigMapVolume {
 public:
  explicit ConfigMapVolume(fs::path dir) : dir_(std::move(dir)) {}

  // Writes a new generation directory and swaps ..data to it atomically, as the kubelet does.
  void publish(const std::map<std::string, std::string>& files) {
    const fs::path generation = dir_ / ("..gen_" + std::to_string(++count_));
    fs::create_directories(generation);
    for (const auto& [name, text] : files) std::ofstream(generation / name) << text;
    const fs::path temp = dir_ / "..data_tmp";
    fs::remove(temp);
    fs::create_directory_symlink(generation.filename(), temp);
    fs::rename(temp, dir_ / "..data");
    for (const auto& [name, text] : files) {
      if (!fs::is_symlink(dir_ / name)) fs::create_symlink(fs::path("..data") / name, dir_ / name);
    }
  }

 private:
  fs::path dir_;
  int count_ = 0;
};

std::string deployment_review(int serial) {
  const Json container = {{"name", "app"}, {"resources", {{"requests", {{"cpu", "0"}, {"memory", "100000Gi"}}}}}};
  Json object = {{"apiVersion", "apps/v1"},
                 {"kind", "Deployment"},
                 {"metadata", {{"name", "web"}, {"namespace", "team-a"}}},
                 {"spec", {{"replicas", 1}, {"template", {{"spec", {{"containers", {container}}}}}}}}};
  Json review = {{"apiVersion", "admission.k8s.io/v1"},
                 {"kind", "AdmissionReview"},
                 {"request",
                  {{"uid", "uid-" + std::to_string(serial)},
                   {"kind", {{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}}},
                   {"resource", {{"group", "apps"}, {"version", "v1"}, {"resource", "deployments"}}},
                   {"namespace", "team-a"},
                   {"name", "web"},
                   {"operation", "CREATE"},
                   {"userInfo", {{"username", "alice"}}},
                   {"object", object}}}};
  return review.dump();
}

TEST(PolicyReload, ConcurrentReviewsNeverSeeAHalfLoadedSet) {
  const fs::path root = make_private_temp_directory("sizeguard-reload-test");
  const fs::path policy_dir = root / "policies";
  fs::create_directories(policy_dir);
  ConfigMapVolume volume(policy_dir);
  volume.publish({{"a.yaml", generation_file("a.yaml", 1)}, {"b.yaml", generation_file("b.yaml", 1)}});

  Metrics metrics;
  Readiness readiness;
  PolicyStore store(policy_dir, metrics,
                    [&readiness](bool ready, const std::string& why) { readiness.set("policies", ready, why); });
  ASSERT_TRUE(store.reload().empty());
  store.start(20ms);

  UnavailableClusterState no_cluster("not needed: these policies read no cluster state");
  AdmissionContext context;
  context.policies = [&store] { return store.current(); };
  context.cluster_state = &no_cluster;
  context.metrics = &metrics;
  describe_handler_metrics(metrics);

  const DevCertificates certs = make_dev_certificates(root / "certs");
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.tls_cert = certs.server_cert.string();
  options.tls_key = certs.server_key.string();
  options.workers = 8;
  AdmissionHandlers handlers{[&](const AdmissionRequest& r) { return mutate(r, context); },
                             [&](const AdmissionRequest& r) { return validate(r, context); }};
  readiness.set("test", true);
  AdmissionServer server(options, std::move(handlers), metrics, readiness,
                         make_logger("reload-test", LogFormat::Json, std::make_shared<spdlog::sinks::null_sink_mt>()));
  server.start();

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failures{0}, mixed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      std::unique_ptr<test::TlsConnection> connection_holder;
      int serial = c * 1'000'000;
      while (!stop) {
        if (!connection_holder) {
          connection_holder = test::connect_tls(server.webhook_port(), certs.ca_cert.string(), 30s).connection;
          if (!connection_holder) {
            ++failures;
            return;
          }
        }
        const std::string body = deployment_review(++serial);
        auto& connection = *connection_holder;
        if (!connection.send(test::apiserver_request("/validate?timeout=10s", body, server.webhook_port()))) {
          ++failures;
          return;
        }
        auto response = connection.read_response();
        if (!response || response->status != 200) {
          ++failures;
          ADD_FAILURE() << "client " << c << " after " << (serial - c * 1'000'000) << " reviews: "
                        << (response ? response->body : connection.last_error());
          return;
        }
        // The server ends keep-alive connections after many requests: open a new one.
        if (response->headers.count("connection") && response->headers.at("connection") == "close") {
          connection_holder.reset();
        }
        Json answer = Json::parse(response->body)["response"];
        ++answered;
        const std::string message = answer.value("status", Json::object()).value("message", "");
        const int cpu_floor = number_after(message, "below the minimum of ");
        const int memory_cap = number_after(message, "above the maximum of ");
        if (answer["allowed"].get<bool>() || cpu_floor < 1 || cpu_floor != memory_cap) {
          ++mixed;
          ADD_FAILURE() << "not one whole generation: " << answer.dump();
          return;
        }
      }
    });
  }

  // Generations 2..6, with a broken file in generation 4 (it never takes effect). Each is
  // awaited (the poller runs every 20 ms; the bound only matters on a stalled machine) while
  // the clients keep reviewing.
  auto cpu_floor_in_force = [&] { return store.current()->policies[0].resources->min.at("cpu").to_string(); };
  auto await = [](const std::function<bool()>& done) {
    for (int i = 0; i < 1000 && !done(); ++i) std::this_thread::sleep_for(10ms);
    return done();
  };
  for (int n = 2; n <= 6; ++n) {
    std::this_thread::sleep_for(60ms);  // reviews against generation n - 1
    if (n == 4) {
      volume.publish({{"a.yaml", generation_file("a.yaml", 40)}, {"b.yaml", "spec: [broken\n"}});
      EXPECT_TRUE(await([&] { return readiness.report().text.find("degraded: last reload failed") != std::string::npos; }))
          << readiness.report().text;
      ASSERT_EQ(store.current()->policies.size(), 2u);
      EXPECT_EQ(cpu_floor_in_force(), "3m") << "the broken generation must not replace the good one";
      EXPECT_TRUE(readiness.report().ready);
      continue;
    }
    volume.publish({{"a.yaml", generation_file("a.yaml", n)}, {"b.yaml", generation_file("b.yaml", n)}});
    const std::string expected = std::to_string(n) + "m";
    EXPECT_TRUE(await([&] { return cpu_floor_in_force() == expected; })) << "generation " << n << " never took effect";
  }
  std::this_thread::sleep_for(100ms);  // reviews against the last generation
  stop = true;
  for (auto& t : clients) t.join();
  server.shutdown();
  store.stop();

  EXPECT_EQ(failures, 0);
  EXPECT_EQ(mixed, 0);
  EXPECT_GT(answered, 20);
  EXPECT_EQ(store.current()->policies[0].resources->min.at("cpu").to_string(), "6m");
  EXPECT_THAT(readiness.report().text, ::testing::HasSubstr("policies: ok"));
  const std::string rendered = metrics.render();
  EXPECT_THAT(rendered, ::testing::HasSubstr("sizeguard_policy_load_errors_total 1"));
  EXPECT_THAT(rendered, ::testing::HasSubstr("sizeguard_policy_last_reload_success 1"));
  EXPECT_THAT(rendered, ::testing::HasSubstr("sizeguard_policy_decisions_total{policy=\"floor-a\""));
  fs::remove_all(root);
}

}  // namespace
}  // namespace sizeguard
