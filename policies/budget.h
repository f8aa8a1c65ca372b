// Change budgets: at most N changes per workload or per actor in a sliding window, counted
// where every webhook replica sees the same numbers and restarts lose nothing: Leases in
// the Kubernetes API, updated with optimistic concurrency on resourceVersion.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "policies/cluster_state.h"
#include "policies/engine.h"
#include "policies/lease_update.h"
#include "kube/review.h"

namespace sizeguard {

class KubeClient;

struct BudgetSpend {
  bool allowed = true;
  int64_t used = 0;                 // changes in the window (including this one when allowed)
  int64_t retry_after_seconds = 0;  // when not allowed: until the oldest change leaves the window
};

class BudgetStore {
 public:
  virtual ~BudgetStore() = default;
  // If fewer than limit.changes events of (scope, key) lie in the window ending at `now`,
  // records `event_id` (unless `record` is false, for dry runs) and allows.
  virtual StateResult<BudgetSpend> try_spend(const std::string& scope, const std::string& key, const BudgetLimit& limit,
                                             std::chrono::system_clock::time_point now, const std::string& event_id,
                                             bool record) = 0;
  // Takes back an event recorded by try_spend (when a later budget of the same change
  // said no: a denied change spends nothing), or a reason recorded by use_reason
  // (scope "reason").
  virtual std::optional<ClusterStateError> refund(const std::string& scope, const std::string& key,
                                                  const std::string& event_id) = 0;
  // Whether the change reason `reason_id` is still unused for the workload `key`; if so,
  // records it as used (unless `record` is false, for dry runs) so it justifies no other
  // change. The most recent kRememberedReasons reasons per workload are kept.
  virtual StateResult<bool> use_reason(const std::string& key, const std::string& reason_id,
                                       std::chrono::system_clock::time_point now, bool record) = 0;
  static constexpr size_t kRememberedReasons = 32;
};

// One coordination.k8s.io/v1 Lease per (scope, key) in `namespace_`, named
// sizeguard-budget-<hash>; its annotations hold the key and the recent events.
class LeaseBudgetStore : public BudgetStore {
 public:
  LeaseBudgetStore(KubeClient& client, std::string namespace_, int max_attempts = 8);
  StateResult<BudgetSpend> try_spend(const std::string& scope, const std::string& key, const BudgetLimit& limit,
                                     std::chrono::system_clock::time_point now, const std::string& event_id,
                                     bool record) override;
  std::optional<ClusterStateError> refund(const std::string& scope, const std::string& key,
                                          const std::string& event_id) override;
  StateResult<bool> use_reason(const std::string& key, const std::string& reason_id,
                               std::chrono::system_clock::time_point now, bool record) override;
  static std::string lease_name(const std::string& scope, const std::string& key);

 private:
  LeaseUpdate lease_for(const std::string& scope, const std::string& key) const;
  KubeClient& client_;
  std::string namespace_;
  int max_attempts_;
};

// Redeems the decision's change reasons and spends its budget charges if the decision
// allows the change; a reason already used becomes a ChangeReasonReused finding and a
// charge over its budget a ChangeBudgetExceeded one (each denying in enforce mode), and
// then everything this change already recorded is taken back. Dry runs are checked,
// never recorded.
void spend_budgets(Decision& decision, BudgetStore& store, const AdmissionRequest& request,
                   std::chrono::system_clock::time_point now);

}  // namespace sizeguard
