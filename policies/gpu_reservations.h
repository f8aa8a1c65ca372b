// GPU namespace totals that hold under concurrent admissions. Counting the pods that
// exist is not enough: a pod admitted a moment ago is not created yet, so two replicas
// (or two workers) admitting at once would each miss the other's pod. Each admitted GPU
// pod therefore leaves a reservation in a coordination.k8s.io/v1 Lease per (policy,
// namespace), written with compare-and-swap on resourceVersion like change budgets; a
// pod's reservation stops counting once the pod is visible, and lapses after a TTL when
// the pod never appears (denied by a later webhook or by the apiserver, a failed create).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "policies/api_cluster_state.h"
#include "policies/cluster_state.h"
#include "policies/engine.h"
#include "policies/lease_update.h"
#include "kube/review.h"

namespace sizeguard {

class KubeClient;
class Metrics;

// A Pending or Running pod of the namespace that holds GPUs (as a policy counts them).
struct GpuPod {
  std::string uid;            // metadata.uid: tells a re-created StatefulSet pod from its predecessor
  std::string name;
  std::string generate_name;  // metadata.generateName, kept on the object after the name is generated
  double gpus = 0;
};

GpuPod gpu_pod(const Json& pod, double gpus);

// The namespace's active pods that hold GPUs by `rule`.
StateResult<std::vector<GpuPod>> list_gpu_pods(ClusterState& state, const std::string& ns, const GpuRule& rule);

// GPUs held for an admitted pod until it is visible or the reservation expires.
struct GpuReservation {
  std::string id;          // the admission request's uid: what a refund names
  std::string pod;         // the pod's name, or its generateName prefix when `generated`
  bool generated = false;
  double gpus = 0;
  int64_t expires = 0;     // epoch seconds
};

// What one Lease holds.
struct GpuLedger {
  std::vector<GpuReservation> reservations;
  // Short ids (gpu_pod_id) of the GPU pods writers have seen, with when they last saw
  // them: a pod not in here appeared since, so it is the pod of some reservation.
  std::map<std::string, int64_t> seen;
};

// The count at `now`, a pure function of the ledger and the visible pods.
struct GpuTally {
  double in_pods = 0;          // active pods
  double reserved = 0;         // unexpired reservations whose pods are not visible yet
  std::vector<bool> consumed;  // parallel to ledger.reservations: a pod that appeared took its place
};

// 8 hex digits of the pod's uid (its name if it has none). A collision can only make a
// new pod look already seen, which keeps a reservation counted: never an undercount.
std::string gpu_pod_id(const GpuPod& pod);

// Each pod not in ledger.seen takes the place of one unexpired reservation with the same
// GPUs and the same name (or, for a generated name, the same generateName prefix): pods of
// one generateName and size are interchangeable, so it does not matter whose it was.
GpuTally tally_gpus(const GpuLedger& ledger, const std::vector<GpuPod>& pods, int64_t now);

// The ledger a writer leaves: expired and consumed reservations dropped, `pods` recorded
// as seen at `now` (entries of pods no longer visible kept for `ttl_seconds`, so a writer
// whose view lags cannot make a pod look new twice).
GpuLedger next_gpu_ledger(const GpuLedger& ledger, const GpuTally& tally, const std::vector<GpuPod>& pods,
                          int64_t now, int64_t ttl_seconds);

// Reads and writes the ledger in a Lease's annotations (an unreadable value is empty).
GpuLedger read_gpu_ledger(const Json& lease);
void write_gpu_ledger(Json& lease, const GpuLedger& ledger);

struct GpuReservationCheck {
  bool fits = true;
  bool recorded = false;
  double in_pods = 0;   // besides the pod in hand
  double reserved = 0;
};

class GpuReservationStore {
 public:
  virtual ~GpuReservationStore() = default;
  // Reads the ledger, then lists the pods, and counts the pods plus the reservations of
  // pods not visible yet. When `record` and the pod fits (or, outside enforce mode, the pod
  // is admitted anyway), records reservation `id` in a compare-and-swap write.
  virtual StateResult<GpuReservationCheck> try_reserve(const GpuCharge& charge, const std::string& id,
                                                       std::chrono::system_clock::time_point now, bool record) = 0;
  // Takes back reservation `id` (the decision denied after all).
  virtual std::optional<ClusterStateError> refund(const GpuCharge& charge, const std::string& id) = 0;
};

// Counts like `inner` but never writes: for `sizeguard review`, which must not hold GPUs
// of a live cluster for pods it only looks at.
class CheckOnlyGpuReservationStore : public GpuReservationStore {
 public:
  explicit CheckOnlyGpuReservationStore(GpuReservationStore& inner) : inner_(inner) {}
  StateResult<GpuReservationCheck> try_reserve(const GpuCharge& charge, const std::string& id,
                                               std::chrono::system_clock::time_point now, bool) override {
    return inner_.try_reserve(charge, id, now, false);
  }
  std::optional<ClusterStateError> refund(const GpuCharge&, const std::string&) override { return std::nullopt; }

 private:
  GpuReservationStore& inner_;
};

inline constexpr std::chrono::seconds kGpuReservationTtl{120};

// One Lease per (policy, namespace) in `namespace_` (the webhook's own, where users cannot
// edit it), named sizeguard-gpu-<hash>. The pods are listed from the API, uncached, after
// each read of the Lease: a writer drops a reservation once it sees the pod, so only a list
// at least as fresh as the Lease is sure to show that pod. Whatever ClusterState the engine
// reads (a watch cache may lag behind the Lease) is not enough here.
class LeaseGpuReservationStore : public GpuReservationStore {
 public:
  // The TTL must exceed the apiserver's request timeout (60 s): a pod is created within it
  // or never.
  LeaseGpuReservationStore(KubeClient& client, std::string namespace_, std::chrono::seconds ttl = kGpuReservationTtl,
                           int max_attempts = 32);
  StateResult<GpuReservationCheck> try_reserve(const GpuCharge& charge, const std::string& id,
                                               std::chrono::system_clock::time_point now, bool record) override;
  std::optional<ClusterStateError> refund(const GpuCharge& charge, const std::string& id) override;
  static std::string lease_name(const std::string& policy, const std::string& ns);

 private:
  LeaseUpdate lease_for(const GpuCharge& charge) const;
  KubeClient& client_;
  ApiClusterState fresh_pods_;  // nothing cached
  std::string namespace_;
  int64_t ttl_seconds_;
  int max_attempts_;
};

// What reserve_gpus did: what to refund if the decision denies after all, and the
// sizeguard_gpu_reservations_total results.
struct GpuReservationRun {
  std::vector<size_t> reserved;      // indexes into decision.gpu_charges
  std::vector<std::string> results;  // reserved, exceeded, checked, error, refunded
};

// Reserves the decision's GPU charges if the decision allows the pod; a charge that no
// longer fits becomes a GPUQuotaExceeded finding (denying in enforce mode), a Lease that
// cannot be read or written a ClusterStateUnavailable one (onClusterStateError), and then
// everything reserved is refunded. Dry runs are checked, never reserved.
GpuReservationRun reserve_gpus(Decision& decision, GpuReservationStore& store, const AdmissionRequest& request,
                               std::chrono::system_clock::time_point now);
// Call once the decision is final (after change budgets): refunds if it now denies.
void settle_gpu_reservations(GpuReservationRun& run, Decision& decision, GpuReservationStore& store,
                             const AdmissionRequest& request);

void describe_gpu_reservation_metrics(Metrics& metrics);
void count_gpu_reservations(const GpuReservationRun& run, Metrics& metrics);

}  // namespace sizeguard
