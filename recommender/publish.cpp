#include "recommender/publish.h"

#include <openssl/evp.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace sizeguard {
namespace {

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(std::max(written, 0)));
  return out;
}

bool valid_dns_label(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(s.front()) || !alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return alnum(c) || c == '-' || c == '.'; });
}

}  // namespace

std::string gzip_compress(std::string_view data) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("gzip: deflateInit2 failed");
  std::string out(deflateBound(&z, static_cast<uLong>(data.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const auto produced = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("gzip: deflate did not finish");
  out.resize(produced);
  return out;
}

std::optional<std::string> gunzip(std::string_view data, std::size_t max_output) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return std::nullopt;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buffer[64 * 1024];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buffer);
    z.avail_out = sizeof buffer;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(buffer, sizeof buffer - z.avail_out);
    if (out.size() > max_output) break;
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) break;  // truncated input
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END || out.size() > max_output) return std::nullopt;
  return out;
}

std::optional<std::pair<std::string, std::string>> parse_configmap_ref(std::string_view ref) {
  const auto slash = ref.find('/');
  if (slash == std::string_view::npos || ref.find('/', slash + 1) != std::string_view::npos) return std::nullopt;
  const std::string_view ns = ref.substr(0, slash), name = ref.substr(slash + 1);
  if (!valid_dns_label(ns, 63) || ns.find('.') != std::string_view::npos || !valid_dns_label(name, 253))
    return std::nullopt;
  return std::make_pair(std::string(ns), std::string(name));
}

std::optional<std::string> publish_snapshot(KubeClient& client, const std::string& ns, const std::string& name,
                                            const std::string& snapshot_json, const PublishOptions& options) {
  const std::string what = "configmap " + ns + "/" + name + ": ";
  const std::string path = "/api/v1/namespaces/" + kube_path_escape(ns) + "/configmaps/" + kube_path_escape(name);

  // Decide the stored form once; it does not depend on what the ConfigMap holds.
  const bool compress = snapshot_json.size() > options.inline_limit;
  std::string encoded;
  if (compress) {
    const std::string gz = gzip_compress(snapshot_json);
    // The apiserver counts binaryData by its decoded bytes against the 1 MiB limit.
    if (gz.size() > options.inline_limit) {
      return what + "the snapshot is " + std::to_string(snapshot_json.size()) + " bytes, " + std::to_string(gz.size()) +
             " gzip-compressed: over the " + std::to_string(options.inline_limit) +
             "-byte budget of a ConfigMap (1 MiB limit); ConfigMap left unchanged";
    }
    encoded = base64_encode(gz);
  }

  std::string last_conflict;
  for (int attempt = 1; attempt <= std::max(1, options.max_attempts); ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(std::chrono::milliseconds(50 * (attempt - 1)));
    KubeResponse got = client.request("GET", path);
    if (!got.transport_error.empty()) return what + "GET " + path + ": " + got.transport_error;
    if (got.status == 404) {
      return what + "not found (deploy/base creates it; the publisher may only get and update it)";
    }
    if (got.status < 200 || got.status >= 300) return what + "GET " + path + ": " + kube_error_summary(got.status, got.body);
    Json object = Json::parse(got.body, nullptr, false);
    if (!object.is_object() || !object.contains("metadata") || !object["metadata"].is_object())
      return what + "GET " + path + ": the response is not a ConfigMap";

    // Keep every other key; swap the snapshot between its two forms.
    if (!object.contains("data") || !object["data"].is_object()) object["data"] = Json::object();
    if (!object.contains("binaryData") || !object["binaryData"].is_object()) object["binaryData"] = Json::object();
    if (compress) {
      object["data"].erase(kSnapshotKey);
      object["binaryData"][kSnapshotGzipKey] = encoded;
    } else {
      object["binaryData"].erase(kSnapshotGzipKey);
      object["data"][kSnapshotKey] = snapshot_json;
    }
    if (object["data"].empty()) object.erase("data");
    if (object["binaryData"].empty()) object.erase("binaryData");
    // metadata.resourceVersion stays as read: the write fails with 409 if someone else wrote.
    object["metadata"].erase("managedFields");

    KubeResponse put = client.request("PUT", path, object.dump());
    if (!put.transport_error.empty()) return what + "PUT " + path + ": " + put.transport_error;
    if (put.status >= 200 && put.status < 300) return std::nullopt;
    if (put.status != 409) return what + "PUT " + path + ": " + kube_error_summary(put.status, put.body);
    last_conflict = kube_error_summary(put.status, put.body);
  }
  return what + "gave up after " + std::to_string(std::max(1, options.max_attempts)) +
         " conflicting writes: " + last_conflict;
}

}  // namespace sizeguard
