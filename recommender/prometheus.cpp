#include "recommender/prometheus.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>
#include <utility>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace sizeguard {
namespace {

using Labels = std::map<std::string, std::string>;
using json = nlohmann::json;

// Characters Kubernetes uses in generated name suffixes (k8s.io/apimachinery rand.SafeEncodeString).
constexpr std::string_view kSafeAlphabet = "bcdfghjklmnpqrstvwxz2456789";

bool all_in(std::string_view s, std::string_view alphabet) {
  return std::all_of(s.begin(), s.end(), [&](char c) { return alphabet.find(c) != std::string_view::npos; });
}
bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
// A pod-template-hash: 6-10 safe-alphabet characters (or the numeric hashes of old clusters).
bool is_template_hash(std::string_view s) {
  return s.size() >= 6 && s.size() <= 10 && (all_in(s, kSafeAlphabet) || all_digits(s));
}
bool is_pod_suffix(std::string_view s) { return s.size() == 5 && all_in(s, kSafeAlphabet); }
bool is_ordinal(std::string_view s) { return all_digits(s) && s.size() <= 5 && (s == "0" || s.front() != '0'); }

// Splits "a-b-c" into ("a-b", "c"); nullopt when there is no '-' or either side is empty.
std::optional<std::pair<std::string_view, std::string_view>> split_last_dash(std::string_view s) {
  const size_t dash = s.rfind('-');
  if (dash == std::string_view::npos || dash == 0 || dash + 1 == s.size()) return std::nullopt;
  return std::make_pair(s.substr(0, dash), s.substr(dash + 1));
}

std::string labels_text(const Labels& labels) {
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ",";
    out += k + "=\"" + v + "\"";
  }
  return out + "}";
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// One connection to one Prometheus.
class Api {
 public:
  explicit Api(const PrometheusOptions& options) : url_(options.url) {
    const size_t scheme_end = url_.find("://");
    if (scheme_end == std::string::npos) throw std::invalid_argument("Prometheus URL needs http:// or https://: " + url_);
    const std::string scheme = url_.substr(0, scheme_end);
    if (scheme != "http" && scheme != "https") {
      throw std::invalid_argument("Prometheus URL scheme must be http or https: " + url_);
    }
    const size_t host_start = scheme_end + 3;
    const size_t path_start = url_.find('/', host_start);
    const std::string host = url_.substr(host_start, path_start == std::string::npos ? std::string::npos
                                                                                     : path_start - host_start);
    if (host.empty()) throw std::invalid_argument("Prometheus URL has no host: " + url_);
    if (path_start != std::string::npos) prefix_ = url_.substr(path_start);
    while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();

    client_ = std::make_unique<httplib::Client>(scheme + "://" + host);
    const auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(options.timeout);
    client_->set_connection_timeout(timeout);
    client_->set_read_timeout(timeout);
    client_->set_write_timeout(timeout);
    client_->set_url_encode(false);  // we encode the query ourselves
    client_->set_keep_alive(true);
    if (!options.bearer_token.empty()) client_->set_bearer_token_auth(options.bearer_token.c_str());
    if (scheme == "https") {
      if (!options.ca_file.empty()) client_->set_ca_cert_path(options.ca_file.c_str());
      client_->enable_server_certificate_verification(true);
    }
  }

  // GET prefix + path with the params; returns "data" of a successful answer.
  json get(const std::string& path, const std::vector<std::pair<std::string, std::string>>& params,
           const std::string& what, std::vector<std::string>* warnings) {
    std::string target = prefix_ + path;
    char sep = '?';
    for (const auto& [k, v] : params) {
      target += sep;
      target += url_encode(k) + "=" + url_encode(v);
      sep = '&';
    }
    auto res = client_->Get(target.c_str(), httplib::Headers{{"Accept", "application/json"}});
    if (!res) {
      std::string reason = httplib::to_string(res.error());
      if (res.error() == httplib::Error::SSLServerVerification) reason += " (check ca_file)";
      throw std::runtime_error("cannot reach Prometheus at " + url_ + ": " + reason);
    }
    json body = json::parse(res->body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      throw std::runtime_error("Prometheus at " + url_ + " answered HTTP " + std::to_string(res->status) + " to " +
                               what + " with a non-JSON body: " + res->body.substr(0, 300));
    }
    if (body.value("status", "") != "success") {
      throw std::runtime_error("Prometheus " + what + " failed (HTTP " + std::to_string(res->status) +
                               "): " + body.value("errorType", "unknown") + ": " + body.value("error", res->body));
    }
    if (warnings != nullptr && body.contains("warnings") && body["warnings"].is_array()) {
      for (const auto& w : body["warnings"]) {
        if (w.is_string()) warnings->push_back(w.get<std::string>());
      }
    }
    if (!body.contains("data")) throw std::runtime_error("Prometheus " + what + " answer has no data");
    return std::move(body["data"]);
  }

  const std::string& url() const { return url_; }

 private:
  std::string url_;
  std::string prefix_;
  std::unique_ptr<httplib::Client> client_;
};

struct RangeSeries {
  Labels labels;
  std::vector<std::pair<int64_t, double>> points;  // non-finite values dropped and counted
};

std::string format_query(const std::string& query) { return query.size() > 200 ? query.substr(0, 200) + "..." : query; }

std::vector<RangeSeries> query_range(Api& api, const PrometheusOptions& o, const std::string& query,
                                     const std::string& metric, IngestReport& report) {
  std::map<Labels, size_t> index;
  std::vector<RangeSeries> out;
  const int64_t span = o.step_seconds * (o.max_points_per_request - 1);
  for (int64_t start = o.start; start <= o.end;) {
    const int64_t end = std::min(o.end, start + span);
    std::vector<std::string> warnings;
    const json data = api.get("/api/v1/query_range",
                              {{"query", query},
                               {"start", std::to_string(start)},
                               {"end", std::to_string(end)},
                               {"step", std::to_string(o.step_seconds)}},
                              "query_range of " + metric + " query '" + format_query(query) + "'", &warnings);
    for (const auto& w : warnings) report.note("prometheus: " + metric + " query warning: " + w);
    if (data.value("resultType", "") != "matrix" || !data.contains("result") || !data["result"].is_array()) {
      throw std::runtime_error("Prometheus query_range of " + metric + " did not return a matrix: " +
                               data.dump().substr(0, 300));
    }
    for (const auto& item : data["result"]) {
      Labels labels;
      if (item.contains("metric") && item["metric"].is_object()) {
        for (const auto& [k, v] : item["metric"].items()) {
          if (v.is_string()) labels[k] = v.get<std::string>();
        }
      }
      auto [it, inserted] = index.try_emplace(labels, out.size());
      if (inserted) out.push_back({labels, {}});
      RangeSeries& series = out[it->second];
      if (!item.contains("values") || !item["values"].is_array()) continue;
      for (const auto& pair : item["values"]) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number() || !pair[1].is_string()) {
          throw std::runtime_error("Prometheus query_range of " + metric + ": malformed value " + pair.dump());
        }
        const auto t = static_cast<int64_t>(std::llround(pair[0].get<double>()));
        const std::string text = pair[1].get<std::string>();
        char* endp = nullptr;
        const double v = std::strtod(text.c_str(), &endp);
        if (endp == text.c_str() || *endp != '\0' || !std::isfinite(v)) {
          ++report.rows_read;
          report.bad_row("prometheus: " + metric + " " + labels_text(labels) + " at " + std::to_string(t) +
                         ": bad value '" + text + "' (expected a finite number)");
          continue;
        }
        series.points.emplace_back(t, v);
      }
    }
    if (end >= o.end) break;
    start = end + o.step_seconds;
  }
  return out;
}

// (namespace, pod) -> workload, from kube_pod_owner.
std::map<std::pair<std::string, std::string>, WorkloadRef> read_owners(Api& api, const PrometheusOptions& o,
                                                                       IngestReport& report) {
  std::map<std::pair<std::string, std::string>, WorkloadRef> owners;
  std::map<std::pair<std::string, std::string>, int> rank;  // prefer controller owners
  json data;
  try {
    data = api.get("/api/v1/series",
                   {{"match[]", "kube_pod_owner"}, {"start", std::to_string(o.start)}, {"end", std::to_string(o.end)}},
                   "series of kube_pod_owner", nullptr);
  } catch (const std::exception& e) {
    report.note(std::string("prometheus: kube_pod_owner unavailable, grouping pods by name: ") + e.what());
    return owners;
  }
  if (!data.is_array()) return owners;
  for (const auto& item : data) {
    if (!item.is_object()) continue;
    const std::string ns = item.value("namespace", ""), pod = item.value("pod", "");
    const std::string kind = item.value("owner_kind", ""), name = item.value("owner_name", "");
    if (ns.empty() || pod.empty() || kind.empty()) continue;
    const int r = (item.value("owner_is_controller", "") == "true" ? 2 : 0) + (kind != "<none>" ? 1 : 0);
    const auto key = std::make_pair(ns, pod);
    auto it = rank.find(key);
    if (it != rank.end() && it->second >= r) continue;
    rank[key] = r;
    owners[key] = workload_from_owner(kind, name, pod);
  }
  return owners;
}

// (namespace, pod, container) of containers OOM-killed in the last 7 days of the range.
std::set<std::tuple<std::string, std::string, std::string>> read_oom_kills(Api& api, const PrometheusOptions& o,
                                                                            IngestReport& report) {
  std::set<std::tuple<std::string, std::string, std::string>> out;
  json data;
  try {
    data = api.get("/api/v1/series",
                   {{"match[]", "kube_pod_container_status_last_terminated_reason{reason=\"OOMKilled\"}"},
                    {"start", std::to_string(std::max(o.start, o.end - 7 * 86400))},
                    {"end", std::to_string(o.end)}},
                   "series of kube_pod_container_status_last_terminated_reason", nullptr);
  } catch (const std::exception& e) {
    report.note(std::string("prometheus: OOM kills unavailable (kube_pod_container_status_last_terminated_reason): ") + e.what());
    return out;
  }
  if (!data.is_array()) return out;
  for (const auto& item : data) {
    if (!item.is_object() || item.value("reason", "") != "OOMKilled") continue;
    out.emplace(item.value("namespace", ""), item.value("pod", ""), item.value("container", ""));
  }
  return out;
}

}  // namespace

WorkloadRef workload_from_owner(std::string_view owner_kind, std::string_view owner_name, std::string_view pod) {
  if (owner_kind.empty() || owner_kind == "<none>" || owner_name.empty() || owner_name == "<none>" ||
      owner_kind == "Node") {
    return {"Pod", std::string(pod)};
  }
  if (owner_kind == "ReplicaSet") {
    if (auto parts = split_last_dash(owner_name); parts && is_template_hash(parts->second)) {
      return {"Deployment", std::string(parts->first)};
    }
    return {"ReplicaSet", std::string(owner_name)};
  }
  if (owner_kind == "Job") {
    if (auto parts = split_last_dash(owner_name); parts && parts->second.size() >= 8 && all_digits(parts->second)) {
      return {"CronJob", std::string(parts->first)};
    }
  }
  return {std::string(owner_kind), std::string(owner_name)};
}

WorkloadRef workload_from_pod_name(std::string_view pod) {
  if (auto last = split_last_dash(pod)) {
    if (is_pod_suffix(last->second)) {
      if (auto hash = split_last_dash(last->first); hash && is_template_hash(hash->second)) {
        return {"Deployment", std::string(hash->first)};
      }
    }
    if (is_ordinal(last->second)) return {"StatefulSet", std::string(last->first)};
  }
  return {"Pod", std::string(pod)};
}

std::vector<UsageSeries> read_prometheus(const PrometheusOptions& options, IngestReport& report) {
  if (options.url.empty()) throw std::invalid_argument("Prometheus URL is empty");
  if (options.end < options.start) throw std::invalid_argument("Prometheus range end is before start");
  if (options.step_seconds <= 0) throw std::invalid_argument("Prometheus step must be positive");
  if (options.max_points_per_request < 2) throw std::invalid_argument("max_points_per_request must be at least 2");

  Api api(options);
  IngestReport local;
  const auto cpu = query_range(api, options, options.cpu_query, "cpu", local);
  const auto memory = query_range(api, options, options.memory_query, "memory", local);
  std::map<std::pair<std::string, std::string>, WorkloadRef> owners;
  if (options.use_pod_owner) owners = read_owners(api, options, local);
  // OOM kills, keyed like the series: a workload container is flagged if any pod's was.
  std::set<WorkloadKey> oom_killed;
  if (options.use_oom_kills) {
    for (const auto& [ns, pod, container] : read_oom_kills(api, options, local)) {
      const auto owner = owners.find({ns, pod});
      const WorkloadRef ref = owner != owners.end() ? owner->second : workload_from_pod_name(pod);
      oom_killed.insert(WorkloadKey{ns, ref.kind, ref.name, container});
    }
  }

  struct Point {
    std::optional<double> cpu, memory;
  };
  std::map<WorkloadKey, std::map<int64_t, Point>> merged;
  auto add = [&](const std::vector<RangeSeries>& all, bool is_cpu) {
    for (const auto& s : all) {
      const auto ns = s.labels.find("namespace"), pod = s.labels.find("pod"), container = s.labels.find("container");
      if (ns == s.labels.end() || pod == s.labels.end() || container == s.labels.end()) {
        local.note(std::string("prometheus: ") + (is_cpu ? "cpu" : "memory") + " series " + labels_text(s.labels) +
                   " ignored: needs the labels namespace, pod and container");
        continue;
      }
      const auto owner = owners.find({ns->second, pod->second});
      const WorkloadRef ref =
          owner != owners.end() ? owner->second : workload_from_pod_name(pod->second);
      auto& points = merged[WorkloadKey{ns->second, ref.kind, ref.name, container->second}];
      for (const auto& [t, v] : s.points) {
        auto& slot = is_cpu ? points[t].cpu : points[t].memory;
        slot = slot ? std::max(*slot, v) : v;  // max across the workload's pods
      }
    }
  };
  add(cpu, true);
  add(memory, false);

  std::vector<UsageSeries> out;
  for (auto& [key, points] : merged) {
    UsageSeries series;
    series.key = key;
    series.oom_killed = oom_killed.contains(key);
    series.samples.reserve(points.size());
    size_t cpu_only = 0, memory_only = 0;
    for (const auto& [t, p] : points) {
      ++local.rows_read;
      if (p.cpu && p.memory) {
        series.samples.push_back({t, *p.cpu, *p.memory});
      } else {
        ++(p.cpu ? cpu_only : memory_only);
      }
    }
    if (cpu_only + memory_only > 0) {
      local.rows_bad += cpu_only + memory_only;
      local.note("prometheus: " + key.to_string() + ": " + std::to_string(cpu_only) +
                 " timestamps with cpu but no memory and " + std::to_string(memory_only) +
                 " with memory but no cpu dropped");
    }
    local.rows_used += series.samples.size();
    if (!series.samples.empty()) out.push_back(std::move(series));
  }
  report.merge(local);
  if (out.empty()) {
    throw std::runtime_error("no usable series from Prometheus at " + options.url + " between " +
                             std::to_string(options.start) + " and " + std::to_string(options.end) + " (cpu query: " +
                             std::to_string(cpu.size()) + " series, memory query: " + std::to_string(memory.size()) +
                             " series" +
                             (local.errors.empty() ? std::string() : "; first note: " + local.errors.front()) + ")");
  }
  return out;
}

}  // namespace sizeguard
