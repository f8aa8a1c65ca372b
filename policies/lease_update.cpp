#include "policies/lease_update.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <thread>

#include "kube/kubeapi.h"

namespace sizeguard {
namespace {

std::string leases_path(const std::string& ns) {
  return "/apis/coordination.k8s.io/v1/namespaces/" + kube_path_escape(ns) + "/leases";
}

std::string error_of(const KubeResponse& response) {
  return response.transport_error.empty() ? kube_error_summary(response.status, response.body) : response.transport_error;
}

// Spreads writers that lost a compare-and-swap so they do not collide again in lockstep.
void backoff(int attempt) {
  thread_local std::minstd_rand random{std::random_device{}()};
  const int ceiling = 1 << std::min(attempt, 5);  // up to 32 ms
  std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, ceiling)(random)));
}

Json new_lease(const LeaseUpdate& update) {
  return {{"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata",
           {{"name", update.name},
            {"namespace", update.namespace_},
            {"labels", {{"app.kubernetes.io/managed-by", "sizeguard"}}},
            {"annotations", Json::object()}}},
          {"spec", Json::object()}};
}

}  // namespace

std::optional<ClusterStateError> update_lease(KubeClient& client, const LeaseUpdate& update,
                                              const std::function<LeaseEdit(Json& lease)>& edit) {
  const std::string& name = update.name;
  const std::string path = leases_path(update.namespace_) + "/" + name;
  for (int attempt = 0; attempt < update.max_attempts; ++attempt) {
    if (attempt > 0 && update.jitter) backoff(attempt);
    KubeResponse got = client.request("GET", path);
    if (!got.transport_error.empty()) return ClusterStateError{"GET lease " + name + ": " + got.transport_error};
    Json lease;
    const bool exists = got.status == 200;
    if (exists) {
      lease = Json::parse(got.body, nullptr, false);
      if (!lease.is_object()) return ClusterStateError{"GET lease " + name + ": answer is not a JSON object"};
    } else if (got.status != 404) {
      return ClusterStateError{"GET lease " + name + ": " + error_of(got)};
    } else if (!update.create_if_missing) {
      return std::nullopt;
    } else {
      lease = new_lease(update);
    }
    if (!lease["metadata"]["annotations"].is_object()) lease["metadata"]["annotations"] = Json::object();
    if (edit(lease) == LeaseEdit::Stop) return std::nullopt;
    lease["metadata"]["annotations"][update.key_annotation] = update.key;
    KubeResponse wrote = exists ? client.request("PUT", path, lease.dump())
                                : client.request("POST", leases_path(update.namespace_), lease.dump());
    if (!wrote.transport_error.empty()) return ClusterStateError{"write lease " + name + ": " + wrote.transport_error};
    if (wrote.status == 200 || wrote.status == 201) return std::nullopt;
    if (wrote.status != 409) return ClusterStateError{"write lease " + name + ": " + error_of(wrote)};
    // 409: Conflict on PUT, AlreadyExists on POST: another writer was first; read again.
  }
  return ClusterStateError{"lease " + name + ": still conflicting after " + std::to_string(update.max_attempts) +
                           " attempts"};
}

std::string lease_annotation(const Json& lease, const char* name) {
  if (!lease.is_object()) return "";
  const Json& annotations = lease.value("metadata", Json::object()).value("annotations", Json::object());
  auto it = annotations.find(name);
  return it != annotations.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t fnv1a64(std::string_view text) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string stable_hash_hex(const std::string& key) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(fnv1a64(key)));
  return buffer;
}

}  // namespace sizeguard
