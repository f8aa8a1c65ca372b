// Automation guardrails: old/new pairs for Deployments, StatefulSets, Scale, HPAs and
// DELETE, by agents and by people, with the clock injected.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <date/tz.h>

#include "policies/budget.h"
#include "policies/engine.h"
#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "support/fixtures.h"
#include "kube/review.h"

namespace sizeguard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

const char* kAgent = "system:serviceaccount:ops:scaler-bot";

PolicySet policies(const std::string& automation, const std::string& extra = "") {
  const std::string yaml = "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: agents}\nspec:\n" + extra +
                           "  automation:\n    actors:\n      serviceAccounts: [\"ops:scaler-*\"]\n      groups: [deployers]\n" +
                           automation;
  PolicyLoad load = parse_policies(yaml, "agents.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  PolicySet set;
  set.policies = std::move(load.policies);
  return set;
}

Json deployment(int replicas, Json resources = Json::object(), Json labels = Json::object(),
                Json annotations = Json::object(), const std::string& kind = "Deployment") {
  if (resources.is_null()) resources = Json::object();  // `{}` in a call means "none"
  return {{"apiVersion", "apps/v1"},
          {"kind", kind},
          {"metadata", {{"name", "web"}, {"namespace", "shop"}, {"labels", labels}, {"annotations", annotations}}},
          {"spec",
           {{"replicas", replicas},
            {"template", {{"spec", {{"containers", {{{"name", "app"}, {"image", "nginx"}, {"resources", resources}}}}}}}}}}};
}

AdmissionRequest change(Json before, Json after, const std::string& user = kAgent, Operation op = Operation::Update) {
  AdmissionRequest r;
  r.uid = "uid-1";
  r.api_version = "admission.k8s.io/v1";
  const Json& any = after.is_null() ? before : after;
  const std::string kind = any.value("kind", "");
  const std::string api_version = any.value("apiVersion", "apps/v1");
  const auto slash = api_version.find('/');
  r.kind = {slash == std::string::npos ? "" : api_version.substr(0, slash),
            slash == std::string::npos ? api_version : api_version.substr(slash + 1), kind};
  std::string resource = kind;
  for (auto& c : resource) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  r.resource = {r.kind.group, r.kind.version, resource + "s"};
  r.name = "web";
  r.namespace_ = "shop";
  r.operation = op;
  r.user_info.username = user;
  r.user_info.groups = {"system:authenticated"};
  r.old_object = std::move(before);
  r.object = std::move(after);
  return r;
}

// "2026-11-18T12:00:00" (UTC) -> time point. 2026-11-18 is a Wednesday.
std::chrono::system_clock::time_point utc(const std::string& text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  EXPECT_EQ(std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &sec), 6) << text;
  const date::sys_days day = date::year(y) / date::month(static_cast<unsigned>(mo)) / date::day(static_cast<unsigned>(d));
  return day + std::chrono::hours(h) + std::chrono::minutes(mi) + std::chrono::seconds(sec);
}

FileClusterState cluster(std::vector<Json> objects) { return FileClusterState(std::move(objects)); }

struct Result {
  Decision decision;
  std::vector<std::string> reasons;
  std::string message(size_t i = 0) const { return decision.findings.at(i).cause.message; }
};

Result evaluate(const AdmissionRequest& r, const PolicySet& set, ClusterState& state,
                std::chrono::system_clock::time_point now = utc("2026-11-18T12:00:00")) {
  Result out{evaluate_policies(r, set, state, {Mode::Enforce, now}), {}};
  for (const auto& f : out.decision.findings) out.reasons.push_back(f.cause.reason);
  return out;
}

class Automation : public ::testing::Test {
 protected:
  FileClusterState state_ = cluster({{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "shop"}}}}});
};

// --- who is an agent ------------------------------------------------------------------------

TEST_F(Automation, OnlyNamedActorsAreRestricted) {
  auto set = policies("    scaleDown: {floor: 5}\n");
  EXPECT_EQ(evaluate(change(deployment(10), deployment(2)), set, state_).reasons, std::vector<std::string>{"BelowFloor"});
  // Another service account, a person, and a person in the agents' group.
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(2), "system:serviceaccount:ops:other"), set, state_).reasons.empty());
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(2), "alice"), set, state_).reasons.empty());
  auto in_group = change(deployment(10), deployment(2), "bob");
  in_group.user_info.groups.push_back("deployers");
  EXPECT_EQ(evaluate(in_group, set, state_).reasons, std::vector<std::string>{"BelowFloor"});
}

// --- scale-down -------------------------------------------------------------------------------

TEST_F(Automation, ScaleDownStepPercentAndPodsWithTheNearestAllowedValue) {
  auto set = policies("    scaleDown:\n      maxStep: {percent: 50, pods: 3}\n");
  // Min policy (default): keep max(ceil(10 x 0.5)=5, 10-3=7) = 7.
  auto r = evaluate(change(deployment(10), deployment(5)), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ScaleDownStepExceeded"});
  EXPECT_EQ(r.message(), "scaling spec.replicas from 10 to 5 removes 5 in one change (maxStep percent=50, pods=3); "
                         "minAllowedReplicas=7 (policy agents)");
  EXPECT_EQ(r.decision.findings[0].cause.field, "spec.replicas");
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(7)), set, state_).reasons.empty());
  // Scale-ups and no-ops are never limited.
  EXPECT_TRUE(evaluate(change(deployment(5), deployment(50)), set, state_).reasons.empty());

  auto max_policy = policies("    scaleDown:\n      maxStep: {percent: 50, pods: 3}\n      selectPolicy: Max\n");
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(5)), max_policy, state_).reasons.empty());
  r = evaluate(change(deployment(10), deployment(4)), max_policy, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ScaleDownStepExceeded"});
  EXPECT_THAT(r.message(), HasSubstr("minAllowedReplicas=5"));
  // Percent rounds the kept replicas up, as the HPA does: 3 x 50% keeps 2.
  EXPECT_THAT(evaluate(change(deployment(3), deployment(1)), set, state_).message(), HasSubstr("minAllowedReplicas=2"));
}

TEST_F(Automation, FloorForStatefulSetsAndScaleFromTheRealFixture) {
  auto set = policies("    scaleDown:\n      floor: 4\n      maxStep: {pods: 10}\n");
  auto r = evaluate(change(deployment(6, {}, {}, {}, "StatefulSet"), deployment(3, {}, {}, {}, "StatefulSet")), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"BelowFloor"});
  EXPECT_THAT(r.message(), HasSubstr("goes below the floor of 4 for automation; minAllowedReplicas=4"));

  // kubectl scale --replicas=3 as the real apiserver sends it, by an agent; old was 5 here.
  auto decoded = decode_admission_review(test::load_apiserver_fixture("scale-update.json"));
  AdmissionRequest scale = std::get<AdmissionRequest>(decoded);
  scale.user_info.username = kAgent;
  scale.old_object["spec"]["replicas"] = 5;
  FileClusterState state = cluster({{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", scale.namespace_}}}}});
  r = evaluate(scale, set, state);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"BelowFloor"});
  EXPECT_THAT(r.message(), HasSubstr("scaling spec.replicas from 5 to 3"));
  // Already below the floor: no further cuts, the nearest allowed is where it is.
  scale.old_object["spec"]["replicas"] = 3;
  scale.object["spec"]["replicas"] = 2;
  EXPECT_THAT(evaluate(scale, set, state).message(), HasSubstr("minAllowedReplicas=3"));
}

Json hpa(int min, int max) {
  return {{"apiVersion", "autoscaling/v2"},
          {"kind", "HorizontalPodAutoscaler"},
          {"metadata", {{"name", "web"}, {"namespace", "shop"}}},
          {"spec",
           {{"scaleTargetRef", {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", "web"}}},
            {"minReplicas", min},
            {"maxReplicas", max}}}};
}

TEST_F(Automation, HpaMinAndMaxChangesAreScaleDownsToo) {
  auto set = policies("    scaleDown:\n      floor: 3\n      maxStep: {percent: 50}\n");
  auto r = evaluate(change(hpa(4, 20), hpa(2, 8)), set, state_);
  EXPECT_THAT(r.reasons, ElementsAre("BelowFloor", "ScaleDownStepExceeded"));
  EXPECT_EQ(r.decision.findings[0].cause.field, "spec.minReplicas");
  EXPECT_EQ(r.decision.findings[1].cause.field, "spec.maxReplicas");
  EXPECT_THAT(r.message(1), HasSubstr("minAllowedReplicas=10"));
  EXPECT_TRUE(evaluate(change(hpa(4, 20), hpa(3, 10)), set, state_).reasons.empty());
}

// --- resource cuts ------------------------------------------------------------------------------

TEST_F(Automation, ResourceCutsByPercentAndRemovalCountsAsZero) {
  auto set = policies("    resourceCuts: {maxPercent: 30}\n");
  const Json before = {{"requests", {{"cpu", "1"}, {"memory", "1Gi"}}}, {"limits", {{"memory", "2Gi"}}}};
  const Json after = {{"requests", {{"cpu", "700m"}, {"memory", "256Mi"}}}};
  auto r = evaluate(change(deployment(2, before), deployment(2, after)), set, state_);
  ASSERT_THAT(r.reasons, ElementsAre("ResourceCutTooDeep", "ResourceCutTooDeep"));
  EXPECT_EQ(r.message(0), "container app: memory request 1Gi -> 256Mi is a 75% cut; maxAllowedCut=30% "
                          "minAllowedValue=717Mi (policy agents)");
  EXPECT_EQ(r.decision.findings[0].cause.field, "spec.template.spec.containers[0].resources.requests.memory");
  EXPECT_EQ(r.message(1), "container app: memory limit 2Gi -> 0 (removed) is a 100% cut; maxAllowedCut=30% "
                          "minAllowedValue=1434Mi (policy agents)");
  // Exactly 30% is allowed; increases are never cuts.
  EXPECT_TRUE(evaluate(change(deployment(2, {{"requests", {{"cpu", "1"}}}}), deployment(2, {{"requests", {{"cpu", "700m"}}}})),
                       set, state_)
                  .reasons.empty());
  EXPECT_TRUE(evaluate(change(deployment(2, {{"requests", {{"cpu", "1"}}}}), deployment(2, {{"requests", {{"cpu", "4"}}}})),
                       set, state_)
                  .reasons.empty());
}

// --- freeze windows -----------------------------------------------------------------------------

TEST_F(Automation, WeeklyFreezeAcrossMidnightInBerlin) {
  // Friday 22:00 to Saturday 06:00, Berlin time (CET, UTC+1 in November).
  auto set = policies("    freezeWindows:\n      - {name: nightly, timezone: Europe/Berlin, days: [Fri], start: \"22:00\", end: \"06:00\"}\n");
  const auto req = change(deployment(3), deployment(4, {{"requests", {{"cpu", "1"}}}}));
  // Fri 2026-11-20 21:30 UTC = 22:30 Berlin: frozen until Sat 06:00 Berlin = 05:00 UTC.
  auto r = evaluate(req, set, state_, utc("2026-11-20T21:30:00"));
  ASSERT_EQ(r.reasons, std::vector<std::string>{"FreezeWindow"});
  EXPECT_THAT(r.message(), HasSubstr("freeze window \"nightly\" (Fri 22:00-06:00 Europe/Berlin)"));
  EXPECT_THAT(r.message(), HasSubstr("retryAfterSeconds=27000"));
  // Sat 04:59 UTC = 05:59 Berlin, still frozen (the window started the day before).
  EXPECT_THAT(evaluate(req, set, state_, utc("2026-11-21T04:59:00")).message(), HasSubstr("retryAfterSeconds=60"));
  EXPECT_TRUE(evaluate(req, set, state_, utc("2026-11-21T05:00:00")).reasons.empty());
  EXPECT_TRUE(evaluate(req, set, state_, utc("2026-11-20T20:59:59")).reasons.empty());
  // Thursday night is not Friday night.
  EXPECT_TRUE(evaluate(req, set, state_, utc("2026-11-19T21:30:00")).reasons.empty());
  // People are never frozen by automation rules.
  EXPECT_TRUE(evaluate(change(deployment(3), deployment(4), "alice"), set, state_, utc("2026-11-20T21:30:00")).reasons.empty());
}

TEST_F(Automation, FreezeWindowsFollowDstChanges) {
  // Berlin leaves DST on Sunday 2026-10-25 (03:00 CEST -> 02:00 CET): a Sunday 00:00-06:00
  // window lasts 7 real hours that night. New York enters DST on 2026-03-08 (02:00 -> 03:00):
  // a Sunday 01:00-04:00 window lasts 2.
  auto berlin = policies("    freezeWindows:\n      - {name: berlin-sunday, timezone: Europe/Berlin, days: [Sun], start: \"00:00\", end: \"06:00\"}\n");
  auto new_york = policies("    freezeWindows:\n      - {name: ny-sunday, timezone: America/New_York, days: [Sunday], start: \"01:00\", end: \"04:00\"}\n");
  const auto req = change(deployment(3), deployment(2));
  // 2026-10-24 22:00 UTC = Sun 00:00 CEST (UTC+2): starts; ends 06:00 CET = 05:00 UTC.
  auto r = evaluate(req, berlin, state_, utc("2026-10-24T22:00:00"));
  ASSERT_EQ(r.reasons, std::vector<std::string>{"FreezeWindow"});
  EXPECT_THAT(r.message(), HasSubstr("retryAfterSeconds=25200"));  // 7 h, not 6
  EXPECT_THAT(evaluate(req, berlin, state_, utc("2026-10-25T04:59:59")).message(), HasSubstr("retryAfterSeconds=1"));
  EXPECT_TRUE(evaluate(req, berlin, state_, utc("2026-10-25T05:00:00")).reasons.empty());
  EXPECT_TRUE(evaluate(req, berlin, state_, utc("2026-10-24T21:59:59")).reasons.empty());
  // A week later (CET all night) the same window is 6 hours: 2026-10-31 23:00 UTC = Sun 00:00 CET.
  EXPECT_THAT(evaluate(req, berlin, state_, utc("2026-10-31T23:00:00")).message(), HasSubstr("retryAfterSeconds=21600"));
  // New York, 2026-03-08 06:00 UTC = 01:00 EST: until 04:00 EDT = 08:00 UTC, 2 real hours.
  r = evaluate(req, new_york, state_, utc("2026-03-08T06:00:00"));
  ASSERT_EQ(r.reasons, std::vector<std::string>{"FreezeWindow"});
  EXPECT_THAT(r.message(), HasSubstr("ny-sunday"));
  EXPECT_THAT(r.message(), HasSubstr("retryAfterSeconds=7200"));
  EXPECT_TRUE(evaluate(req, new_york, state_, utc("2026-03-08T08:00:00")).reasons.empty());
  EXPECT_TRUE(evaluate(req, new_york, state_, utc("2026-03-08T05:59:59")).reasons.empty());
}

TEST_F(Automation, OneOffFreezeAndScaleUpsAllowed) {
  auto set = policies(R"(    freezeWindows:
      - name: black-friday
        timezone: America/New_York
        from: "2026-11-27T00:00"
        to: "2026-11-30T06:00"
        allowScaleUp: true
)");
  const auto inside = utc("2026-11-28T12:00:00");
  auto r = evaluate(change(deployment(10), deployment(8)), set, state_, inside);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"FreezeWindow"});
  EXPECT_THAT(r.message(), HasSubstr("(only scale-ups are allowed)"));
  EXPECT_THAT(r.message(), HasSubstr("retryAfterSeconds=169200"));  // to 2026-11-30 06:00 EST = 11:00 UTC
  // Adding capacity is fine; adding capacity while changing the template is not.
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(14)), set, state_, inside).reasons.empty());
  EXPECT_EQ(evaluate(change(deployment(10), deployment(14, {{"requests", {{"cpu", "1"}}}})), set, state_, inside).reasons,
            std::vector<std::string>{"FreezeWindow"});
  EXPECT_TRUE(evaluate(change(hpa(2, 10), hpa(3, 20)), set, state_, inside).reasons.empty());
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(8)), set, state_, utc("2026-11-30T11:00:00")).reasons.empty());
}

TEST(FreezeWindowConfig, BadTimezonesAndTimesAreLoadErrors) {
  PolicyLoad load = parse_policies(R"(apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: p}
spec:
  automation:
    actors: {usernames: [bot]}
    freezeWindows:
      - {timezone: Mars/Olympus, days: [Fri], start: "22:00", end: "06:00"}
      - {timezone: UTC, days: [Funday], start: "25:00", end: "06:00"}
      - {timezone: UTC, from: "2026-12-01T00:00", to: "2026-11-01T00:00"}
)", "f.yaml");
  EXPECT_THAT(load.errors, ElementsAre("f.yaml[0] spec.automation.freezeWindows[0].timezone: unknown IANA timezone \"Mars/Olympus\"",
                                       "f.yaml[0] spec.automation.freezeWindows[1].days[0]: expected a day such as Mon or Saturday, got \"Funday\"",
                                       "f.yaml[0] spec.automation.freezeWindows[1].start: expected a local time HH:MM, got \"25:00\"",
                                       "f.yaml[0] spec.automation.freezeWindows[2].to: must be after from"));
}

// --- protected workloads, reasons, break-glass -------------------------------------------------

TEST_F(Automation, ProtectedWorkloadsCannotBeDeletedScaledToZeroOrResized) {
  auto set = policies("    protected:\n      selector: {matchLabels: {tier: critical}}\n");
  const Json labels = {{"tier", "critical"}};
  auto r = evaluate(change(deployment(3, {}, labels), nullptr, kAgent, Operation::Delete), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ProtectedWorkload"});
  EXPECT_THAT(r.message(), HasSubstr("automation may not delete it; action=delete"));
  r = evaluate(change(deployment(3, {}, labels), deployment(0, {}, labels)), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ProtectedWorkload"});
  EXPECT_THAT(r.message(), HasSubstr("action=scaleToZero minAllowedReplicas=1"));
  r = evaluate(change(deployment(3, {}, labels), deployment(3, {{"limits", {{"cpu", "2"}}}}, labels)), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ProtectedWorkload"});
  // Stripping the label in the same change does not help: the current object decides.
  EXPECT_EQ(evaluate(change(deployment(3, {}, labels), deployment(0)), set, state_).reasons,
            std::vector<std::string>{"ProtectedWorkload"});
  // Unprotected workloads, and people, are free to do all of it.
  EXPECT_TRUE(evaluate(change(deployment(3), nullptr, kAgent, Operation::Delete), set, state_).reasons.empty());
  EXPECT_TRUE(evaluate(change(deployment(3, {}, labels), nullptr, "alice", Operation::Delete), set, state_).reasons.empty());

  auto by_annotation = policies("    protected:\n      annotations: {sizeguard.io/protected: \"*\"}\n      forbid: [delete]\n");
  const Json annotations = {{"sizeguard.io/protected", "payments"}};
  EXPECT_EQ(evaluate(change(deployment(3, {}, {}, annotations), nullptr, kAgent, Operation::Delete), by_annotation, state_).reasons,
            std::vector<std::string>{"ProtectedWorkload"});
  EXPECT_TRUE(evaluate(change(deployment(3, {}, {}, annotations), deployment(0, {}, {}, annotations)), by_annotation, state_)
                  .reasons.empty());
}

TEST_F(Automation, ChangeReasonIsRequiredAndAudited) {
  auto set = policies("    requireChangeReason: true\n");
  auto r = evaluate(change(deployment(3), deployment(4)), set, state_);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"MissingChangeReason"});
  EXPECT_THAT(r.message(), HasSubstr("annotation=sizeguard.io/change-reason"));
  r = evaluate(change(deployment(3), deployment(4, {}, {}, {{"sizeguard.io/change-reason", "latency SLO breach, ticket 42"}})),
               set, state_);
  EXPECT_TRUE(r.reasons.empty());
  EXPECT_EQ(r.decision.audit_fields.at("changeReason"), "latency SLO breach, ticket 42");
}

TEST_F(Automation, BreakGlassForAllowedPeopleOnly) {
  auto set = policies("    scaleDown: {floor: 5}\n", "  breakGlass:\n    allowed:\n      users: [alice]\n      groups: [sre-oncall]\n");
  const Json glass = {{"sizeguard.io/break-glass", "INC-1234 outage"}};
  // Carol is in the agents' group (deployers) and on call: break-glass bypasses the rules.
  auto carol = change(deployment(10), deployment(1, {}, {}, glass), "carol");
  carol.user_info.groups = {"deployers", "sre-oncall"};
  auto r = evaluate(carol, set, state_);
  EXPECT_TRUE(r.reasons.empty());
  EXPECT_TRUE(r.decision.allowed());
  ASSERT_EQ(r.decision.notes.size(), 1u);
  EXPECT_THAT(r.decision.notes[0], HasSubstr("break-glass by carol (\"INC-1234 outage\")"));
  EXPECT_EQ(r.decision.audit_fields.at("breakGlass"), "carol: INC-1234 outage");
  // The agent itself cannot break glass: ignored, reported, rules apply.
  r = evaluate(change(deployment(10), deployment(1, {}, {}, glass)), set, state_);
  EXPECT_EQ(r.reasons, std::vector<std::string>{"BelowFloor"});
  EXPECT_THAT(r.decision.notes.at(0), HasSubstr("sizeguard.io/break-glass ignored: system:serviceaccount:ops:scaler-bot"));
  // Nor can someone in the agents' group who is not allowed.
  auto dave = change(deployment(10), deployment(1, {}, {}, glass), "dave");
  dave.user_info.groups = {"deployers"};
  EXPECT_EQ(evaluate(dave, set, state_).reasons, std::vector<std::string>{"BelowFloor"});
}

TEST_F(Automation, ModesApplyToAutomationRules) {
  auto warn = policies("    scaleDown: {floor: 5}\n", "  mode: warn\n");
  auto r = evaluate(change(deployment(10), deployment(2)), warn, state_);
  EXPECT_TRUE(r.decision.allowed());
  EXPECT_EQ(r.decision.findings.at(0).mode, Mode::Warn);
  auto audit = policies("    scaleDown: {floor: 5}\n", "  mode: audit\n");
  EXPECT_TRUE(evaluate(change(deployment(10), deployment(2)), audit, state_).decision.allowed());
}

// --- budgets ------------------------------------------------------------------------------------

// An in-memory store with the Lease store's semantics, to test spend_budgets itself.
class MemoryBudgets : public BudgetStore {
 public:
  StateResult<BudgetSpend> try_spend(const std::string& scope, const std::string& key, const BudgetLimit& limit,
                                     std::chrono::system_clock::time_point now, const std::string& id, bool record) override {
    if (fail) return ClusterStateError{"apiserver unavailable"};
    auto& list = events[scope + "/" + key];
    const int64_t t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    std::erase_if(list, [&](const auto& e) { return e.first <= t - limit.window_seconds; });
    if (static_cast<int64_t>(list.size()) >= limit.changes) {
      return BudgetSpend{false, static_cast<int64_t>(list.size()),
                         list.empty() ? limit.window_seconds : list.front().first + limit.window_seconds - t};
    }
    if (record) list.emplace_back(t, id);
    return BudgetSpend{true, static_cast<int64_t>(list.size()), 0};
  }
  std::optional<ClusterStateError> refund(const std::string& scope, const std::string& key, const std::string& id) override {
    std::erase_if(events[scope + "/" + key], [&](const auto& e) { return e.second == id; });
    ++refunds;
    return std::nullopt;
  }
  StateResult<bool> use_reason(const std::string& key, const std::string& id, std::chrono::system_clock::time_point now,
                               bool record) override {
    if (fail) return ClusterStateError{"apiserver unavailable"};
    auto& list = events["reason/" + key];
    if (std::any_of(list.begin(), list.end(), [&](const auto& e) { return e.second == id; })) return false;
    if (record) list.emplace_back(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count(), id);
    return true;
  }
  std::map<std::string, std::vector<std::pair<int64_t, std::string>>> events;
  bool fail = false;
  int refunds = 0;
};

TEST_F(Automation, BudgetsCountAgentChangesAndDenyWhenSpent) {
  auto set = policies("    changeBudget:\n      perWorkload: {changes: 2, window: 1h}\n      perActor: {changes: 3, window: 1h}\n");
  MemoryBudgets store;
  auto t0 = utc("2026-11-18T12:00:00");
  auto spend = [&](AdmissionRequest r, std::chrono::system_clock::time_point at) {
    Decision d = evaluate_policies(r, set, state_, {Mode::Enforce, at});
    spend_budgets(d, store, r, at);
    return d;
  };
  EXPECT_TRUE(spend(change(deployment(3), deployment(4)), t0).allowed());
  // A dry run is checked but spends nothing.
  auto dry = change(deployment(3), deployment(4));
  dry.dry_run = true;
  EXPECT_TRUE(spend(dry, t0 + 1min).allowed());
  EXPECT_EQ(store.events["workload/shop/Deployment/web"].size(), 1u);
  EXPECT_TRUE(spend(change(deployment(4), deployment(5)), t0 + 10min).allowed());
  Decision third = spend(change(deployment(5), deployment(6)), t0 + 20min);
  EXPECT_FALSE(third.allowed());
  ASSERT_EQ(third.findings.size(), 1u);
  EXPECT_EQ(third.findings[0].cause.reason, "ChangeBudgetExceeded");
  EXPECT_EQ(third.findings[0].cause.message,
            "workload shop/Deployment/web has used its budget of 2 changes per 1h (policy agents); retryAfterSeconds=2400");
  // Denied: the actor budget was not spent by it.
  EXPECT_EQ(store.events["actor/" + std::string(kAgent)].size(), 2u);
  // After the window the first change no longer counts.
  EXPECT_TRUE(spend(change(deployment(5), deployment(6)), t0 + 61min).allowed());
  // People do not spend agent budgets.
  EXPECT_TRUE(spend(change(deployment(5), deployment(6), "alice"), t0 + 62min).allowed());
  EXPECT_EQ(store.events["actor/alice"].size(), 0u);
}

TEST_F(Automation, ADeniedChangeSpendsNothing) {
  auto set = policies("    scaleDown: {floor: 5}\n    changeBudget:\n      perWorkload: {changes: 5, window: 1h}\n");
  MemoryBudgets store;
  auto r = change(deployment(10), deployment(1));
  Decision d = evaluate_policies(r, set, state_, {Mode::Enforce, utc("2026-11-18T12:00:00")});
  spend_budgets(d, store, r, utc("2026-11-18T12:00:00"));
  EXPECT_FALSE(d.allowed());
  EXPECT_TRUE(store.events["workload/shop/Deployment/web"].empty());

  // The workload budget is spent, the actor budget is not: the workload spend is refunded.
  auto two = policies("    changeBudget:\n      perWorkload: {changes: 5, window: 1h}\n      perActor: {changes: 0, window: 1h}\n");
  auto ok = change(deployment(3), deployment(4));
  Decision denied = evaluate_policies(ok, two, state_, {Mode::Enforce, utc("2026-11-18T12:00:00")});
  spend_budgets(denied, store, ok, utc("2026-11-18T12:00:00"));
  EXPECT_FALSE(denied.allowed());
  EXPECT_TRUE(store.events["workload/shop/Deployment/web"].empty());
  EXPECT_EQ(store.refunds, 1);
}

TEST_F(Automation, BudgetStoreFailuresDenyUnlessToldOtherwise) {
  MemoryBudgets store;
  store.fail = true;
  auto r = change(deployment(3), deployment(4));
  auto set = policies("    changeBudget:\n      perActor: {changes: 5, window: 1h}\n");
  Decision d = evaluate_policies(r, set, state_, {Mode::Enforce, utc("2026-11-18T12:00:00")});
  spend_budgets(d, store, r, utc("2026-11-18T12:00:00"));
  EXPECT_FALSE(d.allowed());
  EXPECT_EQ(d.findings.at(0).cause.reason, "ClusterStateUnavailable");
  auto lenient = policies("    changeBudget:\n      perActor: {changes: 5, window: 1h}\n", "  onClusterStateError: allow\n");
  d = evaluate_policies(r, lenient, state_, {Mode::Enforce, utc("2026-11-18T12:00:00")});
  spend_budgets(d, store, r, utc("2026-11-18T12:00:00"));
  EXPECT_TRUE(d.allowed());
}

// --- change reasons through kubectl, used once ------------------------------------------------

AdmissionRequest fixture_request(const std::string& name) {
  auto decoded = decode_admission_review(test::load_apiserver_fixture(name));
  EXPECT_TRUE(std::holds_alternative<AdmissionRequest>(decoded)) << name;
  return std::get<AdmissionRequest>(decoded);
}

const Json kCaptureNamespace = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "capture"}}}};

TEST_F(Automation, ChangeReasonThroughKubectlAnnotateThenKubectlScaleJustifiesOneChange) {
  auto set = policies("    requireChangeReason: true\n    changeBudget:\n      perWorkload: {changes: 10, window: 1h}\n");
  MemoryBudgets store;
  const auto t0 = utc("2026-11-18T12:00:00");
  auto run = [&](const AdmissionRequest& r, ClusterState& state) {
    Decision d = evaluate_policies(r, set, state, {Mode::Enforce, t0});
    spend_budgets(d, store, r, t0);
    return d;
  };
  // 1. The real `kubectl annotate deployment web ...` UPDATE, by the agent, setting the
  // reason: metadata only, so it needs no reason of its own and spends nothing.
  AdmissionRequest annotate = fixture_request("validate-deployment-update-kubectl-annotate.json");
  annotate.user_info.username = kAgent;
  annotate.object["metadata"]["annotations"]["sizeguard.io/change-reason"] = "INC-7: checkout latency, +1 replica";
  FileClusterState before = cluster({kCaptureNamespace, annotate.old_object});
  Decision d = run(annotate, before);
  EXPECT_TRUE(d.allowed());
  EXPECT_TRUE(d.findings.empty());
  EXPECT_TRUE(d.reason_claims.empty()) << "annotating must not use up the reason it sets";
  EXPECT_TRUE(d.budget_charges.empty());

  // 2. `kubectl scale deployment web --replicas=4` (the real Scale request, 5 -> 4): a Scale
  // has no annotations; the reason is read from the Deployment as now stored.
  AdmissionRequest scale = fixture_request("validate-deployment-scale-update-by-serviceaccount.json");
  scale.user_info.username = kAgent;
  Json annotated = annotate.object;
  annotated["metadata"]["resourceVersion"] = scale.old_object["metadata"]["resourceVersion"];
  FileClusterState after = cluster({kCaptureNamespace, annotated});

  // A dry run is judged but uses nothing.
  AdmissionRequest dry = scale;
  dry.dry_run = true;
  EXPECT_TRUE(run(dry, after).allowed());
  EXPECT_TRUE(store.events["reason/capture/Deployment/web"].empty());

  d = run(scale, after);
  EXPECT_TRUE(d.allowed()) << ::testing::PrintToString(d.findings.size());
  EXPECT_EQ(d.audit_fields.at("changeReason"), "INC-7: checkout latency, +1 replica");
  EXPECT_EQ(store.events["reason/capture/Deployment/web"].size(), 1u);
  EXPECT_EQ(store.events["workload/capture/Deployment/web"].size(), 1u);

  // 3. The same reason, still on the Deployment, for another change: a replay, denied,
  // and it spends no budget.
  AdmissionRequest again = scale;
  again.uid = "second";
  again.old_object["spec"]["replicas"] = 4;
  again.object["spec"]["replicas"] = 3;
  d = run(again, after);
  EXPECT_FALSE(d.allowed());
  ASSERT_EQ(d.findings.size(), 1u);
  EXPECT_EQ(d.findings[0].cause.reason, "ChangeReasonReused");
  EXPECT_EQ(d.findings[0].cause.message,
            "the sizeguard.io/change-reason annotation on Deployment capture/web already justified an earlier change; "
            "set a new reason for this one (policy agents); annotation=sizeguard.io/change-reason");
  EXPECT_EQ(store.events["workload/capture/Deployment/web"].size(), 1u);

  // 4. A new reason justifies the next change.
  annotated["metadata"]["annotations"]["sizeguard.io/change-reason"] = "INC-7: latency fine again, -1 replica";
  FileClusterState renewed = cluster({kCaptureNamespace, annotated});
  EXPECT_TRUE(run(again, renewed).allowed());
  EXPECT_EQ(store.events["reason/capture/Deployment/web"].size(), 2u);

  // The same reason text on a re-created Deployment (another uid) is a new reason.
  Json recreated = annotated;
  recreated["metadata"]["uid"] = "another-uid";
  FileClusterState fresh = cluster({kCaptureNamespace, recreated});
  EXPECT_TRUE(run(again, fresh).allowed());
}

TEST_F(Automation, ChangeReasonMissingOnTheScaledWorkloadSaysWhereToSetIt) {
  auto set = policies("    requireChangeReason: true\n");
  AdmissionRequest scale = fixture_request("validate-deployment-scale-update-by-serviceaccount.json");
  scale.user_info.username = kAgent;
  // The Deployment as the webhook's cache last saw it, before the scale's stored version.
  AdmissionRequest annotate = fixture_request("validate-deployment-update-kubectl-annotate.json");
  FileClusterState state = cluster({kCaptureNamespace, annotate.old_object});
  auto r = evaluate(scale, set, state);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"MissingChangeReason"});
  EXPECT_EQ(r.decision.findings[0].cause.field, "metadata.annotations[sizeguard.io/change-reason]");
  EXPECT_THAT(r.message(), HasSubstr("set the annotation sizeguard.io/change-reason on Deployment capture/web"));
  EXPECT_THAT(r.message(), HasSubstr("older than the object being scaled"));
  EXPECT_THAT(r.message(), HasSubstr("; annotation=sizeguard.io/change-reason (policy agents)"));
  // No Deployment to read the reason from: not checked, denied (onClusterStateError default deny).
  FileClusterState empty = cluster({kCaptureNamespace});
  r = evaluate(scale, set, empty);
  ASSERT_EQ(r.reasons, std::vector<std::string>{"ClusterStateUnavailable"});
  EXPECT_FALSE(r.decision.allowed());
}

TEST_F(Automation, ANoOpChangeSpendsNoBudgetAndNeedsNoReason) {
  auto set = policies("    requireChangeReason: true\n    changeBudget:\n      perWorkload: {changes: 1, window: 1h}\n"
                      "    freezeWindows:\n      - {timezone: UTC, days: [Wed], start: \"00:00\", end: \"24:00\", allowScaleUp: true}\n");
  MemoryBudgets store;
  const auto t0 = utc("2026-11-18T12:00:00");  // a Wednesday: frozen
  // `kubectl scale deployment web --replicas=5` on a Deployment already at 5.
  AdmissionRequest scale = fixture_request("validate-deployment-scale-update-by-serviceaccount.json");
  scale.user_info.username = kAgent;
  scale.object["spec"]["replicas"] = 5;
  FileClusterState state = cluster({kCaptureNamespace});
  Decision d = evaluate_policies(scale, set, state, {Mode::Enforce, t0});
  spend_budgets(d, store, scale, t0);
  EXPECT_TRUE(d.allowed());
  EXPECT_TRUE(d.findings.empty());
  EXPECT_TRUE(d.budget_charges.empty());
  EXPECT_TRUE(store.events.empty());
  // A Deployment UPDATE that changes only annotations, and one that changes nothing.
  auto annotated = change(deployment(3), deployment(3, {}, {}, {{"team.example.com/owner", "ml"}}));
  EXPECT_TRUE(evaluate(annotated, set, state_, t0).reasons.empty());
  EXPECT_TRUE(evaluate(change(deployment(3), deployment(3)), set, state_, t0).decision.budget_charges.empty());
  // A label change is a change (labels decide protection), and so is a new image.
  EXPECT_THAT(evaluate(change(deployment(3), deployment(3, {}, {{"tier", "batch"}})), set, state_, t0).reasons,
              ElementsAre("FreezeWindow", "MissingChangeReason"));
  Json new_image = deployment(3);
  new_image["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2";
  auto image = evaluate(change(deployment(3), new_image), set, state_, t0);
  EXPECT_THAT(image.reasons, ElementsAre("FreezeWindow", "MissingChangeReason"));
  EXPECT_EQ(image.decision.budget_charges.size(), 1u);
}

TEST_F(Automation, ObjectsAControllerOwnsAreJudgedThroughTheirOwner) {
  // The deployment controller in the agents' group (as with a broad group such as
  // system:serviceaccounts): its rollout changes to ReplicaSets are not the agent's.
  auto set = policies("    scaleDown: {floor: 5, maxStep: {pods: 1}}\n    requireChangeReason: true\n"
                      "    changeBudget:\n      perWorkload: {changes: 1, window: 1h}\n"
                      "    protected:\n      selector: {matchLabels: {app: web}}\n      forbid: [delete, scaleToZero]\n");
  MemoryBudgets store;
  const auto t0 = utc("2026-11-18T12:00:00");
  FileClusterState state = cluster({kCaptureNamespace});
  for (const char* name : {"validate-replicaset-create-by-deployment-controller.json",
                           "validate-replicaset-scale-down-by-deployment-controller.json",
                           "validate-replicaset-scale-up-by-deployment-controller.json",
                           "validate-replicaset-update-annotations-by-deployment-controller.json"}) {
    AdmissionRequest r = fixture_request(name);
    r.user_info.groups.push_back("deployers");
    Decision d = evaluate_policies(r, set, state, {Mode::Enforce, t0});
    spend_budgets(d, store, r, t0);
    EXPECT_TRUE(d.allowed()) << name;
    EXPECT_TRUE(d.findings.empty()) << name;
    EXPECT_TRUE(d.outcomes.empty()) << name;
  }
  EXPECT_TRUE(store.events.empty());
  // Without its owner, the same ReplicaSet scale-down is the agent's: judged.
  AdmissionRequest bare = fixture_request("validate-replicaset-scale-down-by-deployment-controller.json");
  bare.user_info.groups.push_back("deployers");
  bare.object["metadata"].erase("ownerReferences");
  bare.old_object["spec"]["replicas"] = 3;
  bare.object["spec"]["replicas"] = 2;
  EXPECT_THAT(evaluate(bare, set, state, t0).reasons, ElementsAre("BelowFloor", "MissingChangeReason"));
  // Deleting an owned ReplicaSet deletes its pods: still judged.
  AdmissionRequest del = fixture_request("validate-replicaset-scale-down-by-deployment-controller.json");
  del.user_info.groups.push_back("deployers");
  del.operation = Operation::Delete;
  del.object = nullptr;
  EXPECT_THAT(evaluate(del, set, state, t0).reasons, ElementsAre("ProtectedWorkload", "MissingChangeReason"));
}

}  // namespace
}  // namespace sizeguard
