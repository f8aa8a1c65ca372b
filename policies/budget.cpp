#include "policies/budget.h"

#include <algorithm>

#include "policies/lease_update.h"

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
  Json parsed = Json::parse(lease_annotation(lease, kEventsAnnotation), nullptr, false);
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

std::string describe_window(int64_t seconds) {
  if (seconds % 86400 == 0) return std::to_string(seconds / 86400) + "d";
  if (seconds % 3600 == 0) return std::to_string(seconds / 3600) + "h";
  if (seconds % 60 == 0) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds) + "s";
}

}  // namespace

LeaseBudgetStore::LeaseBudgetStore(KubeClient& client, std::string namespace_, int max_attempts)
    : client_(client), namespace_(std::move(namespace_)), max_attempts_(max_attempts) {}

LeaseUpdate LeaseBudgetStore::lease_for(const std::string& scope, const std::string& key) const {
  return {namespace_, lease_name(scope, key), kKeyAnnotation, scope + "/" + key, max_attempts_};
}

std::string LeaseBudgetStore::lease_name(const std::string& scope, const std::string& key) {
  return "sizeguard-budget-" + scope + "-" + stable_hash_hex(scope + "/" + key);
}

StateResult<BudgetSpend> LeaseBudgetStore::try_spend(const std::string& scope, const std::string& key,
                                                     const BudgetLimit& limit, std::chrono::system_clock::time_point now,
                                                     const std::string& event_id, bool record) {
  const int64_t now_s = epoch_seconds(now);
  BudgetSpend spend;
  auto error = update_lease(client_, lease_for(scope, key), [&](Json& lease) {
    std::vector<Event> events = read_events(lease);
    std::erase_if(events, [&](const Event& e) { return e.time <= now_s - limit.window_seconds; });
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.time < b.time; });
    spend = BudgetSpend{};
    spend.used = static_cast<int64_t>(events.size());
    // Already recorded: a write of ours landed but its answer was lost (the client resends a
    // PUT that died on a stale connection, which then conflicts), or the apiserver called
    // this webhook again for the same request.
    if (record && std::any_of(events.begin(), events.end(), [&](const Event& e) { return e.id == event_id; })) {
      return LeaseEdit::Stop;
    }
    if (spend.used >= limit.changes) {
      spend.allowed = false;
      spend.retry_after_seconds =
          events.empty() ? limit.window_seconds : std::max<int64_t>(1, events.front().time + limit.window_seconds - now_s);
      return LeaseEdit::Stop;
    }
    spend.used += 1;
    if (!record) return LeaseEdit::Stop;
    events.push_back({now_s, event_id});
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(events);
    return LeaseEdit::Write;
  });
  if (error) return *error;
  return spend;
}

std::optional<ClusterStateError> LeaseBudgetStore::refund(const std::string& scope, const std::string& key,
                                                          const std::string& event_id) {
  LeaseUpdate update = lease_for(scope, key);
  update.create_if_missing = false;
  return update_lease(client_, update, [&](Json& lease) {
    std::vector<Event> events = read_events(lease);
    if (std::erase_if(events, [&](const Event& e) { return e.id == event_id; }) == 0) return LeaseEdit::Stop;
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(events);
    return LeaseEdit::Write;
  });
}

StateResult<bool> LeaseBudgetStore::use_reason(const std::string& key, const std::string& reason_id,
                                               std::chrono::system_clock::time_point now, bool record) {
  bool unused = true;
  auto error = update_lease(client_, lease_for("reason", key), [&](Json& lease) {
    std::vector<Event> used = read_events(lease);
    // After a 409 this may find the reason claimed by the writer that was first.
    unused = std::none_of(used.begin(), used.end(), [&](const Event& e) { return e.id == reason_id; });
    if (!unused || !record) return LeaseEdit::Stop;
    used.push_back({epoch_seconds(now), reason_id});
    std::stable_sort(used.begin(), used.end(), [](const Event& a, const Event& b) { return a.time < b.time; });
    if (used.size() > kRememberedReasons) used.erase(used.begin(), used.end() - kRememberedReasons);
    lease["metadata"]["annotations"][kEventsAnnotation] = write_events(used);
    return LeaseEdit::Write;
  });
  if (error) return *error;
  return unused;
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
        finding.cause = state_unavailable_cause("change reason for policy " + claim.policy + " was not checked",
                                                error->message, claim.deny_on_state_error);
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
      finding.cause = state_unavailable_cause("change budget of policy " + charge.policy + " was not evaluated",
                                              error->message, charge.deny_on_state_error);
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
