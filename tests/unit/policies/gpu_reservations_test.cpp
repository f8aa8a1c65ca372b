// The pure part of GPU reservations: which reservations still count beside the visible
// pods, what a writer leaves in the Lease, and what the engine asks to reserve.
#include "policies/gpu_reservations.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policies/file_cluster_state.h"
#include "policies/loader.h"
#include "support/fixtures.h"

namespace sizeguard {
namespace {

constexpr int64_t kNow = 1'800'000'000;

GpuPod generated_pod(const std::string& uid, const std::string& suffix, double gpus = 1,
                     const std::string& prefix = "train-6f8547b4f8-") {
  return {uid, prefix + suffix, prefix, gpus};
}

GpuReservation generated(const std::string& id, double gpus = 1, int64_t expires = kNow + 60,
                         const std::string& prefix = "train-6f8547b4f8-") {
  return {id, prefix, true, gpus, expires};
}

TEST(GpuTally, ReservationsCountUntilTheirPodsAppear) {
  GpuLedger ledger;
  ledger.reservations = {generated("a"), generated("b"), generated("c")};
  auto tally = tally_gpus(ledger, {}, kNow);
  EXPECT_EQ(tally.in_pods, 0);
  EXPECT_EQ(tally.reserved, 3);

  // Two pods of that ReplicaSet appear (names generated after admission): each takes the
  // place of one reservation, so nothing is counted twice.
  std::vector<GpuPod> pods = {generated_pod("uid-1", "x1abc"), generated_pod("uid-2", "x2abc")};
  tally = tally_gpus(ledger, pods, kNow);
  EXPECT_EQ(tally.in_pods, 2);
  EXPECT_EQ(tally.reserved, 1);
  EXPECT_EQ(std::count(tally.consumed.begin(), tally.consumed.end(), true), 2);
}

TEST(GpuTally, PodsAlreadySeenTakeNoReservation) {
  // An older pod of the same ReplicaSet was there when the last reservation was written:
  // it is not the pod of any current reservation.
  const GpuPod old = generated_pod("uid-old", "oldpd");
  GpuLedger ledger;
  ledger.seen[gpu_pod_id(old)] = kNow - 5;
  ledger.reservations = {generated("a")};
  auto tally = tally_gpus(ledger, {old}, kNow);
  EXPECT_EQ(tally.in_pods, 1);
  EXPECT_EQ(tally.reserved, 1);
}

TEST(GpuTally, ExpiredReservationsCountNothing) {
  GpuLedger ledger;
  ledger.reservations = {generated("gone", 2, kNow), generated("live", 2, kNow + 1)};
  auto tally = tally_gpus(ledger, {}, kNow);
  EXPECT_EQ(tally.reserved, 2);
  // An expired reservation is not taken by a pod either: the pod goes to the live one.
  tally = tally_gpus(ledger, {generated_pod("u", "abcde", 2)}, kNow);
  EXPECT_EQ(tally.reserved, 0);
  EXPECT_THAT(tally.consumed, ::testing::ElementsAre(false, true));
}

TEST(GpuTally, APodOnlyReplacesAReservationOfTheSameSizeAndName) {
  GpuLedger ledger;
  ledger.reservations = {generated("big", 4), generated("other-rs", 1, kNow + 60, "infer-77f9-"),
                         {"sts", "db-0", false, 1, kNow + 60}};
  // 1 GPU from train-...: neither the 4-GPU reservation of its ReplicaSet, nor another
  // ReplicaSet's, nor a pod named db-0.
  auto tally = tally_gpus(ledger, {generated_pod("u1", "aaaaa", 1)}, kNow);
  EXPECT_EQ(tally.reserved, 6);
  tally = tally_gpus(ledger, {GpuPod{"u2", "db-0", "", 1}}, kNow);
  EXPECT_EQ(tally.reserved, 5);
  EXPECT_THAT(tally.consumed, ::testing::ElementsAre(false, false, true));
}

TEST(GpuTally, ARecreatedStatefulSetPodIsNewByUid) {
  const GpuPod before{"uid-1", "db-0", "", 1};
  const GpuPod after{"uid-2", "db-0", "", 1};
  GpuLedger ledger;
  ledger.seen[gpu_pod_id(before)] = kNow - 10;
  ledger.reservations = {{"r", "db-0", false, 1, kNow + 60}};
  EXPECT_EQ(tally_gpus(ledger, {before}, kNow).reserved, 1) << "the old db-0, still terminating";
  EXPECT_EQ(tally_gpus(ledger, {after}, kNow).reserved, 0) << "the new db-0 is the reserved one";
}

TEST(GpuTally, AnExplicitNameMatchesBeforeAGenerateNamePrefix) {
  // A pod named web-x1 that also carries generateName web-: its named reservation is the
  // one it replaces, the prefix reservation still waits for its pod.
  GpuLedger ledger;
  ledger.reservations = {{"by-prefix", "web-", true, 1, kNow + 60}, {"by-name", "web-x1", false, 1, kNow + 60}};
  auto tally = tally_gpus(ledger, {GpuPod{"u", "web-x1", "web-", 1}}, kNow);
  EXPECT_THAT(tally.consumed, ::testing::ElementsAre(false, true));
}

TEST(GpuLedgerWrite, DropsExpiredAndReplacedReservationsAndRemembersPods) {
  const GpuPod visible = generated_pod("uid-1", "aaaaa");
  GpuLedger ledger;
  ledger.reservations = {generated("expired", 1, kNow - 1), generated("replaced"), generated("pending")};
  ledger.seen["0000dead"] = kNow - 200;  // a pod gone long ago
  ledger.seen["0000beef"] = kNow - 30;   // gone recently, or missing from a lagging view
  const GpuTally tally = tally_gpus(ledger, {visible}, kNow);
  const GpuLedger next = next_gpu_ledger(ledger, tally, {visible}, kNow, 120);
  ASSERT_EQ(next.reservations.size(), 1u);
  EXPECT_EQ(next.reservations[0].id, "pending");
  EXPECT_EQ(next.seen.size(), 2u);
  EXPECT_EQ(next.seen.at(gpu_pod_id(visible)), kNow);
  EXPECT_EQ(next.seen.at("0000beef"), kNow - 30);
  // The pod is now seen: the next writer does not let it replace "pending" too.
  EXPECT_EQ(tally_gpus(next, {visible}, kNow).reserved, 1);
}

TEST(GpuLedgerWrite, RoundTripsThroughLeaseAnnotations) {
  GpuLedger ledger;
  ledger.reservations = {generated("a", 0.142857), {"b", "db-0", false, 2, kNow + 5}};
  ledger.seen["12345678"] = kNow;
  Json lease = {{"metadata", {{"name", "x"}}}};
  write_gpu_ledger(lease, ledger);
  const GpuLedger back = read_gpu_ledger(lease);
  ASSERT_EQ(back.reservations.size(), 2u);
  EXPECT_EQ(back.reservations[0].id, "a");
  EXPECT_TRUE(back.reservations[0].generated);
  EXPECT_DOUBLE_EQ(back.reservations[0].gpus, 0.142857);
  EXPECT_EQ(back.reservations[1].pod, "db-0");
  EXPECT_EQ(back.reservations[1].expires, kNow + 5);
  EXPECT_EQ(back.seen, ledger.seen);

  lease["metadata"]["annotations"]["sizeguard.io/gpu-reservations"] = "not json";
  EXPECT_TRUE(read_gpu_ledger(lease).reservations.empty());
  EXPECT_TRUE(read_gpu_ledger(Json()).seen.empty());
}

TEST(GpuPodId, EightHexDigitsOfTheUidElseTheName) {
  EXPECT_THAT(gpu_pod_id({"66d7715e-0869-4064-b26d-cee0edb77ebb", "a", "", 1}), ::testing::MatchesRegex("[0-9a-f]{8}"));
  EXPECT_NE(gpu_pod_id({"uid-1", "a", "", 1}), gpu_pod_id({"uid-2", "a", "", 1}));
  EXPECT_NE(gpu_pod_id({"", "a", "", 1}), gpu_pod_id({"", "b", "", 1}));
}

// --- what the engine asks to reserve ---------------------------------------------------

PolicySet quota_policy(const std::string& extra = "") {
  PolicyLoad load = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: ml-quota}\nspec:\n" +
                                       extra + "  gpu: {namespaceTotal: 16}\n",
                                   "test.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  PolicySet set;
  set.policies = std::move(load.policies);
  return set;
}

AdmissionRequest replicaset_pod_with_gpus(int gpus) {
  // What a real kube-apiserver 1.28.7 sent for a Pod a ReplicaSet creates: no name yet.
  auto decoded = decode_admission_review(test::load_apiserver_fixture("pod-create-from-replicaset.json"));
  auto request = std::get<AdmissionRequest>(std::move(decoded));
  EXPECT_FALSE(request.object["metadata"].contains("name"));
  EXPECT_TRUE(request.name.empty());
  request.object["spec"]["containers"][0]["resources"] = {{"limits", {{"nvidia.com/gpu", gpus}}}};
  return request;
}

Json running_pod(const std::string& name, const std::string& uid, int gpus) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "webhook-test"}, {"uid", uid}, {"generateName", "demo-6f8547b4f8-"}}},
          {"spec", {{"containers", Json::array({Json{{"name", "app"}, {"resources", {{"limits", {{"nvidia.com/gpu", gpus}}}}}}})}}},
          {"status", {{"phase", "Running"}}}};
}

TEST(GpuCharges, AGeneratedPodIsReservedByItsGenerateName) {
  FileClusterState state(std::vector<Json>{
      Json{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", "webhook-test"}}}},
      running_pod("demo-6f8547b4f8-aaaaa", "uid-a", 2), running_pod("cpu-only", "uid-c", 0)});
  Decision d = evaluate_policies(replicaset_pod_with_gpus(1), quota_policy(), state, {});
  EXPECT_TRUE(d.allowed());
  ASSERT_EQ(d.gpu_charges.size(), 1u);
  const GpuCharge& c = d.gpu_charges[0];
  EXPECT_EQ(c.policy, "ml-quota");
  EXPECT_EQ(c.namespace_, "webhook-test");
  EXPECT_EQ(c.pod, "demo-6f8547b4f8-");
  EXPECT_TRUE(c.generated);
  EXPECT_EQ(c.gpus, 1);
  EXPECT_EQ(c.limit, 16);
  EXPECT_FALSE(c.over_limit);
  EXPECT_EQ(c.mode, Mode::Enforce);
  EXPECT_EQ(c.rule.namespace_total, 16);

  // What the reservation step lists again after reading the Lease: GPU pods only.
  auto listed = list_gpu_pods(state, "webhook-test", c.rule);
  const auto& pods = std::get<std::vector<GpuPod>>(listed);
  ASSERT_EQ(pods.size(), 1u) << "pods without GPUs are left out";
  EXPECT_EQ(pods[0].uid, "uid-a");
  EXPECT_EQ(pods[0].name, "demo-6f8547b4f8-aaaaa");
  EXPECT_EQ(pods[0].generate_name, "demo-6f8547b4f8-");
  EXPECT_EQ(pods[0].gpus, 2);
}

TEST(GpuCharges, ModeIsTheEffectiveOneAndOverLimitIsSaid) {
  FileClusterState state(std::vector<Json>{
      Json{{"apiVersion", "v1"},
           {"kind", "Namespace"},
           {"metadata", {{"name", "webhook-test"}, {"labels", {{"sizeguard.io/mode", "audit"}}}}}},
      running_pod("demo-6f8547b4f8-aaaaa", "uid-a", 16)});
  Decision d = evaluate_policies(replicaset_pod_with_gpus(1), quota_policy(), state, {});
  EXPECT_TRUE(d.allowed());
  ASSERT_EQ(d.gpu_charges.size(), 1u);
  EXPECT_EQ(d.gpu_charges[0].mode, Mode::Audit) << "the namespace label wins";
  EXPECT_TRUE(d.gpu_charges[0].over_limit);
  // Pods without GPUs ask nothing of the quota.
  EXPECT_TRUE(evaluate_policies(replicaset_pod_with_gpus(0), quota_policy(), state, {}).gpu_charges.empty());
}

}  // namespace
}  // namespace sizeguard
