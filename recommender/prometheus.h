// Usage history from Prometheus (cAdvisor metrics, optionally kube-state-metrics for owners).
//
// read_prometheus runs two range queries over /api/v1/query_range (GET, url-encoded params),
// split into chunks of at most max_points_per_request points per series (Prometheus refuses
// more than 11,000), one for CPU cores and one for memory bytes. Each result series must carry
// the labels namespace, pod and container (the default queries group by exactly those).
//
// Pods are grouped into workloads:
//  1. kube_pod_owner (kube-state-metrics, read through /api/v1/series over the same range) when
//     it knows the pod: a ReplicaSet owner "web-7d4b9c" is Deployment "web" (the trailing
//     pod-template-hash segment is stripped; a ReplicaSet whose name has no hash-like suffix stays
//     a ReplicaSet); a Job owner "backup-28391040" (numeric schedule suffix, 8+ digits) is CronJob
//     "backup"; StatefulSet, DaemonSet, other Jobs and custom kinds map directly; pods owned by a
//     Node (static/mirror pods) or by nothing ("<none>") are kind "Pod" named after the pod.
//  2. Otherwise the pod name: "<name>-<replicaset hash>-<5 char suffix>" is Deployment <name>,
//     "<name>-<ordinal>" is StatefulSet <name>, anything else is Pod <pod name> (DaemonSet and
//     Job pods need kube_pod_owner to be grouped).
//
// Several pods of one workload become ONE series per container: at each timestamp the value is
// the MAX across the pods, separately for CPU and for memory. Requests are per pod, so the
// series must describe what one replica needs: a sum would describe the whole workload (and
// jump with the replica count), a mean would hide the hottest replica and overlapping pods
// during rollouts; the max is the conservative per-replica demand. CPU and memory are then
// merged by timestamp; a timestamp that has only one of the two is dropped and counted in
// report.rows_bad with one note per series. Non-finite values (NaN, Inf) are counted as bad.
// report.rows_read counts the merged (workload container, timestamp) points plus non-finite
// raw points. spec (requests/limits) is left empty: this source reads usage only.
//
// Errors: an unreachable server throws "cannot reach Prometheus at <url>: <reason>"; an error
// answer throws with Prometheus's errorType and error text verbatim; no usable series throws.
// If kube_pod_owner cannot be read the pod-name fallback is used and a note is added.
//
// OOM kills: a workload container with a kube_pod_container_status_last_terminated_reason
// {reason="OOMKilled"} series in the last 7 days of the range (kube-state-metrics) gets
// oom_killed, so the webhook never lowers its memory. Unavailable: a note, no flag.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "recommender/usage.h"

namespace sizeguard {

struct PrometheusOptions {
  std::string url;           // http(s)://host[:port][/path-prefix]
  std::string bearer_token;  // sent as "Authorization: Bearer <token>" when non-empty
  std::string ca_file;       // PEM CA bundle for https (empty: system trust store)
  int64_t start = 0, end = 0;  // epoch seconds, inclusive range
  int64_t step_seconds = 300;
  std::chrono::milliseconds timeout{30000};  // connect and read timeout per request
  std::string cpu_query =
      "sum by (namespace, pod, container) "
      "(rate(container_cpu_usage_seconds_total{container!=\"\",container!=\"POD\"}[5m]))";
  std::string memory_query =
      "max by (namespace, pod, container) "
      "(container_memory_working_set_bytes{container!=\"\",container!=\"POD\"})";
  int64_t max_points_per_request = 11000;  // Prometheus's limit per series and request
  bool use_pod_owner = true;               // read kube_pod_owner for grouping
  bool use_oom_kills = true;               // read kube_pod_container_status_last_terminated_reason
};

std::vector<UsageSeries> read_prometheus(const PrometheusOptions& options, IngestReport& report);

// The workload a pod belongs to (see the grouping rules above).
struct WorkloadRef {
  std::string kind;
  std::string name;
  bool operator==(const WorkloadRef&) const = default;
};
WorkloadRef workload_from_owner(std::string_view owner_kind, std::string_view owner_name, std::string_view pod);
WorkloadRef workload_from_pod_name(std::string_view pod);

}  // namespace sizeguard
