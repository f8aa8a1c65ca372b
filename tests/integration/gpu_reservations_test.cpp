// GPU namespace totals under concurrent admissions: two webhook instances (each its own
// API client, cluster state and reservation store) in front of one (fake) apiserver.
// Reservations live in a Lease written with compare-and-swap, pods that appear replace
// their reservations, reservations of pods that never appear expire, dry runs and denied
// pods reserve nothing.
#include <atomic>
#include <barrier>
#include <regex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policies/api_cluster_state.h"
#include "policies/gpu_reservations.h"
#include "policies/loader.h"
#include "support/fake_apiserver.h"
#include "webhook/app/handlers.h"
#include "kube/kubeapi.h"

namespace sizeguard {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

const std::string kLeases = "apis/coordination.k8s.io/v1";
constexpr const char* kNamespace = "ml-team";
constexpr int64_t kStart = 1'800'000'000;

std::shared_ptr<const PolicySet> policies(const std::string& yaml) {
  PolicyLoad load = parse_policies(yaml, "gpu.yaml");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  return set;
}

std::string quota(const std::string& name, int total, const std::string& extra = "") {
  return "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n" + extra +
         "  gpu: {namespaceTotal: " + std::to_string(total) + "}\n";
}

// One webhook instance. Its clock is shared with the test so expiry can be driven.
struct Instance {
  Instance(const test::FakeApiServer& api, std::shared_ptr<const PolicySet> set, std::atomic<int64_t>& now,
           KubeConfig lease_config = {})
      : client(api.client_config()),
        lease_client(lease_config.server.empty() ? api.client_config() : lease_config),
        state(client),
        reservations(lease_client, "sizeguard-system") {
    describe_handler_metrics(metrics);
    context.policies = [set] { return set; };
    context.cluster_state = &state;
    context.gpu_reservations = &reservations;
    context.metrics = &metrics;
    context.clock = [&now] { return std::chrono::system_clock::time_point(std::chrono::seconds(now.load())); };
  }
  double metric(const std::string& result) const {
    std::smatch m;
    const std::string text = metrics.render();
    const std::regex line("sizeguard_gpu_reservations_total\\{result=\"" + result + "\"\\} ([0-9.]+)");
    return std::regex_search(text, m, line) ? std::stod(m[1]) : 0;
  }
  KubeClient client;
  KubeClient lease_client;
  ApiClusterState state;
  LeaseGpuReservationStore reservations;
  Metrics metrics;
  AdmissionContext context;
};

// A Pod CREATE as a ReplicaSet sends it: generateName only, the name comes after admission.
AdmissionRequest pod_create(int serial, int gpus = 1, bool dry_run = false, const std::string& prefix = "train-6f8547b4f8-") {
  AdmissionRequest r;
  r.api_version = "admission.k8s.io/v1";
  r.uid = "create-" + std::to_string(serial);
  r.kind = {"", "v1", "Pod"};
  r.resource = {"", "v1", "pods"};
  r.namespace_ = kNamespace;
  r.operation = Operation::Create;
  r.dry_run = dry_run;
  r.object = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"generateName", prefix}, {"namespace", kNamespace}}},
              {"spec", {{"containers", Json::array({Json{{"name", "train"},
                                                         {"resources", {{"limits", {{"nvidia.com/gpu", gpus}}}}}}})}}}};
  return r;
}

class GpuReservations : public ::testing::Test {
 protected:
  void SetUp() override {
    api_.put("api/v1", "namespaces", "", {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", kNamespace}}}});
  }
  // What the apiserver does after admitting: the pod exists, with a generated name and a uid.
  void create_pod(const AdmissionRequest& admitted, const std::string& phase = "Pending") {
    Json pod = admitted.object;
    const std::string name = pod["metadata"].value("generateName", std::string()) + admitted.uid;
    pod["metadata"]["name"] = name;
    pod["metadata"]["uid"] = "uid-" + admitted.uid;
    pod["status"] = {{"phase", phase}};
    api_.put("api/v1", "pods", kNamespace, pod);
  }
  void finish_pod(const AdmissionRequest& admitted) { create_pod(admitted, "Succeeded"); }
  GpuLedger ledger(const std::string& policy = "ml-quota") {
    auto lease = api_.get(kLeases, "leases", "sizeguard-system", LeaseGpuReservationStore::lease_name(policy, kNamespace));
    return lease ? read_gpu_ledger(*lease) : GpuLedger{};
  }
  test::FakeApiServer api_;
  std::atomic<int64_t> now_{kStart};
};

TEST_F(GpuReservations, FortyConcurrentCreatesOnTwoInstancesAdmitExactlyTheQuota) {
  // Two ReplicaSets' pods at once, as in issue #14 (two 12-replica Deployments applied
  // together). Most admitted pods are created right away by their thread, so the others
  // see a mix of visible pods and reservations whose pods are not visible yet. Every API
  // answer is slowed so that writers overlap and meet resourceVersion conflicts.
  auto set = policies(quota("ml-quota", 16));
  Instance a(api_, set, now_), b(api_, set, now_);
  constexpr int kCreates = 40;
  std::barrier start(kCreates);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  std::vector<AdmissionRequest> requests;
  for (int i = 0; i < kCreates; ++i) {
    requests.push_back(pod_create(i, 1, false, (i / 2) % 2 ? "train-6f8547b4f8-" : "eval-58c7d9f5b-"));
  }
  // cpp-httplib builds a function-local static std::regex on its first connection; it is
  // not built with TSan, so that initialisation racing in 40 threads would be reported.
  // One request before the threads start.
  ASSERT_TRUE(std::holds_alternative<Json>(a.client.get_json("/api/v1/namespaces/ml-team")));
  api_.set_delay(5ms);
  api_.clear_requests();
  std::vector<char> allowed(kCreates, 0);
  for (int i = 0; i < kCreates; ++i) {
    threads.emplace_back([&, i] {
      Instance& instance = i % 2 ? a : b;
      start.arrive_and_wait();
      AdmissionResponse response = validate(requests[i], instance.context);
      if (!response.allowed) {
        ASSERT_TRUE(response.status);
        EXPECT_EQ(response.status->causes.at(0).reason, "GPUQuotaExceeded") << response.status->message;
        return;
      }
      allowed[i] = 1;
      ++admitted;
      if (i % 3) create_pod(requests[i]);  // some pods stay "being created"
    });
  }
  for (auto& t : threads) t.join();
  api_.set_delay(0ms);
  EXPECT_EQ(admitted.load(), 16);
  int lease_writes = 0;
  for (const auto& request : api_.requests()) {
    lease_writes += request.find("/leases") != std::string::npos && request.rfind("GET ", 0) != 0;
  }
  EXPECT_GT(lease_writes, 16) << "writers lost compare-and-swap races and retried";
  EXPECT_EQ(a.metric("reserved") + b.metric("reserved"), 16);
  // The others were denied GPUQuotaExceeded (above), by the pods alone or with the reservations.
  EXPECT_LE(a.metric("exceeded") + b.metric("exceeded"), kCreates - 16);
  EXPECT_EQ(a.metric("error") + b.metric("error"), 0) << "no writer ran out of compare-and-swap attempts";

  // Everything admitted becomes visible: 16 pods, nothing more fits.
  for (int i = 0; i < kCreates; ++i) {
    if (allowed[i] && i % 3 == 0) create_pod(requests[i]);
  }
  AdmissionResponse full = validate(pod_create(100), a.context);
  ASSERT_FALSE(full.allowed);
  EXPECT_THAT(full.status->message, HasSubstr("namespace ml-team: 16 of 16 GPUs in use, this pod asks 1"));
  // Four pods finish. Pods no write saw while they ran keep their reservations until
  // they lapse; after that, exactly four more fit.
  int finished = 0;
  for (int i = 0; i < kCreates && finished < 4; ++i) {
    if (allowed[i]) {
      finish_pod(requests[i]);
      ++finished;
    }
  }
  now_ += kGpuReservationTtl.count();
  int more = 0;
  for (int i = 200; i < 206; ++i) more += validate(pod_create(i), i % 2 ? a.context : b.context).allowed;
  EXPECT_EQ(more, 4);
}

TEST_F(GpuReservations, APodThatFinishesFreesItsGpus) {
  auto set = policies(quota("ml-quota", 2));
  Instance a(api_, set, now_);
  AdmissionRequest first = pod_create(1), second = pod_create(2);
  ASSERT_TRUE(validate(first, a.context).allowed);
  create_pod(first);
  ASSERT_TRUE(validate(second, a.context).allowed);  // this write sees the first pod
  create_pod(second);
  EXPECT_FALSE(validate(pod_create(3), a.context).allowed);
  finish_pod(first);
  EXPECT_TRUE(validate(pod_create(4), a.context).allowed) << "the finished pod's GPUs are free at once";
  EXPECT_FALSE(validate(pod_create(5), a.context).allowed);
}

TEST_F(GpuReservations, APodThatAppearsReplacesItsReservation) {
  auto set = policies(quota("ml-quota", 16));
  Instance a(api_, set, now_), b(api_, set, now_);
  for (int i = 0; i < 12; ++i) {
    AdmissionRequest request = pod_create(i);
    ASSERT_TRUE(validate(request, i % 2 ? a.context : b.context).allowed) << i;
    create_pod(request);
  }
  // 12 pods, not 12 pods + 12 reservations: four more fit, the fifth does not.
  for (int i = 12; i < 16; ++i) EXPECT_TRUE(validate(pod_create(i), a.context).allowed) << i;
  EXPECT_EQ(ledger().reservations.size(), 4u) << "the visible pods' reservations are gone";
  AdmissionResponse fifth = validate(pod_create(16), b.context);
  ASSERT_FALSE(fifth.allowed);
  EXPECT_EQ(fifth.status->causes.at(0).reason, "GPUQuotaExceeded");
  EXPECT_THAT(fifth.status->message,
              HasSubstr("namespace ml-team: 16 of 16 GPUs in use or reserved (12 by pods, 4 reserved for pods being "
                        "created), this pod asks 1 (policy ml-quota)"));
  EXPECT_THAT(b.metrics.render(),
              HasSubstr("sizeguard_policy_decisions_total{policy=\"ml-quota\",rule=\"gpu\",mode=\"enforce\",result=\"deny\"} 1"))
      << "the gpu rule's outcome says who denied";
}

TEST_F(GpuReservations, AReservationWhosePodNeverAppearsExpires) {
  auto set = policies(quota("ml-quota", 2));
  Instance a(api_, set, now_);
  EXPECT_TRUE(validate(pod_create(1), a.context).allowed);
  EXPECT_TRUE(validate(pod_create(2), a.context).allowed);
  EXPECT_FALSE(validate(pod_create(3), a.context).allowed) << "two reserved pods fill the quota";
  now_ += kGpuReservationTtl.count() - 1;
  EXPECT_FALSE(validate(pod_create(4), a.context).allowed) << "not expired yet";
  now_ += 1;
  EXPECT_TRUE(validate(pod_create(5), a.context).allowed) << "the pods never appeared: their GPUs are free again";
  ASSERT_EQ(ledger().reservations.size(), 1u) << "the expired reservations are dropped at the next write";
  EXPECT_EQ(ledger().reservations[0].id, "create-5");
}

TEST_F(GpuReservations, DryRunsAreCheckedButReserveNothing) {
  auto set = policies(quota("ml-quota", 2));
  Instance a(api_, set, now_);
  EXPECT_TRUE(validate(pod_create(1, 1, /*dry_run=*/true), a.context).allowed);
  EXPECT_FALSE(api_.get(kLeases, "leases", "sizeguard-system", LeaseGpuReservationStore::lease_name("ml-quota", kNamespace)))
      << "a dry run writes nothing";
  EXPECT_TRUE(validate(pod_create(2, 2), a.context).allowed);
  const std::string version =
      api_.get(kLeases, "leases", "sizeguard-system", LeaseGpuReservationStore::lease_name("ml-quota", kNamespace))
          ->at("metadata")
          .at("resourceVersion");
  AdmissionResponse over = validate(pod_create(3, 1, true), a.context);
  EXPECT_FALSE(over.allowed) << "a dry run is told the truth";
  EXPECT_EQ(over.status->causes.at(0).reason, "GPUQuotaExceeded");
  EXPECT_EQ(api_.get(kLeases, "leases", "sizeguard-system", LeaseGpuReservationStore::lease_name("ml-quota", kNamespace))
                ->at("metadata")
                .at("resourceVersion"),
            version);
  EXPECT_EQ(a.metric("checked"), 1);
  EXPECT_EQ(a.metric("reserved"), 1);

  // `sizeguard review` against a live cluster counts reservations but never writes one.
  CheckOnlyGpuReservationStore check_only(a.reservations);
  a.context.gpu_reservations = &check_only;
  EXPECT_FALSE(validate(pod_create(4), a.context).allowed);
  EXPECT_EQ(ledger().reservations.size(), 1u);
  now_ += kGpuReservationTtl.count();
  EXPECT_TRUE(validate(pod_create(5), a.context).allowed);
  EXPECT_EQ(api_.get(kLeases, "leases", "sizeguard-system", LeaseGpuReservationStore::lease_name("ml-quota", kNamespace))
                ->at("metadata")
                .at("resourceVersion"),
            version);
}

TEST_F(GpuReservations, ARepeatedCallForOneRequestReservesOnce) {
  // The apiserver may call again with the same AdmissionReview (same uid) when the first
  // answer was lost: the pod is still one pod.
  auto set = policies(quota("ml-quota", 1));
  Instance a(api_, set, now_);
  EXPECT_TRUE(validate(pod_create(1), a.context).allowed);
  EXPECT_TRUE(validate(pod_create(1), a.context).allowed);
  EXPECT_EQ(ledger().reservations.size(), 1u);
  EXPECT_FALSE(validate(pod_create(2), a.context).allowed);
}

TEST_F(GpuReservations, ADenialLaterInTheDecisionTakesTheReservationBack) {
  // Two quotas on one namespace: the wide one reserves, the tight one then denies.
  auto set = policies(quota("wide", 16) + "---\n" + quota("tight", 2));
  Instance a(api_, set, now_);
  EXPECT_TRUE(validate(pod_create(1), a.context).allowed);
  EXPECT_TRUE(validate(pod_create(2), a.context).allowed);
  AdmissionResponse third = validate(pod_create(3), a.context);
  ASSERT_FALSE(third.allowed);
  EXPECT_THAT(third.status->message, HasSubstr("policy tight"));
  EXPECT_EQ(ledger("wide").reservations.size(), 2u) << "the denied pod's reservation was refunded";
  EXPECT_EQ(ledger("tight").reservations.size(), 2u);
  EXPECT_EQ(a.metric("refunded"), 1);
}

TEST_F(GpuReservations, OutsideEnforceModeAnAdmittedPodIsReservedAnyway) {
  auto set = policies(quota("ml-quota", 1, "  mode: warn\n"));
  Instance a(api_, set, now_);
  EXPECT_TRUE(validate(pod_create(1), a.context).allowed);
  AdmissionResponse second = validate(pod_create(2), a.context);
  EXPECT_TRUE(second.allowed);
  ASSERT_EQ(second.warnings.size(), 1u);
  EXPECT_THAT(second.warnings[0], HasSubstr("[warn] GPUQuotaExceeded: namespace ml-team: 1 of 1 GPUs in use or reserved"));
  EXPECT_EQ(ledger().reservations.size(), 2u) << "the pod will exist: it is counted";
}

TEST_F(GpuReservations, AnUnreachableLeaseFollowsOnClusterStateError) {
  KubeConfig wrong = api_.client_config();
  wrong.token = "not-the-token";  // the lease calls get 401, the pod list works
  auto deny = policies(quota("ml-quota", 16));
  Instance a(api_, deny, now_, wrong);
  AdmissionResponse response = validate(pod_create(1), a.context);
  ASSERT_FALSE(response.allowed);
  EXPECT_EQ(response.status->causes.at(0).reason, "ClusterStateUnavailable");
  EXPECT_THAT(response.status->message, HasSubstr("GPU reservations: GET lease sizeguard-gpu-"));
  EXPECT_THAT(response.status->message, HasSubstr("onClusterStateError: deny"));
  EXPECT_EQ(a.metric("error"), 1);

  auto allow = policies(quota("ml-quota", 16, "  onClusterStateError: allow\n"));
  Instance b(api_, allow, now_, wrong);
  response = validate(pod_create(2), b.context);
  EXPECT_TRUE(response.allowed);
  ASSERT_EQ(response.warnings.size(), 1u);
  EXPECT_THAT(response.warnings[0], HasSubstr("ClusterStateUnavailable"));
}

}  // namespace
}  // namespace sizeguard
