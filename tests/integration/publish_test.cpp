// Publishing a recommendations snapshot into a ConfigMap of a (fake) Kubernetes API:
// read back, resourceVersion conflicts with a concurrent writer, the switch to gzip in
// binaryData above 900 KiB (ConfigMaps hold at most 1 MiB) and back, and errors.
#include <openssl/evp.h>
#include <zlib.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "recommender/publish.h"
#include "recommender/recommend.h"
#include "support/fake_apiserver.h"
#include "support/fixtures.h"
#include "kube/kubeapi.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

const std::string kCore = "api/v1";
const std::string kNs = "sizeguard-system";
const std::string kName = "sizeguard-recommendations";

// What deploy/base creates (kustomize configMapGenerator).
Json base_configmap() {
  return Json{{"apiVersion", "v1"},
              {"kind", "ConfigMap"},
              {"metadata", {{"name", kName}, {"labels", {{"app.kubernetes.io/name", "sizeguard"}}}}},
              {"data",
               {{"recommendations.json",
                 R"({"modelVersion":"none","generatedAt":"1970-01-01T00:00:00Z","recommendations":{}})"}}}};
}

// A snapshot with `containers` recommendations, as `sizeguard recommend` writes it.
std::string snapshot_json(int containers, const std::string& model = "xgb-test") {
  RecommendationSnapshot s;
  s.model_version = model;
  s.generated_at = "2026-11-23T03:17:00Z";
  for (int i = 0; i < containers; ++i) {
    ContainerRecommendation c;
    c.cpu = std::to_string(100 + i % 900) + "m";
    c.memory = std::to_string(64 + i % 512) + "Mi";
    c.cpu_cores = (100 + i % 900) / 1000.0;
    c.memory_bytes = (64 + i % 512) * 1048576.0;
    c.confidence = 0.8;
    c.explanation = {{"cpu:cpu_p95_24h", 0.12}, {"memory:mem_max_7d", 0.05}, {"cpu:hour_of_day", -0.01}};
    s.recommendations["team-" + std::to_string(i % 40) + "/Deployment/service-" + std::to_string(i) + "/app"] = c;
  }
  return snapshot_to_json(s);
}

// Independent of publish.cpp: OpenSSL base64 and zlib inflate.
std::string base64_decode(const std::string& text) {
  std::string out(3 * (text.size() / 4) + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  EXPECT_GE(n, 0) << "not base64";
  size_t size = static_cast<size_t>(std::max(n, 0));
  for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) --size;  // EVP_DecodeBlock counts padding
  out.resize(size);
  return out;
}

std::string inflate_gzip(const std::string& gz) {
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buffer[16384];
  int rc = Z_OK;
  do {
    z.next_out = reinterpret_cast<Bytef*>(buffer);
    z.avail_out = sizeof buffer;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buffer, sizeof buffer - z.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&z);
  EXPECT_EQ(rc, Z_STREAM_END) << "gzip stream did not end cleanly";
  return out;
}

struct PublishTest : ::testing::Test {
  test::FakeApiServer api;
  KubeClient client{api.client_config()};
  Json stored() { return api.get(kCore, "configmaps", kNs, kName).value(); }
};

TEST_F(PublishTest, WritesTheSnapshotIntoDataAndKeepsOtherKeys) {
  Json cm = base_configmap();
  cm["data"]["README"] = "written by the recommender CronJob";
  const std::string before = api.put(kCore, "configmaps", kNs, cm)["metadata"]["resourceVersion"];

  const std::string snapshot = snapshot_json(3);
  auto error = publish_snapshot(client, kNs, kName, snapshot);
  ASSERT_FALSE(error) << *error;

  Json after = stored();
  EXPECT_EQ(after["data"]["recommendations.json"], snapshot);
  EXPECT_EQ(after["data"]["README"], "written by the recommender CronJob");
  EXPECT_EQ(after["metadata"]["labels"]["app.kubernetes.io/name"], "sizeguard");
  EXPECT_FALSE(after.contains("binaryData"));
  EXPECT_NE(after["metadata"]["resourceVersion"], before);
  // What the webhook mounts parses.
  RecommendationSnapshot parsed = parse_recommendations(after["data"]["recommendations.json"].get<std::string>());
  EXPECT_EQ(parsed.model_version, "xgb-test");
  EXPECT_EQ(parsed.recommendations.size(), 3u);

  // One read and one write, with the resourceVersion that was read.
  EXPECT_THAT(api.requests(), ::testing::ElementsAre(
                                  "GET /api/v1/namespaces/sizeguard-system/configmaps/sizeguard-recommendations",
                                  "PUT /api/v1/namespaces/sizeguard-system/configmaps/sizeguard-recommendations"));
}

TEST_F(PublishTest, TheBaseLiteralIsASnapshotTheWebhookAccepts) {
  const Json cm = base_configmap();
  RecommendationSnapshot parsed = parse_recommendations(cm["data"]["recommendations.json"].get<std::string>());
  EXPECT_EQ(parsed.model_version, "none");
  EXPECT_TRUE(parsed.recommendations.empty());
}

TEST_F(PublishTest, ConcurrentWriterMakesItRereadAndRetry) {
  api.put(kCore, "configmaps", kNs, base_configmap());
  // Every request waits 400 ms before it is served, so once the publisher's PUT has been
  // received (it is logged on arrival) there is time to write the ConfigMap before the PUT
  // is applied: the PUT then carries a stale resourceVersion and gets 409 Conflict.
  api.set_delay(400ms);
  std::optional<std::string> error;
  std::thread publisher([&] { error = publish_snapshot(client, kNs, kName, snapshot_json(2, "xgb-new")); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  auto puts = [&] {
    int n = 0;
    for (const auto& r : api.requests()) n += r.rfind("PUT ", 0) == 0;
    return n;
  };
  while (puts() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(puts(), 1) << "the publisher never sent its PUT";
  Json concurrent = base_configmap();
  concurrent["data"]["owner-note"] = "written concurrently";
  api.put(kCore, "configmaps", kNs, concurrent);
  publisher.join();
  api.set_delay(0ms);
  ASSERT_FALSE(error) << *error;

  std::vector<std::string> methods;
  for (const auto& r : api.requests()) methods.push_back(r.substr(0, r.find(' ')));
  EXPECT_THAT(methods, ::testing::ElementsAre("GET", "PUT", "GET", "PUT"));
  Json after = stored();
  EXPECT_EQ(parse_recommendations(after["data"]["recommendations.json"].get<std::string>()).model_version, "xgb-new");
  EXPECT_EQ(after["data"]["owner-note"], "written concurrently") << "the retry did not start from a fresh read";
}

TEST_F(PublishTest, GivesUpAfterRepeatedConflicts) {
  api.put(kCore, "configmaps", kNs, base_configmap());
  // A writer that beats every PUT of the publisher (see above for the timing).
  api.set_delay(300ms);
  std::atomic<bool> done{false};
  std::thread rival([&] {
    size_t seen = 0;
    while (!done) {
      size_t puts = 0;
      for (const auto& r : api.requests()) puts += r.rfind("PUT ", 0) == 0;
      if (puts > seen) {
        seen = puts;
        Json cm = base_configmap();
        cm["data"]["rival"] = std::to_string(puts);
        api.put(kCore, "configmaps", kNs, cm);
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  PublishOptions options;
  options.max_attempts = 3;
  auto error = publish_snapshot(client, kNs, kName, snapshot_json(1, "xgb-loser"), options);
  done = true;
  rival.join();
  api.set_delay(0ms);
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("configmap sizeguard-system/sizeguard-recommendations: gave up after 3"));
  EXPECT_THAT(*error, HasSubstr("409 Conflict"));
  EXPECT_EQ(stored()["data"]["rival"], "3");
  EXPECT_EQ(parse_recommendations(stored()["data"]["recommendations.json"].get<std::string>()).model_version, "none");
}

TEST_F(PublishTest, ConflictOnReadIsAnError) {
  api.put(kCore, "configmaps", kNs, base_configmap());
  // Only writes conflict; any other failure status on the read is reported as it is.
  api.fail_next(500, 1, "etcdserver: request timed out");
  auto error = publish_snapshot(client, kNs, kName, snapshot_json(1));
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("500"));
  EXPECT_THAT(*error, HasSubstr("etcdserver: request timed out"));
}

TEST_F(PublishTest, LargeSnapshotIsGzippedIntoBinaryDataAndRoundTrips) {
  Json cm = base_configmap();
  cm["binaryData"] = Json::object();
  api.put(kCore, "configmaps", kNs, cm);

  const std::string snapshot = snapshot_json(6000);
  ASSERT_GT(snapshot.size(), kInlineSnapshotLimit) << "the test snapshot must be over 900 KiB";
  auto error = publish_snapshot(client, kNs, kName, snapshot);
  ASSERT_FALSE(error) << *error;

  Json after = stored();
  EXPECT_FALSE(after.contains("data") && after["data"].contains("recommendations.json"))
      << "the plain key would push the ConfigMap over 1 MiB";
  ASSERT_TRUE(after.contains("binaryData"));
  ASSERT_TRUE(after["binaryData"].contains("recommendations.json.gz"));
  const std::string gz = base64_decode(after["binaryData"]["recommendations.json.gz"].get<std::string>());
  EXPECT_LT(gz.size(), 1024u * 1024u);
  ASSERT_GE(gz.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);  // gzip magic
  EXPECT_EQ(static_cast<unsigned char>(gz[1]), 0x8b);
  const std::string inflated = inflate_gzip(gz);
  EXPECT_EQ(inflated, snapshot);
  EXPECT_EQ(parse_recommendations(inflated).recommendations.size(), 6000u);
  // The library's own gunzip agrees.
  auto mine = gunzip(gz);
  ASSERT_TRUE(mine);
  EXPECT_EQ(*mine, snapshot);

  // Back under the limit: plain again, and the stale compressed copy is gone.
  error = publish_snapshot(client, kNs, kName, snapshot_json(2));
  ASSERT_FALSE(error) << *error;
  after = stored();
  EXPECT_FALSE(after.contains("binaryData") && after["binaryData"].contains("recommendations.json.gz"));
  EXPECT_EQ(parse_recommendations(after["data"]["recommendations.json"].get<std::string>()).recommendations.size(), 2u);
}

TEST_F(PublishTest, SnapshotTooLargeEvenCompressedLeavesTheConfigMapAlone) {
  api.put(kCore, "configmaps", kNs, base_configmap());
  const Json before = stored();
  PublishOptions options;
  options.inline_limit = 1024;  // a tiny budget stands in for 900 KiB
  auto error = publish_snapshot(client, kNs, kName, snapshot_json(200), options);
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("gzip-compressed"));
  EXPECT_THAT(*error, HasSubstr("left unchanged"));
  EXPECT_EQ(stored(), before);
  EXPECT_TRUE(api.requests().empty()) << "nothing should be sent for a snapshot that cannot fit";
}

TEST_F(PublishTest, MissingConfigMapAndForbiddenAreErrors) {
  auto error = publish_snapshot(client, kNs, kName, snapshot_json(1));
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("not found"));
  EXPECT_FALSE(api.get(kCore, "configmaps", kNs, kName)) << "the publisher must not create it";

  api.put(kCore, "configmaps", kNs, base_configmap());
  api.fail_next(403, 1, "configmaps \"sizeguard-recommendations\" is forbidden");
  error = publish_snapshot(client, kNs, kName, snapshot_json(1));
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("403 Forbidden"));

  KubeConfig dead = api.client_config();
  dead.server = "https://127.0.0.1:1";
  KubeClient unreachable(dead);
  error = publish_snapshot(unreachable, kNs, kName, snapshot_json(1));
  ASSERT_TRUE(error);
  EXPECT_THAT(*error, HasSubstr("GET /api/v1/namespaces/sizeguard-system/configmaps/sizeguard-recommendations"));
}

TEST(PublishHelpers, ConfigMapReference) {
  auto ref = parse_configmap_ref("sizeguard-system/sizeguard-recommendations");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->first, "sizeguard-system");
  EXPECT_EQ(ref->second, "sizeguard-recommendations");
  for (const char* bad : {"", "name-only", "/name", "ns/", "a/b/c", "Upper/name", "ns/-bad", "n.s/name"})
    EXPECT_FALSE(parse_configmap_ref(bad)) << bad;
}

TEST(PublishHelpers, GzipRoundTripAndCorruptInput) {
  const std::string text = std::string(100000, 'x') + "tail";
  const std::string gz = gzip_compress(text);
  EXPECT_LT(gz.size(), 2000u);
  EXPECT_EQ(inflate_gzip(gz), text);
  EXPECT_EQ(gunzip(gz).value_or(""), text);
  EXPECT_FALSE(gunzip(gz.substr(0, gz.size() / 2))) << "truncated";
  EXPECT_FALSE(gunzip("not gzip at all"));
  EXPECT_FALSE(gunzip(gz, 1000)) << "over max_output";
  EXPECT_EQ(gunzip(gzip_compress("")).value_or("x"), "");
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

// `sizeguard recommend --publish-configmap` end to end: the real binary, one VM's month of
// usage (the derived sample in tests/fixtures),
// a kubeconfig pointing at the fake apiserver.
TEST_F(PublishTest, RecommendCommandPublishesThroughAKubeconfig) {
  api.put(kCore, "configmaps", kNs, base_configmap());
  const auto dir = std::filesystem::temp_directory_path() / ("sizeguard-publish-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  unsigned char encoded[8192];
  const int n = EVP_EncodeBlock(encoded, reinterpret_cast<const unsigned char*>(api.ca_pem().data()),
                                static_cast<int>(api.ca_pem().size()));
  std::ofstream(dir / "kubeconfig") << "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                                       "clusters:\n- name: fake\n  cluster:\n    server: " << api.url()
                                    << "\n    certificate-authority-data: " << std::string(reinterpret_cast<char*>(encoded), n)
                                    << "\nusers:\n- name: u\n  user:\n    token: " << api.token()
                                    << "\ncontexts:\n- name: fake\n  context: {cluster: fake, user: u}\n";
  const std::string trace = test::test_fixture_path("usage/bitbrains-sample/1.csv.gz").string();
  const std::string command = std::string(SIZEGUARD_BINARY) + " recommend --bitbrains " + trace +
                              " --publish-configmap " + kNs + "/" + kName + " --kubeconfig " +
                              (dir / "kubeconfig").string() + " 2>" + (dir / "err").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << std::ifstream(dir / "err").rdbuf();
  const Json cm = stored();
  const RecommendationSnapshot snapshot = parse_recommendations(cm["data"]["recommendations.json"].get<std::string>());
  EXPECT_EQ(snapshot.recommendations.count("bitbrains/VM/1/main"), 1u);
  // A bad reference is bad input (exit 2), and nothing is written.
  const std::string bad = std::string(SIZEGUARD_BINARY) + " recommend --bitbrains " + trace +
                          " --publish-configmap nonsense 2>/dev/null";
  EXPECT_EQ(WEXITSTATUS(std::system(bad.c_str())), 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sizeguard
