#include "policies/gpu_reservations.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "policies/lease_update.h"
#include "policies/rules.h"
#include "kube/kubeapi.h"
#include "kube/metrics.h"

namespace sizeguard {
namespace {

constexpr const char* kKeyAnnotation = "sizeguard.io/gpu-quota";
constexpr const char* kReservationsAnnotation = "sizeguard.io/gpu-reservations";
constexpr const char* kSeenAnnotation = "sizeguard.io/gpu-pods-seen";

int64_t epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

bool same_gpus(double a, double b) { return std::fabs(a - b) <= rules::kGpuEpsilon; }

}  // namespace

GpuPod gpu_pod(const Json& pod, double gpus) {
  const Json& metadata = pod.value("metadata", Json::object());
  return {metadata.value("uid", std::string()), metadata.value("name", std::string()),
          metadata.value("generateName", std::string()), gpus};
}

StateResult<std::vector<GpuPod>> list_gpu_pods(ClusterState& state, const std::string& ns, const GpuRule& rule) {
  auto pods = state.active_pods(ns);
  if (auto* error = std::get_if<ClusterStateError>(&pods)) {
    return ClusterStateError{"pods in namespace " + ns + ": " + error->message};
  }
  std::vector<GpuPod> out;
  for (const auto& pod : std::get<std::vector<Json>>(pods)) {
    if (const double gpus = rules::pod_gpu_count(pod, rule); gpus > 0) out.push_back(gpu_pod(pod, gpus));
  }
  return out;
}

std::string gpu_pod_id(const GpuPod& pod) {
  const uint64_t hash = fnv1a64(pod.uid.empty() ? "name:" + pod.name : pod.uid);
  char buffer[9];
  std::snprintf(buffer, sizeof buffer, "%08x", static_cast<unsigned>(hash ^ (hash >> 32)));
  return buffer;
}

GpuTally tally_gpus(const GpuLedger& ledger, const std::vector<GpuPod>& pods, int64_t now) {
  GpuTally tally;
  tally.consumed.assign(ledger.reservations.size(), false);
  std::vector<const GpuPod*> appeared;
  for (const auto& pod : pods) {
    tally.in_pods += pod.gpus;
    if (!ledger.seen.contains(gpu_pod_id(pod))) appeared.push_back(&pod);
  }
  auto take = [&](const GpuPod& pod, bool generated) {
    const std::string& name = generated ? pod.generate_name : pod.name;
    if (name.empty()) return false;
    for (size_t i = 0; i < ledger.reservations.size(); ++i) {
      const auto& r = ledger.reservations[i];
      if (tally.consumed[i] || r.expires <= now || r.generated != generated || r.pod != name ||
          !same_gpus(r.gpus, pod.gpus)) {
        continue;
      }
      tally.consumed[i] = true;
      return true;
    }
    return false;
  };
  // A pod named explicitly matches its own reservation first; only then do the rest go
  // to reservations by generateName.
  std::vector<const GpuPod*> unmatched;
  for (const GpuPod* pod : appeared) {
    if (!take(*pod, false)) unmatched.push_back(pod);
  }
  for (const GpuPod* pod : unmatched) take(*pod, true);
  for (size_t i = 0; i < ledger.reservations.size(); ++i) {
    const auto& r = ledger.reservations[i];
    if (!tally.consumed[i] && r.expires > now) tally.reserved += r.gpus;
  }
  return tally;
}

GpuLedger next_gpu_ledger(const GpuLedger& ledger, const GpuTally& tally, const std::vector<GpuPod>& pods,
                          int64_t now, int64_t ttl_seconds) {
  GpuLedger next;
  for (size_t i = 0; i < ledger.reservations.size(); ++i) {
    const auto& r = ledger.reservations[i];
    if (r.expires > now && !(i < tally.consumed.size() && tally.consumed[i])) next.reservations.push_back(r);
  }
  for (const auto& [id, last_seen] : ledger.seen) {
    if (last_seen > now - ttl_seconds) next.seen[id] = last_seen;
  }
  for (const auto& pod : pods) next.seen[gpu_pod_id(pod)] = now;
  return next;
}

GpuLedger read_gpu_ledger(const Json& lease) {
  GpuLedger ledger;
  if (!lease.is_object()) return ledger;
  const Json& annotations = lease.value("metadata", Json::object()).value("annotations", Json::object());
  auto parsed = [&](const char* key) {
    auto it = annotations.find(key);
    return it != annotations.end() && it->is_string() ? Json::parse(it->get<std::string>(), nullptr, false) : Json();
  };
  const Json reservations = parsed(kReservationsAnnotation);
  if (reservations.is_array()) {
    for (const auto& r : reservations) {
      if (!r.is_object() || !r.value("gpus", Json()).is_number() || !r.value("expires", Json()).is_number_integer()) {
        continue;
      }
      ledger.reservations.push_back({r.value("id", std::string()), r.value("pod", std::string()),
                                     r.value("generated", false), r["gpus"].get<double>(),
                                     r["expires"].get<int64_t>()});
    }
  }
  const Json seen = parsed(kSeenAnnotation);
  if (seen.is_object()) {
    for (const auto& [id, time] : seen.items()) {
      if (time.is_number_integer()) ledger.seen[id] = time.get<int64_t>();
    }
  }
  return ledger;
}

void write_gpu_ledger(Json& lease, const GpuLedger& ledger) {
  Json reservations = Json::array();
  for (const auto& r : ledger.reservations) {
    reservations.push_back(
        {{"id", r.id}, {"pod", r.pod}, {"generated", r.generated}, {"gpus", r.gpus}, {"expires", r.expires}});
  }
  Json seen = Json::object();
  for (const auto& [id, time] : ledger.seen) seen[id] = time;
  lease["metadata"]["annotations"][kReservationsAnnotation] = reservations.dump();
  lease["metadata"]["annotations"][kSeenAnnotation] = seen.dump();
}

LeaseGpuReservationStore::LeaseGpuReservationStore(KubeClient& client, std::string namespace_, std::chrono::seconds ttl,
                                                   int max_attempts)
    : client_(client),
      fresh_pods_(client, std::chrono::milliseconds(0), std::chrono::milliseconds(0)),
      namespace_(std::move(namespace_)),
      ttl_seconds_(ttl.count()),
      max_attempts_(max_attempts) {}

std::string LeaseGpuReservationStore::lease_name(const std::string& policy, const std::string& ns) {
  return "sizeguard-gpu-" + stable_hash_hex(policy + "/" + ns);
}

LeaseUpdate LeaseGpuReservationStore::lease_for(const GpuCharge& charge) const {
  LeaseUpdate update{namespace_, lease_name(charge.policy, charge.namespace_), kKeyAnnotation,
                     charge.policy + "/" + charge.namespace_, max_attempts_};
  update.jitter = true;  // a whole ReplicaSet's pods race for one Lease
  return update;
}

StateResult<GpuReservationCheck> LeaseGpuReservationStore::try_reserve(const GpuCharge& charge, const std::string& id,
                                                                       std::chrono::system_clock::time_point now,
                                                                       bool record) {
  const int64_t now_s = epoch_seconds(now);
  GpuReservationCheck check;
  std::optional<ClusterStateError> list_error;
  auto error = update_lease(client_, lease_for(charge), [&](Json& lease) {
    GpuLedger ledger = read_gpu_ledger(lease);
    // A repeated call for the same request (the apiserver retrying) replaces its reservation.
    std::erase_if(ledger.reservations, [&](const GpuReservation& r) { return r.id == id; });
    // Listed after the read: a reservation another writer dropped because it saw the pod
    // was dropped before this read, so this list shows the pod (unless it has finished).
    // Listed before, the pod could be in neither.
    auto listed = list_gpu_pods(fresh_pods_, charge.namespace_, charge.rule);
    if (auto* failed = std::get_if<ClusterStateError>(&listed)) {
      list_error = *failed;
      return LeaseEdit::Stop;
    }
    const auto& pods = std::get<std::vector<GpuPod>>(listed);
    const GpuTally tally = tally_gpus(ledger, pods, now_s);
    check = GpuReservationCheck{};
    check.in_pods = tally.in_pods;
    check.reserved = tally.reserved;
    check.fits = tally.in_pods + tally.reserved + charge.gpus <= charge.limit + rules::kGpuEpsilon;
    if (!record || (!check.fits && charge.mode == Mode::Enforce)) return LeaseEdit::Stop;
    GpuLedger next = next_gpu_ledger(ledger, tally, pods, now_s, ttl_seconds_);
    next.reservations.push_back({id, charge.pod, charge.generated, charge.gpus, now_s + ttl_seconds_});
    write_gpu_ledger(lease, next);
    check.recorded = true;  // once the write succeeds; a conflict edits again from the start
    return LeaseEdit::Write;
  });
  if (list_error) return *list_error;
  if (error) return *error;
  return check;
}

std::optional<ClusterStateError> LeaseGpuReservationStore::refund(const GpuCharge& charge, const std::string& id) {
  LeaseUpdate update = lease_for(charge);
  update.create_if_missing = false;
  auto error = update_lease(client_, update, [&](Json& lease) {
    GpuLedger ledger = read_gpu_ledger(lease);
    if (std::erase_if(ledger.reservations, [&](const GpuReservation& r) { return r.id == id; }) == 0) {
      return LeaseEdit::Stop;  // already taken by a visible pod or expired
    }
    write_gpu_ledger(lease, ledger);
    return LeaseEdit::Write;
  });
  if (error) error->message = "refund: " + error->message;
  return error;
}

GpuReservationRun reserve_gpus(Decision& decision, GpuReservationStore& store, const AdmissionRequest& request,
                               std::chrono::system_clock::time_point now) {
  GpuReservationRun run;
  if (decision.gpu_charges.empty() || !decision.allowed()) return run;
  bool denied = false;
  for (size_t i = 0; i < decision.gpu_charges.size(); ++i) {
    const GpuCharge& charge = decision.gpu_charges[i];
    // After a denial the pod will not be created: later charges are only checked.
    const bool record = !request.dry_run && !denied;
    auto result = store.try_reserve(charge, request.uid, now, record);
    Finding finding;
    finding.policy = charge.policy;
    finding.rule = "gpu";
    finding.mode = charge.mode;
    std::string outcome;  // replaces the gpu rule's "pass" when this step finds something
    if (auto* error = std::get_if<ClusterStateError>(&result)) {
      finding.denies = charge.mode == Mode::Enforce && charge.deny_on_state_error;
      finding.cause = state_unavailable_cause("rule gpu of policy " + charge.policy + " was not evaluated",
                                              "GPU reservations: " + error->message, charge.deny_on_state_error);
      outcome = finding.denies ? "deny" : "error";
      run.results.push_back("error");
      decision.findings.push_back(std::move(finding));
    } else {
      const auto& check = std::get<GpuReservationCheck>(result);
      if (check.recorded) run.reserved.push_back(i);
      run.results.push_back(!check.fits ? "exceeded" : check.recorded ? "reserved" : "checked");
      if (!check.fits && !charge.over_limit) {  // over_limit: the engine already said so
        finding.denies = charge.mode == Mode::Enforce;
        finding.cause = {"GPUQuotaExceeded",
                         "namespace " + charge.namespace_ + ": " + rules::format_count(check.in_pods + check.reserved) +
                             " of " + rules::format_count(charge.limit) + " GPUs in use or reserved (" +
                             rules::format_count(check.in_pods) + " by pods, " + rules::format_count(check.reserved) +
                             " reserved for pods being created), this pod asks " + rules::format_count(charge.gpus) +
                             " (policy " + charge.policy + ")",
                         "spec"};
        outcome = finding.denies ? "deny" : std::string(to_string(charge.mode));
        decision.findings.push_back(std::move(finding));
      }
    }
    if (!outcome.empty()) {
      for (auto& o : decision.outcomes) {
        if (o.policy == charge.policy && o.rule == "gpu" && o.result == "pass") o.result = outcome;
      }
    }
    denied = denied || outcome == "deny";
  }
  settle_gpu_reservations(run, decision, store, request);
  return run;
}

void settle_gpu_reservations(GpuReservationRun& run, Decision& decision, GpuReservationStore& store,
                             const AdmissionRequest& request) {
  if (decision.allowed()) return;
  for (size_t i : run.reserved) {
    run.results.push_back("refunded");
    if (auto error = store.refund(decision.gpu_charges[i], request.uid)) {
      decision.notes.push_back("could not take back a GPU reservation (it lapses by itself within " +
                               std::to_string(kGpuReservationTtl.count()) + "s): " + error->message);
    }
  }
  run.reserved.clear();
}

void describe_gpu_reservation_metrics(Metrics& metrics) {
  metrics.describe("sizeguard_gpu_reservations_total", MetricType::Counter,
                   "GPU namespace-total reservations by result (reserved, exceeded, checked, error, refunded).");
}

void count_gpu_reservations(const GpuReservationRun& run, Metrics& metrics) {
  for (const auto& result : run.results) metrics.increment("sizeguard_gpu_reservations_total", {{"result", result}});
}

}  // namespace sizeguard
