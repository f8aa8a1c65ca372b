#include "policies/budget.h"

#include <algorithm>
#include <cstdio>

#include "webhook/kubeapi.h"

namespace sizeguard {
namespace {

constexpr const char* kKeyAnnotation = "sizeguard.io/budget-key";
constexpr const char* kEventsAnnotation = "sizeguard.io/budget-events";

int64_t epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

struct Event {
  int64_t time = 0;
  std::string id;
};

// Events are kept as [[epochSeconds, "id"], ...] in an annotation (Lease spec has no
// free-form field); an unreadable value counts as empty rather than blocking every change.
std::vector<Event> read_events(const Json& lease) {
  std::vector<Event> events;
  if (!lease.is_object()) return events;  // no Lease yet
  const Json& annotations = lease.value("metadata", Json::object()).value("annotations", Json::object());
  auto it = annotations.find(kEventsAnnotation);
  if (it == annotations.end() || !it->is_string()) return events;
  Json parsed = Json::parse(it->get<std::string>(), nullptr, false);
  if (!parsed.is_array()) return events;
  for (const auto& e : parsed) {
    if (e.is_array() && e.size() == 2 && e[0].is_number_integer() && e[1].is_string()) {
      events.push_back({e[0].get<int64_t>(), e[1].get<std::string>()});
    }
  }
  return events;
}

std::string write_events(const std::vector<Event>& events) {
  Json out = Json::array();
  for (const auto& e : events) out.push_back({e.time, e.id});
  return out.dump();
}

std::string leases_path(const std::string& ns) {
  return "/apis/coordination.k8s.io/v1/namespaces/" + kube_path_escape(ns) + "/leases";
}

std::string describe_window(int64_t seconds) {
  if (seconds % 86400 == 0) return std::to_string(seconds / 86400) + "d";
  if (seconds % 3600 == 0) return std::to_string(seconds / 3600) + "h";
  if (seconds % 60 == 0) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds) + "s";
}

}  // namespace

LeaseBudgetStore::LeaseBudgetStore(KubeClient& client, std::string namespace_, int max_attempts)
    : client_(client), namespace_(std::move(namespace_)), max_attempts_(max_attempts) {}

std::string LeaseBudgetStore::lease_name(const std::string& scope, const std::string& key) {
  // FNV-1a: stable across processes and versions (std::hash is neither guaranteed).
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : scope + "/" + key) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(hash));
  return "sizeguard-budget-" + scope + "-" + buffer;
}

StateResult<BudgetSpend> LeaseBudgetStore::try_spend(const std::string& scope, const std::string& key,
                                                     const BudgetLimit& limit, std::chrono::system_clock::time_point now,
                                                     const std::string& event_id, bool record) {
  const std::string name = lease_name(scope, key);
  const std::string path = leases_path(namespace_) + "/" + name;
  const int64_t now_s = epoch_seconds(now);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    KubeResponse got = client_.request("GET", path);
    if (!got.transport_error.empty()) return ClusterStateError{"GET lease " + name + ": " + got.transport_error};
    Json lease;
    bool exists = false;
    if (got.status == 200) {
      lease = Json::parse(got.body, nullptr, false);
      if (lease.is_discarded()) return ClusterStateError{"GET lease " + name + ": answer is not JSON"};
      exists = true;
    } else if (got.status != 404) {
      return ClusterStateError{"GET lease " + name + ": " + kube_error_summary(got.status, got.body)};
    }
    std::vector<Event> events = read_events(lease);
    std::erase_if(events, [&](const Event& e) { return e.time <= now_s - limit.window_seconds; });
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.time < b.time; });
    BudgetSpend spend;
    spend.used = static_cast<int64_t>(events.size());
    // Already recorded: a write of ours landed but its answer was lost (the client resends a
    // PUT that died on a stale connection, which then conflicts), or the apiserver called
    // this webhook again for the same request.
    if (record && std::any_of(events.begin(), events.end(), [&](const Event& e) { return e.id == event_id; })) {
      return spend;
    }
    if (spend.used >= limit.changes) {
      spend.allowed = false;
      spend.retry_after_seconds =
          events.empty() ? limit.window_seconds : std::max<int64_t>(1, events.front().time + limit.window_seconds - now_s);
      return spend;
    }
    spend.used += 1;
    if (!record) return spend;
    events.push_back({now_s, event_id});

    if (!exists) {
      lease = {{"apiVersion", "coordination.k8s.io/v1"},
               {"kind", "Lease"},
               {"metadata",
                {{"name", name},
                 {"namespace", namespace_},
                 {"labels", {{"app.kubernetes.io/managed-by", "sizeguard"}}},
                 {"annotations", Json::object()}}},
               {"spec", Json::object()}};
    }
    lease["metadata"]["annotations"][kKeyAnnotation] = scope + "/" + key;
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(events);
    KubeResponse wrote = exists ? client_.request("PUT", path, lease.dump()) : client_.request("POST", leases_path(namespace_), lease.dump());
    if (!wrote.transport_error.empty()) return ClusterStateError{"write lease " + name + ": " + wrote.transport_error};
    if (wrote.status == 200 || wrote.status == 201) return spend;
    if (wrote.status == 409) continue;  // another replica wrote first: re-read and re-count
    return ClusterStateError{"write lease " + name + ": " + kube_error_summary(wrote.status, wrote.body)};
  }
  return ClusterStateError{"lease " + name + ": still conflicting after " + std::to_string(max_attempts_) + " attempts"};
}

std::optional<ClusterStateError> LeaseBudgetStore::refund(const std::string& scope, const std::string& key,
                                                          const std::string& event_id) {
  const std::string name = lease_name(scope, key);
  const std::string path = leases_path(namespace_) + "/" + name;
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    KubeResponse got = client_.request("GET", path);
    if (got.status == 404) return std::nullopt;
    if (!got.transport_error.empty() || got.status != 200) {
      return ClusterStateError{"GET lease " + name + ": " +
                               (got.transport_error.empty() ? kube_error_summary(got.status, got.body) : got.transport_error)};
    }
    Json lease = Json::parse(got.body, nullptr, false);
    std::vector<Event> events = read_events(lease);
    const size_t before = events.size();
    std::erase_if(events, [&](const Event& e) { return e.id == event_id; });
    if (events.size() == before) return std::nullopt;
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(events);
    KubeResponse wrote = client_.request("PUT", path, lease.dump());
    if (wrote.status == 200) return std::nullopt;
    if (wrote.status != 409) {
      return ClusterStateError{"refund lease " + name + ": " +
                               (wrote.transport_error.empty() ? kube_error_summary(wrote.status, wrote.body) : wrote.transport_error)};
    }
  }
  return ClusterStateError{"refund lease " + name + ": still conflicting"};
}

StateResult<bool> LeaseBudgetStore::use_reason(const std::string& key, const std::string& reason_id,
                                               std::chrono::system_clock::time_point now, bool record) {
  const std::string scope = "reason";
  const std::string name = lease_name(scope, key);
  const std::string path = leases_path(namespace_) + "/" + name;
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    KubeResponse got = client_.request("GET", path);
    if (!got.transport_error.empty()) return ClusterStateError{"GET lease " + name + ": " + got.transport_error};
    Json lease;
    const bool exists = got.status == 200;
    if (exists) {
      lease = Json::parse(got.body, nullptr, false);
      if (lease.is_discarded()) return ClusterStateError{"GET lease " + name + ": answer is not JSON"};
    } else if (got.status != 404) {
      return ClusterStateError{"GET lease " + name + ": " + kube_error_summary(got.status, got.body)};
    }
    std::vector<Event> used = read_events(lease);
    if (std::any_of(used.begin(), used.end(), [&](const Event& e) { return e.id == reason_id; })) return false;
    if (!record) return true;
    used.push_back({epoch_seconds(now), reason_id});
    std::stable_sort(used.begin(), used.end(), [](const Event& a, const Event& b) { return a.time < b.time; });
    if (used.size() > kRememberedReasons) used.erase(used.begin(), used.end() - kRememberedReasons);
    if (!exists) {
      lease = {{"apiVersion", "coordination.k8s.io/v1"},
               {"kind", "Lease"},
               {"metadata",
                {{"name", name},
                 {"namespace", namespace_},
                 {"labels", {{"app.kubernetes.io/managed-by", "sizeguard"}}},
                 {"annotations", Json::object()}}},
               {"spec", Json::object()}};
    }
    lease["metadata"]["annotations"][kKeyAnnotation] = scope + "/" + key;
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(used);
    KubeResponse wrote = exists ? client_.request("PUT", path, lease.dump()) : client_.request("POST", leases_path(namespace_), lease.dump());
    if (!wrote.transport_error.empty()) return ClusterStateError{"write lease " + name + ": " + wrote.transport_error};
    if (wrote.status == 200 || wrote.status == 201) return true;
    if (wrote.status == 409) continue;  // another replica wrote first, maybe this very reason: re-read
    return ClusterStateError{"write lease " + name + ": " + kube_error_summary(wrote.status, wrote.body)};
  }
  return ClusterStateError{"lease " + name + ": still conflicting after " + std::to_string(max_attempts_) + " attempts"};
}

void spend_budgets(Decision& decision, BudgetStore& store, const AdmissionRequest& request,
                   std::chrono::system_clock::time_point now) {
  if ((decision.budget_charges.empty() && decision.reason_claims.empty()) || !decision.allowed()) return;
  struct Spent {
    std::string scope, key, id;
  };
  std::vector<Spent> spent;
  bool denied = false;

  // Reasons first: a change whose reason was used before spends no budget.
  std::vector<std::pair<std::string, std::string>> redeemed;  // by this change, for several policies
  for (const auto& claim : decision.reason_claims) {
    Finding finding;
    finding.policy = claim.policy;
    finding.rule = "changeReason";
    finding.mode = claim.mode;
    const std::pair<std::string, std::string> identity{claim.key, claim.id};
    std::string outcome = "pass";
    if (std::find(redeemed.begin(), redeemed.end(), identity) == redeemed.end()) {
      const bool record = !request.dry_run && !denied;
      auto result = store.use_reason(claim.key, claim.id, now, record);
      if (auto* error = std::get_if<ClusterStateError>(&result)) {
        finding.denies = claim.mode == Mode::Enforce && claim.deny_on_state_error;
        finding.cause = {"ClusterStateUnavailable",
                         "change reason for policy " + claim.policy + " was not checked: cluster state unavailable (" +
                             error->message + ")" + (claim.deny_on_state_error ? "; onClusterStateError: deny" : ""),
                         ""};
        outcome = finding.denies ? "deny" : "error";
      } else if (!std::get<bool>(result)) {
        finding.denies = claim.mode == Mode::Enforce;
        finding.cause = {"ChangeReasonReused",
                         "the " + claim.annotation + " annotation on " + claim.where +
                             " already justified an earlier change; set a new reason for this one" + claim.stale +
                             " (policy " + claim.policy + "); annotation=" + claim.annotation,
                         "metadata.annotations[" + claim.annotation + "]"};
        outcome = finding.denies ? "deny" : std::string(to_string(claim.mode));
      } else {
        redeemed.push_back(identity);
        if (record) spent.push_back({"reason", claim.key, claim.id});
      }
      if (outcome != "pass") decision.findings.push_back(std::move(finding));
    }
    decision.outcomes.push_back({claim.policy, "changeReason", claim.mode, outcome});
    denied = denied || outcome == "deny";
  }
  for (const auto& charge : decision.budget_charges) {
    Finding finding;
    finding.policy = charge.policy;
    finding.rule = "budget";
    finding.mode = charge.mode;
    // After a denial the change will not happen: later budgets are only checked.
    const bool record = !request.dry_run && !denied;
    auto result = store.try_spend(charge.scope, charge.key, charge.limit, now, request.uid, record);
    std::string outcome = "pass";
    if (auto* error = std::get_if<ClusterStateError>(&result)) {
      finding.denies = charge.mode == Mode::Enforce && charge.deny_on_state_error;
      finding.cause = {"ClusterStateUnavailable",
                       "change budget of policy " + charge.policy + " was not evaluated: cluster state unavailable (" +
                           error->message + ")" + (charge.deny_on_state_error ? "; onClusterStateError: deny" : ""),
                       ""};
      outcome = finding.denies ? "deny" : "error";
      decision.findings.push_back(std::move(finding));
    } else if (const auto& spend = std::get<BudgetSpend>(result); !spend.allowed) {
      finding.denies = charge.mode == Mode::Enforce;
      finding.cause = {"ChangeBudgetExceeded",
                       charge.scope + " " + charge.key + " has used its budget of " + std::to_string(charge.limit.changes) +
                           " changes per " + describe_window(charge.limit.window_seconds) + " (policy " + charge.policy +
                           "); retryAfterSeconds=" + std::to_string(spend.retry_after_seconds),
                       ""};
      outcome = finding.denies ? "deny" : std::string(to_string(charge.mode));
      decision.findings.push_back(std::move(finding));
    } else if (record) {
      spent.push_back({charge.scope, charge.key, request.uid});
    }
    decision.outcomes.push_back({charge.policy, "budget:" + charge.scope, charge.mode, outcome});
    denied = denied || outcome == "deny";
  }
  if (denied) {
    for (const auto& s : spent) {
      if (auto error = store.refund(s.scope, s.key, s.id)) {
        decision.notes.push_back("could not take back a change budget or reason: " + error->message);
      }
    }
  }
}

}  // namespace sizeguard
