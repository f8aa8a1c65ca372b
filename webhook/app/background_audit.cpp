#include "webhook/app/background_audit.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <tuple>

#include <spdlog/spdlog.h>

#include "policies/lease_update.h"
#include "webhook/logging.h"
#include "kube/utc_time.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

constexpr const char* kManagedBy = "app.kubernetes.io/managed-by";
// etcd refuses objects above 1.5 MiB: past this many bytes of results a report drops its
// "pass" results, then the last results in its order, and says how many it left out.
constexpr std::size_t kMaxResultBytes = 1024 * 1024;

std::string text_at(const Json& object, const char* pointer) {
  const Json* value = json_at(object, pointer);
  return value && value->is_string() ? value->get<std::string>() : std::string();
}

std::string fixed(double value, int decimals) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

Json resource_ref(const ObjectAudit& a) {
  Json ref = {{"apiVersion", a.api_version}, {"kind", a.kind}, {"name", a.name}};
  if (!a.namespace_.empty()) ref["namespace"] = a.namespace_;
  if (!a.uid.empty()) ref["uid"] = a.uid;
  return ref;
}

// "web: cpu request 1, memory request 2Gi; sidecar: ..." from current or recommended values.
std::string values_text(const AuditSizing& sizing, bool recommended) {
  std::string text, last;
  for (const auto& c : sizing.changes) {
    const std::string& value = recommended ? c.recommended : c.current;
    text += c.container == last ? ", " : (text.empty() ? "" : "; ") + c.container + ": ";
    text += c.resource + " " + c.field + " " + (value.empty() ? "none" : value);
    last = c.container;
  }
  return text;
}

Json rightsizing_result(const ObjectAudit& a) {
  const AuditSizing& s = *a.rightsizing;
  const bool changes = !s.changes.empty();
  Json properties = {{"mode", std::string(to_string(s.mode))},
                     {"workload", s.workload},
                     {"replicas", std::to_string(s.replicas)},
                     {"coldStart", s.cold_start ? "true" : "false"}};
  if (changes) {
    properties["current"] = values_text(s, false);
    properties["recommended"] = values_text(s, true);
    properties["savings"] = "cpu " + fixed(s.cpu_savings(), 3) + " cores, memory " +
                            fixed(s.memory_savings() / (1024.0 * 1024.0), 0) + "Mi";
    properties["cpuSavingsCores"] = fixed(s.cpu_savings(), 3);
    properties["memorySavingsBytes"] = fixed(s.memory_savings(), 0);
  }
  if (s.confidence) properties["confidence"] = fixed(*s.confidence, 2);
  std::string message = changes ? "right-sizing (" + std::string(to_string(s.mode)) + " mode) would set " +
                                      values_text(s, true) + " (now " + values_text(s, false) + ")"
                                : "requests match the recommendations";
  return {{"policy", s.policy}, {"rule", "rightsizing"}, {"result", changes ? "warn" : "pass"},
          {"message", message}, {"scored", false}, {"source", "sizeguard"}, {"category", "Right-sizing"},
          {"resources", Json::array({resource_ref(a)})}, {"properties", std::move(properties)}};
}

Json policy_result(const ObjectAudit& a, const AuditResult& r) {
  Json properties = {{"mode", std::string(to_string(r.mode))}};
  if (!r.reason.empty()) properties["reason"] = r.reason;
  return {{"policy", r.policy}, {"rule", r.rule}, {"result", r.result},
          {"message", r.result == "pass" ? "passed" : r.message}, {"scored", true}, {"source", "sizeguard"},
          {"category", "Guardrails"}, {"resources", Json::array({resource_ref(a)})},
          {"properties", std::move(properties)}};
}

std::string reports_path(const std::string& ns) {
  return ns.empty() ? std::string(kPolicyReportApi) + "/clusterpolicyreports"
                    : std::string(kPolicyReportApi) + "/namespaces/" + kube_path_escape(ns) + "/policyreports";
}

std::string error_of(const std::string& what, const KubeResponse& response) {
  return what + ": " +
         (response.transport_error.empty() ? kube_error_summary(response.status, response.body) : response.transport_error);
}

bool same_content(const Json& existing, const Json& desired) {
  for (const char* key : {"results", "summary"}) {
    if (existing.value(key, Json()) != desired.value(key, Json())) return false;
  }
  const Json* omitted = json_at(desired, "/metadata/annotations/sizeguard.io~1omitted-results");
  return text_at(existing, "/metadata/annotations/sizeguard.io~1omitted-results") ==
             (omitted ? omitted->get<std::string>() : std::string()) &&
         json_at(existing, "/metadata/labels") && json_at(desired, "/metadata/labels") &&
         *json_at(existing, "/metadata/labels") == *json_at(desired, "/metadata/labels");
}

// Writes one report: replace at the resourceVersion read, create when missing; a 409 means
// another writer was first, so read again.
void write_report(KubeClient& client, const std::string& ns, const Json& desired, std::optional<Json> existing,
                  ReportSync& sync) {
  const std::string what = (ns.empty() ? "ClusterPolicyReport " : "PolicyReport " + ns + "/") + kPolicyReportName;
  const std::string path = reports_path(ns) + "/" + kPolicyReportName;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (attempt > 0 || !existing) {
      KubeResponse got = client.request("GET", path);
      if (got.status == 200) existing = Json::parse(got.body, nullptr, false);
      else if (got.status == 404) existing.reset();
      else return sync.errors.push_back(error_of("GET " + what, got));
    }
    if (existing && same_content(*existing, desired)) {
      ++sync.unchanged;
      return;
    }
    Json object = desired;
    KubeResponse wrote;
    if (existing) {
      object["metadata"]["resourceVersion"] = text_at(*existing, "/metadata/resourceVersion");
      wrote = client.request("PUT", path, object.dump());
    } else {
      wrote = client.request("POST", reports_path(ns), object.dump());
    }
    if (wrote.status == 200 || wrote.status == 201) {
      ++(existing ? sync.updated : sync.created);
      return;
    }
    if (wrote.status != 409) return sync.errors.push_back(error_of((existing ? "PUT " : "POST ") + what, wrote));
  }
  sync.errors.push_back(what + ": still conflicting after 5 attempts");
}

std::string random_suffix() {
  std::random_device device;
  return stable_hash_hex(std::to_string(device()) + std::to_string(device())).substr(0, 8);
}

// RFC 3339 with microseconds, as metav1.MicroTime.
std::string micro_time(std::chrono::system_clock::time_point t) {
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count() % 1'000'000;
  std::string text = format_utc(t);  // "...:01Z"
  char fraction[16];
  std::snprintf(fraction, sizeof fraction, ".%06lldZ", static_cast<long long>(micros));
  text.pop_back();
  return text + fraction;
}


}  // namespace

std::map<std::string, Json> build_policy_reports(const std::vector<ObjectAudit>& audits) {
  std::map<std::string, std::vector<std::pair<std::tuple<std::string, std::string, std::string, std::string>, Json>>> by_ns;
  for (const auto& a : audits) {
    if (a.skipped) continue;
    auto& results = by_ns[a.namespace_];
    for (const auto& r : a.results) results.push_back({{a.kind, a.name, r.policy, r.rule}, policy_result(a, r)});
    if (a.rightsizing) results.push_back({{a.kind, a.name, a.rightsizing->policy, "rightsizing"}, rightsizing_result(a)});
  }
  std::map<std::string, Json> reports;
  for (auto& [ns, results] : by_ns) {
    if (results.empty()) continue;
    std::stable_sort(results.begin(), results.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    const std::size_t all = results.size();
    const auto encoded_bytes = [](const auto& r) { return r.second.dump().size() + 1; };
    std::size_t total = 0;
    for (const auto& r : results) total += encoded_bytes(r);
    if (total > kMaxResultBytes) {
      std::erase_if(results, [](const auto& r) { return r.second["result"] == "pass"; });
      std::size_t kept_bytes = 0, keep = 0;
      for (; keep < results.size(); ++keep) {
        const std::size_t bytes = encoded_bytes(results[keep]);
        if (kept_bytes + bytes > kMaxResultBytes) break;
        kept_bytes += bytes;
      }
      results.resize(keep);
    }
    Json list = Json::array();
    Json summary = {{"pass", 0}, {"fail", 0}, {"warn", 0}, {"error", 0}, {"skip", 0}};
    for (auto& [key, result] : results) {
      summary[result["result"].get<std::string>()] = summary[result["result"].get<std::string>()].get<int>() + 1;
      list.push_back(std::move(result));
    }
    Json metadata = {{"name", kPolicyReportName}, {"labels", {{kManagedBy, "sizeguard"}}}};
    if (!ns.empty()) metadata["namespace"] = ns;
    if (results.size() < all) {
      metadata["annotations"] = {{"sizeguard.io/omitted-results",
                                  std::to_string(all - results.size()) + " of " + std::to_string(all) +
                                      " (passes first, then the last; the object must stay below etcd's limit)"}};
    }
    reports[ns] = {{"apiVersion", "wgpolicyk8s.io/v1alpha2"},
                   {"kind", ns.empty() ? "ClusterPolicyReport" : "PolicyReport"},
                   {"metadata", std::move(metadata)},
                   {"summary", std::move(summary)},
                   {"results", std::move(list)}};
  }
  return reports;
}

std::variant<std::vector<Json>, std::string> list_all(KubeClient& client, const std::string& collection, int page_size) {
  std::vector<Json> items;
  std::string continue_token;
  do {
    std::string path = collection + (collection.find('?') == std::string::npos ? "?" : "&") +
                       "limit=" + std::to_string(page_size);
    if (!continue_token.empty()) path += "&continue=" + kube_path_escape(continue_token);
    auto page = client.get_json(path);
    if (auto* error = std::get_if<std::string>(&page)) return *error;
    Json& list = std::get<Json>(page);
    const Json* page_items = json_at(list, "/items");
    if (page_items && page_items->is_array()) {
      for (auto& item : *page_items) items.push_back(item);
    }
    continue_token = text_at(list, "/metadata/continue");
  } while (!continue_token.empty());
  return items;
}

ReportSync sync_policy_reports(KubeClient& client, const std::map<std::string, Json>& desired) {
  ReportSync sync;
  const std::string selector = "?labelSelector=" + kube_path_escape(std::string(kManagedBy) + "=sizeguard");
  std::map<std::string, Json> existing;  // namespace → report
  for (const char* collection : {"/policyreports", "/clusterpolicyreports"}) {
    auto listed = list_all(client, std::string(kPolicyReportApi) + collection + selector);
    if (auto* error = std::get_if<std::string>(&listed)) {
      sync.errors.push_back(*error);
      return sync;  // without knowing what exists, neither create nor delete
    }
    for (auto& report : std::get<std::vector<Json>>(listed)) {
      if (text_at(report, "/metadata/name") != kPolicyReportName) continue;
      const std::string ns = text_at(report, "/metadata/namespace");
      existing[ns] = std::move(report);
    }
  }
  for (const auto& [ns, report] : desired) {
    auto found = existing.find(ns);
    write_report(client, ns, report, found == existing.end() ? std::nullopt : std::optional<Json>(found->second), sync);
  }
  for (const auto& [ns, report] : existing) {
    if (desired.count(ns)) continue;
    const std::string path = reports_path(ns) + "/" + kPolicyReportName;
    KubeResponse deleted = client.request("DELETE", path);
    if (deleted.status == 200 || deleted.status == 202 || deleted.status == 404) ++sync.deleted;
    else sync.errors.push_back(error_of("DELETE " + path, deleted));
  }
  return sync;
}

std::variant<bool, std::string> acquire_or_renew(KubeClient& client, const LeaderLease& lease,
                                                 std::chrono::system_clock::time_point now, LeaseObservation& observed,
                                                 std::chrono::steady_clock::time_point local_now) {
  bool leading = false;
  LeaseUpdate update{lease.namespace_, lease.name, "sizeguard.io/lease-for", "background-audit leader"};
  auto error = update_lease(client, update, [&](Json& object) {
    leading = false;
    Json& spec = object["spec"];
    if (!spec.is_object()) spec = Json::object();
    const std::string holder = text_at(spec, "/holderIdentity");
    if (!holder.empty() && holder != lease.identity) {
      const std::string record = holder + "@" + text_at(spec, "/renewTime");
      if (record != observed.record) observed = {record, local_now};  // the holder renewed: not expired
      const Json* seconds = json_at(spec, "/leaseDurationSeconds");
      const auto duration = seconds && seconds->is_number_integer() ? std::chrono::seconds(seconds->get<int64_t>())
                                                                   : std::chrono::seconds(lease.duration);
      if (local_now - observed.at < duration) return LeaseEdit::Stop;  // someone else leads
    }
    if (holder != lease.identity) {
      spec["acquireTime"] = micro_time(now);
      spec["leaseTransitions"] = spec.value("leaseTransitions", int64_t{0}) + (holder.empty() ? 0 : 1);
    }
    spec["holderIdentity"] = lease.identity;
    spec["leaseDurationSeconds"] = lease.duration.count();
    spec["renewTime"] = micro_time(now);
    leading = true;
    return LeaseEdit::Write;
  });
  if (error) return error->message;
  return leading;
}

void release_leadership(KubeClient& client, const LeaderLease& lease) {
  LeaseUpdate update{lease.namespace_, lease.name, "sizeguard.io/lease-for", "background-audit leader"};
  update.create_if_missing = false;
  update_lease(client, update, [&](Json& object) {
    if (text_at(object, "/spec/holderIdentity") != lease.identity) return LeaseEdit::Stop;
    object["spec"]["holderIdentity"] = "";
    object["spec"]["leaseDurationSeconds"] = 1;
    return LeaseEdit::Write;
  });
}

AuditRun audit_cluster(KubeClient& client, const BackgroundAuditOptions& options) {
  AuditRun run;
  auto policies = options.policies ? options.policies() : std::make_shared<const PolicySet>();
  ExistingAuditInputs inputs;
  inputs.policies = policies.get();
  inputs.state = options.state;
  if (options.rightsizing) inputs.rightsizing = options.rightsizing();
  inputs.evaluation = options.evaluation;
  inputs.evaluation.now = std::chrono::system_clock::now();
  UnavailableClusterState no_state("no cluster state configured");
  if (!inputs.state) inputs.state = &no_state;
  for (const auto& resource : audited_resources()) {
    auto listed = list_all(client, resource.collection_path(), options.page_size);
    if (auto* error = std::get_if<std::string>(&listed)) {
      run.error = *error;
      return run;  // a partial picture would delete the reports of what was not listed
    }
    for (const auto& object : std::get<std::vector<Json>>(listed)) {
      run.audits.push_back(audit_existing_object(object, resource, inputs));
    }
  }
  run.reports = build_policy_reports(run.audits);
  return run;
}

std::map<ViolationKey, int> count_violations(const std::vector<ObjectAudit>& audits) {
  std::map<ViolationKey, int> violations;
  for (const auto& a : audits) {
    if (a.skipped) continue;
    for (const auto& r : a.results) {
      if (r.result == "fail" || r.result == "warn") ++violations[{r.policy, r.rule, a.namespace_}];
    }
    if (a.rightsizing && !a.rightsizing->changes.empty()) ++violations[{a.rightsizing->policy, "rightsizing", a.namespace_}];
  }
  return violations;
}

void describe_audit_metrics(Metrics& metrics) {
  metrics.describe("sizeguard_audit_violations", MetricType::Gauge,
                   "Existing objects failing a rule (fail or warn; rule rightsizing: requests it would change) at "
                   "the last background audit, by policy, rule and namespace (only on the leader).");
  metrics.describe("sizeguard_audit_runs_total", MetricType::Counter,
                   "Background audit runs by result (success, error).");
  metrics.describe("sizeguard_audit_last_run_timestamp_seconds", MetricType::Gauge,
                   "Unix time of the last successful background audit.");
  metrics.describe("sizeguard_audit_leader", MetricType::Gauge,
                   "1 while this replica holds the background audit's leader Lease.");
}

BackgroundAudit::BackgroundAudit(KubeClient& client, BackgroundAuditOptions options)
    : client_(client), options_(std::move(options)) {
  if (options_.lease.identity.empty()) {
    const char* host = std::getenv("HOSTNAME");
    options_.lease.identity = std::string(host && *host ? host : "sizeguard") + "_" + random_suffix();
  }
  if (options_.metrics) {
    describe_audit_metrics(*options_.metrics);
    options_.metrics->set("sizeguard_audit_leader", {}, 0);
  }
}

BackgroundAudit::~BackgroundAudit() { stop(); }

void BackgroundAudit::start() {
  if (thread_.joinable() || options_.interval.count() <= 0) return;
  thread_ = std::thread([this] { loop(); });
}

void BackgroundAudit::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (leader_.exchange(false)) {
    release_leadership(client_, options_.lease);
    if (options_.metrics) options_.metrics->set("sizeguard_audit_leader", {}, 0);
  }
}

void BackgroundAudit::loop() {
  std::shared_ptr<const PolicySet> last_policies;
  std::shared_ptr<const RecommendationSnapshot> last_snapshot;
  std::optional<std::chrono::steady_clock::time_point> last_run;
  LeaseObservation observed;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    auto leading = acquire_or_renew(client_, options_.lease, std::chrono::system_clock::now(), observed,
                                    std::chrono::steady_clock::now());
    const bool now_leader = std::holds_alternative<bool>(leading) && std::get<bool>(leading);
    if (auto* error = std::get_if<std::string>(&leading)) {
      log_event(*spdlog::default_logger(), spdlog::level::warn, "audit leader lease not renewed", {{"error", *error}});
    }
    if (now_leader != leader_.exchange(now_leader)) {
      log_event(*spdlog::default_logger(), spdlog::level::info,
                now_leader ? "background audit: leading" : "background audit: not leading",
                {{"identity", options_.lease.identity}, {"lease", options_.lease.namespace_ + "/" + options_.lease.name}});
      if (options_.metrics) {
        options_.metrics->set("sizeguard_audit_leader", {}, now_leader ? 1 : 0);
        if (!now_leader) options_.metrics->clear("sizeguard_audit_violations");  // the leader reports them
      }
      last_run.reset();  // a new leader audits at once
    }
    if (now_leader && (!options_.ready || options_.ready())) {
      auto policies = options_.policies ? options_.policies() : nullptr;
      auto snapshot = options_.rightsizing ? options_.rightsizing().recommendations : nullptr;
      const auto now = std::chrono::steady_clock::now();
      const bool due = !last_run || now - *last_run >= options_.interval || policies != last_policies ||
                       snapshot != last_snapshot;
      if (due) {
        last_policies = policies;
        last_snapshot = snapshot;
        last_run = now;
        run_audit();
      }
    }
    lock.lock();
    wake_.wait_for(lock, options_.renew_every, [this] { return stopping_; });
  }
}

void BackgroundAudit::run_audit() {
  const auto started = std::chrono::steady_clock::now();
  AuditRun run = audit_cluster(client_, options_);
  ReportSync sync;
  if (run.error.empty()) sync = sync_policy_reports(client_, run.reports);
  const bool ok = run.error.empty() && sync.errors.empty();
  auto& logger = *spdlog::default_logger();
  if (options_.metrics) {
    options_.metrics->increment("sizeguard_audit_runs_total", {{"result", ok ? "success" : "error"}});
  }
  if (!run.error.empty()) {
    log_event(logger, spdlog::level::warn, "background audit failed, reports left as they were", {{"error", run.error}});
    return;
  }
  if (options_.metrics) {
    options_.metrics->clear("sizeguard_audit_violations");
    for (const auto& [key, count] : count_violations(run.audits)) {
      const auto& [policy, rule, ns] = key;
      options_.metrics->set("sizeguard_audit_violations", {{"policy", policy}, {"rule", rule}, {"namespace", ns}}, count);
    }
    if (ok) {
      options_.metrics->set("sizeguard_audit_last_run_timestamp_seconds", {},
                            static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                                    std::chrono::system_clock::now().time_since_epoch())
                                                    .count()));
    }
  }
  if (ok) ++runs_;
  std::size_t judged = 0;
  for (const auto& a : run.audits) judged += !a.skipped;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  log_event(logger, ok ? spdlog::level::info : spdlog::level::warn, "background audit done",
            {{"objects", std::to_string(judged), true},
             {"reports", std::to_string(run.reports.size()), true},
             {"created", std::to_string(sync.created), true},
             {"updated", std::to_string(sync.updated), true},
             {"deleted", std::to_string(sync.deleted), true},
             {"errors", sync.errors.empty() ? std::string() : sync.errors.front()},
             {"duration_ms", std::to_string(ms.count()), true}});
}

}  // namespace sizeguard
