// Options shared by `serve` and `review` (where policies, cluster state and the model
// come from) and the runtime built from them: the AdmissionContext plus whatever keeps
// it fresh (hot reloaders).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "policies/store.h"
#include "webhook/app/handlers.h"
#include "recommender/recommendation_store.h"
#include "webhook/audit.h"
#include "kube/kubeapi.h"
#include "kube/metrics.h"
#include "webhook/server.h"

namespace sizeguard {

struct RuntimeOptions {
  std::string policies = "/etc/sizeguard/policies";  // "" = no policies
  std::string policy_poll_interval = "2s";
  std::string mode = "enforce";
  std::string audit_log;        // "-" = stdout, "" = off
  std::string kubeconfig;       // cluster access from a kubeconfig ...
  std::string kube_context;
  bool in_cluster = false;      // ... or the pod's service account
  std::string cluster_state;    // ... or, offline, manifests standing in for the cluster
  std::string cluster_cache_ttl = "10s";
  std::string budget_namespace;
  std::string recommendations;  // snapshot from `sizeguard recommend`; "" = none
  std::string model;            // model directory (cold-start estimates, model version); "" = none  // where change-budget Leases live; default $POD_NAMESPACE or sizeguard-system
  bool watch_policies = true;   // serve polls for changes; review loads once
  bool auto_in_cluster = false; // serve: use the service account when running in a pod
  // serve: cluster state from watches kept in memory; review: GETs with the TTL cache.
  bool watch_cluster_state = false;
  std::string watch_max_staleness = "60s";  // a watch broken this long: state reads fail
  // serve: audit lines are buffered and written by a background thread (off the request
  // path); drops counted in sizeguard_log_lines_dropped_total{log="audit"}.
  bool buffered_audit = false;
};

// `serve` and `review` differ only in defaults: serve audits to stdout and expects the
// mounted ConfigMap; review audits nowhere unless asked.
void add_runtime_options(CLI::App& command, RuntimeOptions& options);

// "250ms", "10s", "2m", "1h" or a bare number of seconds; throws std::invalid_argument
// naming the flag.
std::chrono::milliseconds parse_duration(const std::string& flag, const std::string& text);

struct Runtime {
  // Declared before cluster_state so it is destroyed after it: the API client it uses.
  std::shared_ptr<void> keep_alive;
  KubeClient* kube = nullptr;       // the API client kept alive above; null without cluster access
  std::string lease_namespace;      // where sizeguard's Leases live (budgets, audit leader)
  AdmissionContext context;
  std::unique_ptr<PolicyStore> policies;
  std::unique_ptr<ClusterState> cluster_state;
  std::unique_ptr<BudgetStore> budgets;
  std::unique_ptr<GpuReservationStore> gpu_reservations;
  std::unique_ptr<AuditLog> audit;
  std::unique_ptr<RecommendationStore> recommendations;
  std::shared_ptr<const ModelMetadata> model;
  std::string model_version;
  std::unique_ptr<RecommendationReport> report;
};

// Builds the runtime; throws std::runtime_error with a clear message on bad
// configuration. With `readiness`, policy load status is reported as component
// "policies". The first policy load happens here; its errors throw only if
// `require_policies` (review, lint) — serve starts not-ready instead.
std::unique_ptr<Runtime> make_runtime(const RuntimeOptions& options, Metrics& metrics, Readiness* readiness = nullptr,
                                      bool require_policies = false);

}  // namespace sizeguard
