// The background audit in `serve`: on an interval (and when the policies or the
// recommendations snapshot change) the replica holding a leader Lease lists the workloads
// that exist, judges each with admission's decision code (existing_audit.h) and writes the
// findings as wgpolicyk8s.io/v1alpha2 PolicyReports: one per namespace (a
// ClusterPolicyReport for cluster-scoped objects), named kPolicyReportName, labelled
// app.kubernetes.io/managed-by=sizeguard, updated in place and deleted when nothing is left.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "webhook/app/existing_audit.h"
#include "kube/kubeapi.h"
#include "kube/metrics.h"

namespace sizeguard {

inline constexpr const char* kPolicyReportName = "sizeguard-audit";
inline constexpr const char* kPolicyReportApi = "/apis/wgpolicyk8s.io/v1alpha2";

// --- pure: audits → reports ------------------------------------------------------------

// PolicyReport objects by namespace ("" = the ClusterPolicyReport) for the judged objects:
// every rule that applied (pass too), and right-sizing as rule "rightsizing" with the
// properties current, recommended, savings, coldStart and confidence. Results are sorted,
// so the same findings make the same object. Namespaces without results have no entry.
std::map<std::string, Json> build_policy_reports(const std::vector<ObjectAudit>& audits);

// sizeguard_audit_violations: objects per (policy, rule, namespace) with a fail or warn result,
// right-sizing (rule "rightsizing") when it would change an object, as its report result says.
using ViolationKey = std::tuple<std::string, std::string, std::string>;
std::map<ViolationKey, int> count_violations(const std::vector<ObjectAudit>& audits);

// --- the Kubernetes API ------------------------------------------------------------------

// Every object of a collection ("/apis/apps/v1/deployments"), LISTed in pages.
std::variant<std::vector<Json>, std::string> list_all(KubeClient& client, const std::string& collection,
                                                      int page_size = 500);

struct ReportSync {
  int created = 0, updated = 0, unchanged = 0, deleted = 0;
  std::vector<std::string> errors;  // one per failed call, naming the report
};

// Makes the reports sizeguard manages equal `desired`: creates the missing, replaces the
// changed ones at the resourceVersion read (409: read again and retry), deletes the ones
// (with our label) of namespaces no longer in `desired`, and leaves equal ones alone.
ReportSync sync_policy_reports(KubeClient& client, const std::map<std::string, Json>& desired);

// A coordination.k8s.io/v1 Lease as leader election (client-go's leaderelection):
// spec.holderIdentity, renewTime, leaseDurationSeconds; writes with compare-and-swap.
struct LeaderLease {
  std::string namespace_;
  std::string name = "sizeguard-audit-leader";
  std::string identity;  // this replica: "<hostname>_<random>"
  std::chrono::seconds duration{30};
};
// What a replica last saw of another holder's Lease. As client-go's leader election, expiry
// is judged on this replica's own clock, from when the record (holder, renewTime) last
// changed, never by comparing its clock with the holder's renewTime: clocks may disagree.
struct LeaseObservation {
  std::string record;
  std::chrono::steady_clock::time_point at;
};
// Acquires the Lease when free, released, or unchanged for leaseDurationSeconds since this
// replica first saw it (`observed`, updated here); renews it when held by `identity`. `now`
// is written as acquireTime/renewTime. true: this replica leads for the next
// leaseDurationSeconds; a string: the call failed (not leading).
std::variant<bool, std::string> acquire_or_renew(KubeClient& client, const LeaderLease& lease,
                                                 std::chrono::system_clock::time_point now, LeaseObservation& observed,
                                                 std::chrono::steady_clock::time_point local_now);
// Gives the Lease up (holderIdentity cleared) if `identity` holds it, so another replica
// takes over without waiting for it to expire.
void release_leadership(KubeClient& client, const LeaderLease& lease);

// --- the loop ---------------------------------------------------------------------------

struct BackgroundAuditOptions {
  std::chrono::milliseconds interval{600'000};  // --audit-interval; 0 disables the audit
  LeaderLease lease;
  std::chrono::milliseconds renew_every{10'000};  // also how often changed inputs are noticed
  std::function<std::shared_ptr<const PolicySet>()> policies;
  std::function<RightsizingInputs()> rightsizing;  // may be empty: no right-sizing results
  // Whether the inputs may be trusted yet (serve: /readyz, i.e. policies loaded and watches
  // listed): until then the leader waits, so a replica that starts with a broken policy
  // ConfigMap never replaces good reports with empty ones.
  std::function<bool()> ready;
  ClusterState* state = nullptr;
  EvaluationOptions evaluation;  // `now` is set at each run
  Metrics* metrics = nullptr;
  int page_size = 500;
};

// The audit of the objects that exist, once, with the API and the inputs in force.
struct AuditRun {
  std::vector<ObjectAudit> audits;  // judged and skipped objects
  std::map<std::string, Json> reports;
  std::string error;  // a LIST failed: nothing was written
};
AuditRun audit_cluster(KubeClient& client, const BackgroundAuditOptions& options);

// Describes the sizeguard_audit_* metric families.
void describe_audit_metrics(Metrics& metrics);

class BackgroundAudit {
 public:
  BackgroundAudit(KubeClient& client, BackgroundAuditOptions options);
  ~BackgroundAudit();  // stop()
  BackgroundAudit(const BackgroundAudit&) = delete;
  BackgroundAudit& operator=(const BackgroundAudit&) = delete;

  void start();
  void stop();  // releases the Lease when held
  bool leader() const { return leader_; }
  std::uint64_t runs() const { return runs_; }  // audits completed (written) by this replica

 private:
  void loop();
  void run_audit();

  KubeClient& client_;
  BackgroundAuditOptions options_;
  std::atomic<bool> leader_{false};
  std::atomic<std::uint64_t> runs_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sizeguard
