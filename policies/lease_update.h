// Read-modify-write of one coordination.k8s.io/v1 Lease with compare-and-swap on its
// resourceVersion, as controllers update shared state: change budgets, change reasons and GPU
// reservations live in Leases so that every webhook replica sees the same numbers and a
// restart loses nothing.
#pragma once

#include <functional>
#include <optional>
#include <cstdint>
#include <string>
#include <string_view>

#include "policies/cluster_state.h"
#include "kube/review.h"

namespace sizeguard {

class KubeClient;

enum class LeaseEdit { Write, Stop };

struct LeaseUpdate {
  std::string namespace_;
  std::string name;                 // sizeguard-<what>-<hash>
  std::string key_annotation;       // names what the Lease counts, for people reading it
  std::string key;
  int max_attempts = 8;
  bool jitter = false;              // many writers on one Lease: spread the retries
  bool create_if_missing = true;    // false: a missing Lease means nothing to change
};

// Reads the Lease (a new, empty one when it does not exist yet), lets `edit` change its
// annotations, and writes it back at the resourceVersion it was read at; on 409 (another
// writer was first) reads and edits again. `edit` returns Stop to end without writing.
// nullopt when written or stopped; the error names the Lease and the failed call.
std::optional<ClusterStateError> update_lease(KubeClient& client, const LeaseUpdate& update,
                                              const std::function<LeaseEdit(Json& lease)>& edit);

// The annotation `name` of a Lease as read (empty when absent).
std::string lease_annotation(const Json& lease, const char* name);

// FNV-1a: the same across processes and versions (std::hash is neither guaranteed), so
// every replica derives the same Lease name from a key.
uint64_t fnv1a64(std::string_view text);
// fnv1a64 as 16 hex digits: Lease names, change-reason ids.
std::string stable_hash_hex(const std::string& key);

}  // namespace sizeguard
