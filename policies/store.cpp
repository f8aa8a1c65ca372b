#include "policies/store.h"

#include <spdlog/spdlog.h>

#include "policies/loader.h"

namespace sizeguard {

PolicyStore::PolicyStore(std::filesystem::path path, Metrics& metrics, StatusCallback on_status)
    : path_(std::move(path)), metrics_(metrics), on_status_(std::move(on_status)) {
  metrics_.describe("sizeguard_policy_load_errors_total", MetricType::Counter,
                    "Policy reloads that found at least one error (the last good set stayed in force).");
  metrics_.describe("sizeguard_policy_last_reload_success", MetricType::Gauge,
                    "1 if the last policy reload succeeded, 0 if it failed.");
  metrics_.describe("sizeguard_policy_last_reload_timestamp_seconds", MetricType::Gauge,
                    "Unix time of the last successful policy reload.");
  metrics_.describe("sizeguard_policies_loaded", MetricType::Gauge, "Policies in the set in force.");
  current_.store(std::make_shared<const PolicySet>());
  if (path_.empty()) {
    have_good_set_ = true;
    metrics_.set("sizeguard_policy_last_reload_success", {}, 1);
    metrics_.set("sizeguard_policies_loaded", {}, 0);
    if (on_status_) on_status_(true, "");
  }
}

PolicyStore::~PolicyStore() { stop(); }

std::vector<std::string> PolicyStore::reload() {
  if (path_.empty()) return {};
  std::lock_guard lock(reload_mutex_);
  // Every poll reads the files (a few KiB); only a change is parsed.
  const PolicyFiles files = read_policy_files(path_);
  if (files.fingerprint == last_fingerprint_ && !last_fingerprint_.empty()) return {};
  PolicyLoad load = parse_policy_files(files);
  last_fingerprint_ = load.fingerprint;

  if (!load.ok()) {
    metrics_.increment("sizeguard_policy_load_errors_total");
    metrics_.set("sizeguard_policy_last_reload_success", {}, 0);
    for (const auto& error : load.errors) spdlog::error("policy load error: {}", error);
    const std::string summary = std::to_string(load.errors.size()) + " error(s) in " + path_.string() +
                                ", first: " + load.errors.front();
    if (have_good_set_) {
      spdlog::warn("policies: keeping the last good set ({} policies): {}", current()->policies.size(), summary);
      if (on_status_) on_status_(true, "last reload failed, previous policies in force: " + summary);
    } else if (on_status_) {
      on_status_(false, "no valid policy set loaded yet: " + summary);
    }
    return load.errors;
  }
  auto set = std::make_shared<PolicySet>();
  set->policies = std::move(load.policies);
  set->files = std::move(load.files);
  set->fingerprint = load.fingerprint;
  const size_t count = set->policies.size();
  current_.store(std::shared_ptr<const PolicySet>(std::move(set)));
  have_good_set_ = true;
  metrics_.set("sizeguard_policy_last_reload_success", {}, 1);
  metrics_.set("sizeguard_policies_loaded", {}, static_cast<double>(count));
  metrics_.set("sizeguard_policy_last_reload_timestamp_seconds", {},
               std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  spdlog::info("policies: loaded {} policies from {} (fingerprint {})", count, path_.string(), last_fingerprint_);
  if (on_status_) on_status_(true, "");
  return {};
}

void PolicyStore::start(std::chrono::milliseconds interval) {
  if (path_.empty()) return;
  poller_.start(interval, [this] {
    try {
      reload();
    } catch (const std::exception& e) {  // e.g. filesystem_error: keep polling
      spdlog::error("policy reload failed: {}", e.what());
    }
  });
}

void PolicyStore::stop() { poller_.stop(); }

}  // namespace sizeguard
