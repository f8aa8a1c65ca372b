// Change budgets kept in Leases of a (fake) Kubernetes API shared by two webhook
// instances: counts hold across instances, concurrent writers meet resourceVersion
// conflicts and retry, dry runs and denied changes spend nothing.
#include <barrier>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policies/api_cluster_state.h"
#include "policies/budget.h"
#include "policies/loader.h"
#include "support/fake_apiserver.h"
#include "webhook/app/handlers.h"
#include "kube/kubeapi.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr const char* kAgent = "system:serviceaccount:ops:scaler-bot";
const std::string kLeases = "apis/coordination.k8s.io/v1";

// One webhook instance: its own API client, cluster state, budget store and context.
struct Instance {
  explicit Instance(const test::FakeApiServer& api, std::shared_ptr<const PolicySet> set)
      : client(api.client_config()), state(client), budgets(client, "sizeguard-system") {
    context.policies = [set] { return set; };
    context.cluster_state = &state;
    context.budgets = &budgets;
    context.clock = [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000)); };
  }
  KubeClient client;
  ApiClusterState state;
  LeaseBudgetStore budgets;
  AdmissionContext context;
};

std::shared_ptr<const PolicySet> budget_policy(int changes) {
  PolicyLoad load = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: agent-budget}\nspec:\n"
                                   "  automation:\n    actors: {serviceAccounts: [\"ops:*\"]}\n    changeBudget:\n"
                                   "      perWorkload: {changes: " + std::to_string(changes) + ", window: 1h}\n",
                                   "budget.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

AdmissionRequest scale_change(int serial, bool dry_run = false) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "change-" + std::to_string(serial);
  r.kind = {"apps", "v1", "Deployment"};
  r.resource = {"apps", "v1", "deployments"};
  r.namespace_ = "shop";
  r.name = "web";
  r.operation = Operation::Update;
  r.dry_run = dry_run;
  r.user_info.username = kAgent;
  auto deployment = [](int replicas) {
    return Json{{"apiVersion", "apps/v1"},
                {"kind", "Deployment"},
                {"metadata", {{"name", "web"}, {"namespace", "shop"}}},
                {"spec", {{"replicas", replicas}, {"template", {{"spec", {{"containers", Json::array()}}}}}}}};
  };
  r.old_object = deployment(3);
  r.object = deployment(4);
  return r;
}

class Budgets : public ::testing::Test {
 protected:
  void SetUp() override {
    api_.put("api/v1", "namespaces", "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "shop"}}}});
  }
  size_t events_in_lease() {
    auto lease = api_.get(kLeases, "leases", "sizeguard-system",
                          LeaseBudgetStore::lease_name("workload", "shop/Deployment/web"));
    if (!lease) return 0;
    return Json::parse((*lease)["metadata"]["annotations"]["sizeguard.io/budget-events"].get<std::string>()).size();
  }
  test::FakeApiServer api_;
};

TEST_F(Budgets, TwoInstancesShareOneCountAndDryRunsSpendNothing) {
  auto set = budget_policy(3);
  Instance a(api_, set), b(api_, set);
  EXPECT_TRUE(validate(scale_change(1), a.context).allowed);
  EXPECT_TRUE(validate(scale_change(2), b.context).allowed);
  EXPECT_TRUE(validate(scale_change(3, /*dry_run=*/true), a.context).allowed);
  EXPECT_EQ(events_in_lease(), 2u) << "a dry run must not spend";
  EXPECT_TRUE(validate(scale_change(4), a.context).allowed);
  AdmissionResponse fourth = validate(scale_change(5), b.context);
  EXPECT_FALSE(fourth.allowed);
  ASSERT_TRUE(fourth.status);
  EXPECT_EQ(fourth.status->causes.at(0).reason, "ChangeBudgetExceeded");
  EXPECT_THAT(fourth.status->message, HasSubstr("budget of 3 changes per 1h"));
  EXPECT_THAT(fourth.status->message, HasSubstr("retryAfterSeconds=3600"));
  EXPECT_EQ(events_in_lease(), 3u) << "a denied change must not spend";
  // A dry run past the budget is told so, still without spending.
  EXPECT_FALSE(validate(scale_change(6, true), a.context).allowed);
  // A restarted instance (new client, new store) sees the same count.
  Instance restarted(api_, set);
  EXPECT_FALSE(validate(scale_change(7), restarted.context).allowed);
}

// The same request spent twice (the apiserver calls again, or a resent write whose first
// copy landed) is one change, not two.
TEST_F(Budgets, OneRequestSpendsOnceWhenSeenTwice) {
  auto set = budget_policy(3);
  Instance a(api_, set), b(api_, set);
  EXPECT_TRUE(validate(scale_change(1), a.context).allowed);
  EXPECT_TRUE(validate(scale_change(1), b.context).allowed);
  EXPECT_EQ(events_in_lease(), 1u);
  EXPECT_TRUE(validate(scale_change(2), a.context).allowed);
  EXPECT_EQ(events_in_lease(), 2u);
}

TEST_F(Budgets, ConcurrentWritersConflictAndRetryWithoutOverspending) {
  // Every answer is slowed so both instances read the same resourceVersion before either
  // writes: one write wins, the other gets 409 Conflict, re-reads and finds no budget left.
  auto set = budget_policy(1);
  Instance a(api_, set), b(api_, set);
  api_.put(kLeases, "leases", "sizeguard-system",
           {{"apiVersion", "coordination.k8s.io/v1"},
            {"kind", "Lease"},
            {"metadata", {{"name", LeaseBudgetStore::lease_name("workload", "shop/Deployment/web")}}},
            {"spec", Json::object()}});
  api_.set_delay(150ms);
  api_.clear_requests();
  std::barrier start(2);
  AdmissionResponse ra, rb;
  std::thread ta([&] { start.arrive_and_wait(); ra = validate(scale_change(1), a.context); });
  std::thread tb([&] { start.arrive_and_wait(); rb = validate(scale_change(2), b.context); });
  ta.join();
  tb.join();
  api_.set_delay(0ms);
  EXPECT_NE(ra.allowed, rb.allowed) << "exactly one of two racing changes fits a budget of 1";
  EXPECT_EQ(events_in_lease(), 1u);
  int lease_gets = 0, lease_puts = 0;
  for (const auto& request : api_.requests()) {
    if (request.find("/leases/") == std::string::npos) continue;
    lease_gets += request.rfind("GET ", 0) == 0;
    lease_puts += request.rfind("PUT ", 0) == 0;
  }
  EXPECT_EQ(lease_puts, 2) << "both wrote";
  EXPECT_EQ(lease_gets, 3) << "the loser re-read after its 409 Conflict";
}

TEST_F(Budgets, ManyConcurrentChangesNeverExceedTheBudget) {
  auto set = budget_policy(5);
  Instance a(api_, set), b(api_, set);
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Instance& instance = t % 2 ? a : b;
      for (int i = 0; i < 6; ++i) allowed += validate(scale_change(t * 100 + i), instance.context).allowed;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(allowed.load(), 5);
  EXPECT_EQ(events_in_lease(), 5u);
}

TEST_F(Budgets, ApiFailuresDenyByDefault) {
  auto set = budget_policy(5);
  Instance a(api_, set);
  EXPECT_TRUE(validate(scale_change(0), a.context).allowed);  // namespace labels now cached
  api_.fail_next(503, 1, "etcd is sad");  // the next request is the Lease read
  AdmissionResponse response = validate(scale_change(1), a.context);
  EXPECT_FALSE(response.allowed);
  EXPECT_EQ(response.status->causes.at(0).reason, "ClusterStateUnavailable");
  EXPECT_THAT(response.status->message, HasSubstr("etcd is sad"));
  EXPECT_TRUE(validate(scale_change(2), a.context).allowed) << "the next change, with the API back, goes through";
}

// --- change reasons -------------------------------------------------------------------------

std::shared_ptr<const PolicySet> reason_policy() {
  PolicyLoad load = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: agent-reason}\nspec:\n"
                                   "  automation:\n    actors: {serviceAccounts: [\"ops:*\"]}\n    requireChangeReason: true\n",
                                   "reason.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

// `kubectl scale deployment web` by the agent: a Scale, so the reason is read from the
// Deployment in the (fake) API; the Scale carries the stored resourceVersion.
AdmissionRequest kubectl_scale(const Json& stored, int serial, int from, int to, bool dry_run = false) {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "scale-" + std::to_string(serial);
  r.kind = {"autoscaling", "v1", "Scale"};
  r.resource = {"apps", "v1", "deployments"};
  r.sub_resource = "scale";
  r.namespace_ = "shop";
  r.name = "web";
  r.operation = Operation::Update;
  r.dry_run = dry_run;
  r.user_info.username = kAgent;
  auto scale = [&](int replicas) {
    return Json{{"apiVersion", "autoscaling/v1"},
                {"kind", "Scale"},
                {"metadata", {{"name", "web"}, {"namespace", "shop"}, {"uid", stored["metadata"]["uid"]},
                              {"resourceVersion", stored["metadata"]["resourceVersion"]}}},
                {"spec", {{"replicas", replicas}}}};
  };
  r.old_object = scale(from);
  r.object = scale(to);
  return r;
}

Json annotated_deployment(const std::string& reason) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", "web"}, {"uid", "web-uid-1"}, {"annotations", {{"sizeguard.io/change-reason", reason}}}}},
          {"spec", {{"replicas", 5}, {"template", {{"spec", {{"containers", Json::array()}}}}}}}};
}

TEST_F(Budgets, AChangeReasonJustifiesOneScaleAcrossInstances) {
  auto set = reason_policy();
  Json web = api_.put("apis/apps/v1", "deployments", "shop", annotated_deployment("INC-7: +1 for latency"));
  Instance a(api_, set), b(api_, set);
  EXPECT_TRUE(validate(kubectl_scale(web, 1, 5, 6, /*dry_run=*/true), a.context).allowed);
  EXPECT_FALSE(api_.get(kLeases, "leases", "sizeguard-system", LeaseBudgetStore::lease_name("reason", "shop/Deployment/web")))
      << "a dry run uses no reason";
  EXPECT_TRUE(validate(kubectl_scale(web, 2, 5, 6), a.context).allowed);
  auto lease = api_.get(kLeases, "leases", "sizeguard-system", LeaseBudgetStore::lease_name("reason", "shop/Deployment/web"));
  ASSERT_TRUE(lease);
  EXPECT_EQ(Json::parse((*lease)["metadata"]["annotations"]["sizeguard.io/budget-events"].get<std::string>()).size(), 1u);

  // Another instance, the same reason still on the Deployment: a replay.
  AdmissionResponse replay = validate(kubectl_scale(web, 3, 6, 7), b.context);
  EXPECT_FALSE(replay.allowed);
  ASSERT_TRUE(replay.status);
  EXPECT_EQ(replay.status->causes.at(0).reason, "ChangeReasonReused");
  EXPECT_EQ(replay.status->message.rfind("[ChangeReasonReused] sizeguard denied deployments/scale shop/web: ", 0), 0u)
      << replay.status->message;

  // `kubectl annotate ... --overwrite` with a new reason; a fresh instance reads it.
  web = api_.put("apis/apps/v1", "deployments", "shop", annotated_deployment("INC-7: +1 more, still slow"));
  Instance c(api_, set);
  EXPECT_TRUE(validate(kubectl_scale(web, 4, 6, 7), c.context).allowed);
  // Instance b still holds the old Deployment in its cache: the denial says why.
  AdmissionResponse stale = validate(kubectl_scale(web, 5, 7, 8), b.context);
  EXPECT_FALSE(stale.allowed);
  EXPECT_THAT(stale.status->message, HasSubstr("older than the object being scaled"));
}

TEST_F(Budgets, TwoInstancesRacingWithOneReasonAdmitOneChange) {
  auto set = reason_policy();
  Json web = api_.put("apis/apps/v1", "deployments", "shop", annotated_deployment("INC-9"));
  Instance a(api_, set), b(api_, set);
  api_.put(kLeases, "leases", "sizeguard-system",
           {{"apiVersion", "coordination.k8s.io/v1"},
            {"kind", "Lease"},
            {"metadata", {{"name", LeaseBudgetStore::lease_name("reason", "shop/Deployment/web")}}},
            {"spec", Json::object()}});
  api_.set_delay(150ms);
  std::barrier start(2);
  AdmissionResponse ra, rb;
  std::thread ta([&] { start.arrive_and_wait(); ra = validate(kubectl_scale(web, 1, 5, 6), a.context); });
  std::thread tb([&] { start.arrive_and_wait(); rb = validate(kubectl_scale(web, 2, 5, 4), b.context); });
  ta.join();
  tb.join();
  api_.set_delay(0ms);
  EXPECT_NE(ra.allowed, rb.allowed) << "one reason, one change";
}

}  // namespace
}  // namespace sizeguard
