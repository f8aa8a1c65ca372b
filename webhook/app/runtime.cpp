#include "webhook/app/runtime.h"

#include <charconv>
#include <cstdlib>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "policies/api_cluster_state.h"
#include "policies/file_cluster_state.h"
#include "policies/watch_cluster_state.h"
#include "kube/kubeapi.h"
#include "webhook/logging.h"

namespace sizeguard {

std::chrono::milliseconds parse_duration(const std::string& flag, const std::string& text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  const double scale = unit.empty() || unit == "s" ? 1000
                       : unit == "ms"              ? 1
                       : unit == "m"               ? 60'000
                       : unit == "h"               ? 3'600'000
                                                   : -1;
  if (text.empty() || ec != std::errc() || scale < 0 || value <= 0) {
    throw std::invalid_argument(flag + ": '" + text + "' is not a positive duration (e.g. 500ms, 10s, 2m)");
  }
  return std::chrono::milliseconds(static_cast<long long>(value * scale + 0.5));
}

void add_runtime_options(CLI::App& command, RuntimeOptions& options) {
  command.add_option("--policies", options.policies,
                     "policy file or directory (a mounted ConfigMap); '' for none")
      ->capture_default_str();
  command.add_option("--mode", options.mode,
                     "default mode for policies without spec.mode: enforce, warn or audit "
                     "(namespace label sizeguard.io/mode overrides both)")
      ->capture_default_str();
  command.add_option("--audit-log", options.audit_log, "where audit lines go: a file, '-' for stdout, '' for none")
      ->capture_default_str();
  command.add_option("--kubeconfig", options.kubeconfig, "cluster access through this kubeconfig");
  command.add_option("--context", options.kube_context, "kubeconfig context (default: current-context)");
  command.add_flag("--in-cluster", options.in_cluster,
                   "cluster access through the pod's service account (automatic when KUBERNETES_SERVICE_HOST is set)");
  command.add_option("--cluster-state", options.cluster_state,
                     "offline: manifests (Namespaces, Pods, workloads) standing in for the cluster");
  if (options.watch_cluster_state) {
    command.add_option("--watch-max-staleness", options.watch_max_staleness,
                       "a watch of cluster state broken this long makes rules needing that state report "
                       "ClusterStateUnavailable (onClusterStateError applies)")
        ->capture_default_str();
  } else {
    command.add_option("--cluster-cache-ttl", options.cluster_cache_ttl,
                       "how long namespace labels and parent objects read from the API are reused")
        ->capture_default_str();
  }
  command.add_option("--budget-namespace", options.budget_namespace,
                     "namespace of the change-budget and GPU-reservation Leases (default: $POD_NAMESPACE, else sizeguard-system)");
  command.add_option("--recommendations", options.recommendations,
                     "recommendations snapshot written by `sizeguard recommend` (hot-reloaded)");
  command.add_option("--model", options.model, "model directory: cold-start estimates for workloads without history");
  if (options.watch_policies) {
    command.add_option("--policy-poll-interval", options.policy_poll_interval,
                       "how often the policy directory is checked for changes")
        ->capture_default_str();
  }
}

std::unique_ptr<Runtime> make_runtime(const RuntimeOptions& options, Metrics& metrics, Readiness* readiness,
                                      bool require_policies) {
  auto runtime = std::make_unique<Runtime>();
  auto mode = mode_from(options.mode);
  if (!mode) throw std::runtime_error("--mode: expected enforce, warn or audit, got '" + options.mode + "'");
  const auto poll = parse_duration("--policy-poll-interval", options.policy_poll_interval);
  const auto cache_ttl = parse_duration("--cluster-cache-ttl", options.cluster_cache_ttl);
  const auto max_staleness = parse_duration("--watch-max-staleness", options.watch_max_staleness);

  describe_handler_metrics(metrics);
  std::optional<LineWriterOptions> buffering;
  if (options.buffered_audit) {
    describe_log_drop_metric(metrics);
    buffering.emplace();
    buffering->on_drop = [&metrics](std::size_t lines) {
      metrics.increment(kLogLinesDropped, {{"log", "audit"}}, static_cast<double>(lines));
    };
  }
  runtime->audit = std::make_unique<AuditLog>(options.audit_log, std::move(buffering));

  // Cluster state: manifests offline, else the API (kubeconfig, or the service account
  // when asked or when running in a pod), else none: rules needing it report so.
  const bool in_pod = std::getenv("KUBERNETES_SERVICE_HOST") != nullptr;
  const int sources = !options.cluster_state.empty() + !options.kubeconfig.empty() + options.in_cluster;
  if (sources > 1) throw std::runtime_error("--cluster-state, --kubeconfig and --in-cluster are alternatives: pick one");
  if (!options.cluster_state.empty()) {
    runtime->cluster_state = std::make_unique<FileClusterState>(options.cluster_state);
  } else if (!options.kubeconfig.empty() || options.in_cluster || (in_pod && options.auto_in_cluster)) {
    auto config = options.kubeconfig.empty() ? in_cluster_config() : kubeconfig_config(options.kubeconfig, options.kube_context);
    if (auto* error = std::get_if<std::string>(&config)) throw std::runtime_error("cluster access: " + *error);
    auto client = std::make_shared<KubeClient>(std::get<KubeConfig>(config));
    if (options.watch_cluster_state) {
      WatchClusterStateOptions watch;
      watch.max_staleness = max_staleness;
      watch.metrics = &metrics;
      if (readiness) {
        watch.readiness = [readiness](const std::string& component, bool ready, const std::string& reason) {
          readiness->set(component, ready, reason);
        };
      }
      auto state = std::make_unique<WatchClusterState>(*client, std::move(watch));
      state->start();
      runtime->cluster_state = std::move(state);
    } else {
      runtime->cluster_state = std::make_unique<ApiClusterState>(*client, cache_ttl);
    }
    std::string budget_namespace = options.budget_namespace;
    if (budget_namespace.empty()) budget_namespace = std::getenv("POD_NAMESPACE") ? std::getenv("POD_NAMESPACE") : "sizeguard-system";
    runtime->budgets = std::make_unique<LeaseBudgetStore>(*client, budget_namespace);
    runtime->gpu_reservations = std::make_unique<LeaseGpuReservationStore>(*client, budget_namespace);
    if (options.watch_cluster_state) {
      spdlog::info("cluster state from watches of the Kubernetes API ({}), max staleness {} ms",
                   client->config().source, max_staleness.count());
    } else {
      spdlog::info("cluster state from the Kubernetes API ({}), cache TTL {} ms", client->config().source,
                   cache_ttl.count());
    }
    runtime->keep_alive = client;
    runtime->kube = client.get();
    runtime->lease_namespace = budget_namespace;
  } else {
    runtime->cluster_state = std::make_unique<UnavailableClusterState>(
        "no cluster access configured (use --kubeconfig, --in-cluster or, offline, --cluster-state FILE)");
  }

  PolicyStore::StatusCallback on_status;
  if (readiness) {
    on_status = [readiness](bool ready, const std::string& reason) { readiness->set("policies", ready, reason); };
  }
  runtime->policies = std::make_unique<PolicyStore>(options.policies, metrics, on_status);
  auto errors = runtime->policies->reload();
  if (!errors.empty() && require_policies) {
    std::string message = "policies did not load:";
    for (const auto& e : errors) message += "\n  " + e;
    throw std::runtime_error(message);
  }
  if (options.watch_policies) runtime->policies->start(poll);

  // Right-sizing: a snapshot and/or a model; without either, /mutate changes nothing.
  if (!options.model.empty()) {
    try {
      // Only the metadata and version are kept: one thread, so serving never starts an
      // OpenMP pool beside its own workers.
      QuantileModel model = QuantileModel::load(options.model, 1);
      runtime->model = std::make_shared<const ModelMetadata>(model.metadata());
      runtime->model_version = model.version();
    } catch (const std::exception& e) {
      throw std::runtime_error("--model " + options.model + ": " + e.what());
    }
  }
  if (!options.recommendations.empty()) {
    RecommendationStore::StatusCallback on_status;
    if (readiness) {
      on_status = [readiness](bool ready, const std::string& reason) { readiness->set("recommendations", ready, reason); };
    }
    runtime->recommendations = std::make_unique<RecommendationStore>(options.recommendations, metrics, on_status);
    const std::string error = runtime->recommendations->reload();
    if (!error.empty() && require_policies) throw std::runtime_error("--recommendations: " + error);
    if (options.watch_policies) runtime->recommendations->start(poll);
  }
  runtime->report = std::make_unique<RecommendationReport>(metrics);
  if (runtime->model || runtime->recommendations) {
    runtime->context.rightsizing = [r = runtime.get()] {
      return RightsizingInputs{r->recommendations ? r->recommendations->current() : nullptr, r->model, r->model_version};
    };
    runtime->context.report = runtime->report.get();
  }

  runtime->context.policies = [store = runtime->policies.get()] { return store->current(); };
  runtime->context.cluster_state = runtime->cluster_state.get();
  runtime->context.budgets = runtime->budgets.get();
  runtime->context.gpu_reservations = runtime->gpu_reservations.get();
  runtime->context.evaluation.default_mode = *mode;
  runtime->context.metrics = &metrics;
  runtime->context.audit = runtime->audit.get();
  return runtime;
}

}  // namespace sizeguard
