// Publishing a recommendations snapshot into the ConfigMap the webhook mounts
// (`sizeguard recommend --publish-configmap NAMESPACE/NAME`).
//
// The ConfigMap must exist (deploy/base creates `sizeguard-recommendations`): the publisher's
// Role grants only get/update on that one name, and RBAC cannot restrict `create` by name.
// A ConfigMap holds at most 1 MiB (data + binaryData together), so:
//   - a snapshot of at most kInlineSnapshotLimit bytes goes into data["recommendations.json"]
//     (and a stale binaryData["recommendations.json.gz"] is removed);
//   - a larger one is gzip-compressed into binaryData["recommendations.json.gz"] (base64 on
//     the wire, as the API wants) and data["recommendations.json"] is removed, so the object
//     stays under the limit; a snapshot whose compressed form is still over the limit is an
//     error and the ConfigMap is left unchanged.
// Other keys of the ConfigMap are kept. Writes carry the resourceVersion that was read; on a
// 409 Conflict the ConfigMap is read again and the write retried.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "kube/kubeapi.h"

namespace sizeguard {

inline constexpr std::size_t kInlineSnapshotLimit = 900 * 1024;  // bytes in data[] (ConfigMaps: 1 MiB)
inline constexpr const char* kSnapshotKey = "recommendations.json";
inline constexpr const char* kSnapshotGzipKey = "recommendations.json.gz";

struct PublishOptions {
  int max_attempts = 5;                              // GET+PUT rounds (409 Conflict retries)
  std::size_t inline_limit = kInlineSnapshotLimit;   // above this, gzip into binaryData
};

// Writes `snapshot_json` into ConfigMap `ns`/`name`. Returns nothing on success, else the
// error, e.g. "configmap sizeguard-system/sizeguard-recommendations: GET ...: 403 Forbidden: ...".
std::optional<std::string> publish_snapshot(KubeClient& client, const std::string& ns, const std::string& name,
                                            const std::string& snapshot_json, const PublishOptions& options = {});

// "NAMESPACE/NAME" (the --publish-configmap value) -> {namespace, name}; nullopt when malformed.
std::optional<std::pair<std::string, std::string>> parse_configmap_ref(std::string_view ref);

// gzip (RFC 1952) compression and decompression with zlib; gunzip returns nullopt on
// corrupt or truncated input, or when the output would exceed `max_output` bytes.
std::string gzip_compress(std::string_view data);
std::optional<std::string> gunzip(std::string_view data, std::size_t max_output = 256u << 20);

}  // namespace sizeguard
