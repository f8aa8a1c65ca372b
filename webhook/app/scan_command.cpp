// `sizeguard scan`: what sizeguard would say about the workloads a cluster runs now, from a
// laptop (like `krr simple`). Reads the cluster through a kubeconfig, the recommendations
// (a snapshot file, or `recommend` run on the spot against --prometheus) and the policies,
// judges every workload with the background audit's code (existing_audit.h), and prints
// current vs recommended requests/limits, savings and policy findings per workload.
// Exit codes as `review`: 0 nothing admission would deny, 1 findings that would deny, 2 error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "policies/api_cluster_state.h"
#include "policies/loader.h"
#include "recommender/evaluate.h"
#include "recommender/prometheus.h"
#include "recommender/recommend.h"
#include "webhook/app/background_audit.h"
#include "webhook/app/commands.h"
#include "webhook/app/runtime.h"
#include "kube/utc_time.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

struct ScanFlags {
  std::string kubeconfig, context;
  std::vector<std::string> namespaces;
  std::string policies = SIZEGUARD_EXAMPLE_POLICIES_DIR;
  std::string recommendations, model, prometheus, prometheus_token, prometheus_ca, history = "14d", step = "5m";
  std::string mode = "enforce";
  std::string output = "table";
  std::string out;  // file; "" = stdout
  std::string timeout = "10s";
};

struct ScanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr const char* kFields[] = {"cpu request", "cpu limit", "memory request", "memory limit"};

// One container: each field's current value and, where right-sizing would change it, the
// recommended one.
struct ContainerRow {
  std::string name;
  std::map<std::string, std::string> current, recommended;  // by kFields entry
};

struct WorkloadRow {
  ObjectAudit audit;
  std::vector<ContainerRow> containers;
  int64_t replicas = 1;
  // Usage of the workload's containers, when read from Prometheus (for the HTML charts).
  std::vector<const UsageSeries*> usage;
};

std::string field_value(const Json& resources, const std::string& field) {
  const auto space = field.find(' ');
  auto q = resource_quantity(resources, field.substr(space + 1) == "request" ? "requests" : "limits", field.substr(0, space));
  return q ? q->to_string() : "";
}

WorkloadRow make_row(const Json& object, ObjectAudit audit) {
  WorkloadRow row;
  const WorkloadKind kind = workload_kind_from(audit.kind);
  for (const auto& c : containers(object, kind)) {
    if (c.type == ContainerType::Ephemeral) continue;
    ContainerRow container{c.name, {}, {}};
    const Json& resources = c.node->value("resources", Json::object());
    for (const std::string field : kFields) container.current[field] = field_value(resources, field);
    row.containers.push_back(std::move(container));
  }
  if (audit.rightsizing) {
    row.replicas = audit.rightsizing->replicas;
    for (const auto& change : audit.rightsizing->changes) {
      for (auto& c : row.containers) {
        if (c.name == change.container) c.recommended[change.resource + " " + change.field] = change.recommended.empty() ? "none" : change.recommended;
      }
    }
  } else {
    row.replicas = std::max<int64_t>(1, replicas(object, kind).value_or(1));
  }
  row.audit = std::move(audit);
  return row;
}

std::string cell(const ContainerRow& c, const std::string& field) {
  const std::string now = c.current.at(field).empty() ? "-" : c.current.at(field);
  auto it = c.recommended.find(field);
  return it == c.recommended.end() ? now : now + " -> " + it->second;
}

std::string fixed(double value, int decimals) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string savings_text(const WorkloadRow& row) {
  if (!row.audit.rightsizing || row.audit.rightsizing->changes.empty()) return "";
  return fixed(row.audit.rightsizing->cpu_savings(), 2) + " cores, " +
         fixed(row.audit.rightsizing->memory_savings() / (1024.0 * 1024.0), 0) + "Mi";
}

std::string workload_name(const ObjectAudit& a) { return a.kind + "/" + a.name; }

std::vector<const AuditResult*> findings(const ObjectAudit& a) {
  std::vector<const AuditResult*> out;
  for (const auto& r : a.results) {
    if (r.result != "pass") out.push_back(&r);
  }
  return out;
}

// --- outputs -------------------------------------------------------------------------------

struct Totals {
  std::size_t workloads = 0, skipped = 0, resized = 0, denies = 0;
  std::map<std::string, std::size_t> results;  // pass/fail/warn/error
  double cpu_savings = 0, memory_savings = 0;
};

Totals totals_of(const std::vector<WorkloadRow>& rows, std::size_t skipped) {
  Totals t;
  t.skipped = skipped;
  for (const auto& row : rows) {
    ++t.workloads;
    for (const auto& r : row.audit.results) ++t.results[r.result];
    t.denies += row.audit.denies();
    if (row.audit.rightsizing && !row.audit.rightsizing->changes.empty()) {
      ++t.resized;
      t.cpu_savings += row.audit.rightsizing->cpu_savings();
      t.memory_savings += row.audit.rightsizing->memory_savings();
    }
  }
  return t;
}

void write_table(std::ostream& out, const std::vector<WorkloadRow>& rows, const Totals& t) {
  std::vector<std::vector<std::string>> table = {{"NAMESPACE", "WORKLOAD", "PODS", "CONTAINER", "CPU REQUEST", "CPU LIMIT",
                                                  "MEMORY REQUEST", "MEMORY LIMIT", "SAVINGS"}};
  for (const auto& row : rows) {
    bool first = true;
    for (const auto& c : row.containers) {
      table.push_back({first ? row.audit.namespace_ : "", first ? workload_name(row.audit) : "",
                       first ? std::to_string(row.replicas) : "", c.name, cell(c, kFields[0]), cell(c, kFields[1]),
                       cell(c, kFields[2]), cell(c, kFields[3]), first ? savings_text(row) : ""});
      first = false;
    }
  }
  std::vector<std::size_t> width(table[0].size(), 0);
  for (const auto& line : table) {
    for (std::size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  for (const auto& line : table) {
    std::string text;
    for (std::size_t i = 0; i < line.size(); ++i) {
      text += line[i];
      if (i + 1 < line.size()) text += std::string(width[i] - line[i].size() + 2, ' ');
    }
    out << text.erase(text.find_last_not_of(' ') + 1) << "\n";
  }
  bool header = false;
  for (const auto& row : rows) {
    for (const AuditResult* r : findings(row.audit)) {
      if (!header) out << "\nFINDINGS\n";
      header = true;
      out << (r->denies ? "DENY " : "") << r->result << "  " << row.audit.namespace_ << "/" << workload_name(row.audit)
          << "  " << r->policy << "/" << r->rule << (r->reason.empty() ? "" : " (" + r->reason + ")") << ": " << r->message
          << "\n";
    }
  }
  out << "\n" << t.workloads << " workloads (" << t.skipped << " owned by controllers or finished, skipped), "
      << t.resized << " to right-size, savings " << fixed(t.cpu_savings, 2) << " cores and "
      << fixed(t.memory_savings / (1024.0 * 1024.0 * 1024.0), 2) << " GiB; findings: " << (t.results.count("fail") ? t.results.at("fail") : 0) << " fail, " << (t.results.count("warn") ? t.results.at("warn") : 0)
      << " warn, " << (t.results.count("error") ? t.results.at("error") : 0) << " error; " << t.denies
      << " workloads admission would deny\n";
}

Json row_json(const WorkloadRow& row) {
  const ObjectAudit& a = row.audit;
  Json containers = Json::array();
  for (const auto& c : row.containers) {
    Json entry = {{"name", c.name}};
    for (const std::string field : kFields) {
      const auto space = field.find(' ');
      Json value = {{"current", c.current.at(field)}};
      if (auto it = c.recommended.find(field); it != c.recommended.end()) value["recommended"] = it->second;
      entry[field.substr(0, space)][field.substr(space + 1)] = std::move(value);
    }
    containers.push_back(std::move(entry));
  }
  Json findings_json = Json::array();
  for (const auto& r : a.results) {
    findings_json.push_back({{"policy", r.policy}, {"rule", r.rule}, {"result", r.result},
                             {"mode", std::string(to_string(r.mode))}, {"message", r.message}, {"reason", r.reason},
                             {"denies", r.denies}});
  }
  Json json = {{"namespace", a.namespace_}, {"kind", a.kind},         {"name", a.name},
               {"replicas", row.replicas},  {"containers", containers}, {"findings", findings_json},
               {"denies", a.denies()}};
  if (a.rightsizing) {
    const AuditSizing& s = *a.rightsizing;
    json["rightsizing"] = {{"policy", s.policy},
                           {"mode", std::string(to_string(s.mode))},
                           {"workload", s.workload},
                           {"coldStart", s.cold_start},
                           {"confidence", s.confidence ? Json(*s.confidence) : Json()},
                           {"cpuSavingsCores", s.cpu_savings()},
                           {"memorySavingsBytes", s.memory_savings()},
                           {"notes", s.notes}};
  }
  return json;
}

Json summary_json(const Totals& t) {
  return {{"workloads", t.workloads}, {"skipped", t.skipped},          {"rightsized", t.resized},
          {"results", t.results},     {"denies", t.denies},            {"cpuSavingsCores", t.cpu_savings},
          {"memorySavingsBytes", t.memory_savings}};
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

void write_csv(std::ostream& out, const std::vector<WorkloadRow>& rows) {
  out << "namespace,kind,name,replicas,container,cpu_request,cpu_request_recommended,cpu_limit,cpu_limit_recommended,"
         "memory_request,memory_request_recommended,memory_limit,memory_limit_recommended,cpu_savings_cores,"
         "memory_savings_bytes,findings\n";
  for (const auto& row : rows) {
    std::string found;
    for (const AuditResult* r : findings(row.audit)) {
      found += (found.empty() ? "" : "; ") + r->policy + "/" + r->rule + "=" + r->result;
    }
    const auto* s = row.audit.rightsizing ? &*row.audit.rightsizing : nullptr;
    for (const auto& c : row.containers) {
      out << csv_field(row.audit.namespace_) << "," << row.audit.kind << "," << csv_field(row.audit.name) << ","
          << row.replicas << "," << csv_field(c.name);
      for (const std::string field : kFields) {
        auto it = c.recommended.find(field);
        out << "," << c.current.at(field) << "," << (it == c.recommended.end() ? "" : it->second);
      }
      out << "," << (s ? fixed(s->cpu_savings(), 3) : "") << "," << (s ? fixed(s->memory_savings(), 0) : "") << ","
          << csv_field(found) << "\n";
    }
  }
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"};

// Pareto curves of the savings (workloads sorted by savings, cumulative), requested vs
// recommended per workload, and per workload with usage (--prometheus) the usage beside its
// current and recommended requests: the charts of `evaluate`'s report, drawn the same way.
std::string html_report(const std::vector<WorkloadRow>& rows, const Totals& t, const std::string& source) {
  auto esc = report_html_escape;
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sizeguard scan</title>\n"
       "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f4f4f4}td:first-child,td:nth-child(2){text-align:left}.fail{color:#b00}</style></head><body>\n";
  h << "<h1>sizeguard scan</h1>\n<p>" << esc(source) << ", " << t.workloads << " workloads judged (" << t.skipped
    << " owned by controllers or finished, skipped), " << t.resized << " to right-size. Savings: <b>"
    << fixed(t.cpu_savings, 2) << " cores</b> and <b>" << fixed(t.memory_savings / 1073741824.0, 2)
    << " GiB</b> of requests. " << t.denies << " workloads would be denied if applied again.</p>\n";

  std::vector<const WorkloadRow*> sized;
  for (const auto& row : rows) {
    if (row.audit.rightsizing && !row.audit.rightsizing->changes.empty()) sized.push_back(&row);
  }
  h << "<h2>Savings</h2>\n";
  for (int r = 0; r < 2; ++r) {
    std::vector<double> values;
    for (const auto* row : sized) {
      values.push_back(r == 0 ? row->audit.rightsizing->cpu_savings() : row->audit.rightsizing->memory_savings() / 1073741824.0);
    }
    std::sort(values.rbegin(), values.rend());
    ChartLine cumulative{"cumulative savings", kColors[r], {0}, {0}};
    double sum = 0, low = 0, high = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      sum += values[i];
      cumulative.x.push_back(static_cast<double>(i + 1));
      cumulative.y.push_back(sum);
      low = std::min(low, sum);
      high = std::max(high, sum);
    }
    h << svg_line_chart(r == 0 ? "CPU requests saved, largest first" : "Memory requests saved, largest first",
                        "workloads", r == 0 ? "cores" : "GiB", {cumulative}, 0,
                        std::max<double>(1, static_cast<double>(values.size())), low, high > low ? high * 1.05 : low + 1);
  }
  h << "<h2>Requested vs recommended</h2>\n<p>Per workload (all replicas), sorted by what it requests now.</p>\n";
  for (int r = 0; r < 2; ++r) {
    std::vector<std::pair<double, double>> points;
    for (const auto* row : sized) {
      const AuditSizing& s = *row->audit.rightsizing;
      const double scale = static_cast<double>(s.replicas) / (r == 0 ? 1.0 : 1073741824.0);
      points.emplace_back((r == 0 ? s.cpu_before : s.memory_before) * scale, (r == 0 ? s.cpu_after : s.memory_after) * scale);
    }
    std::sort(points.rbegin(), points.rend());
    ChartLine now{"requested now", "#bbbbbb", {}, {}, false, 2}, rec{"recommended", kColors[r], {}, {}};
    double high = 0;
    // One step per workload, as `evaluate` draws one per day.
    for (std::size_t i = 0; i < points.size(); ++i) {
      const double x = static_cast<double>(i);
      now.x.insert(now.x.end(), {x, x + 1, NAN});
      now.y.insert(now.y.end(), {points[i].first, points[i].first, NAN});
      rec.x.insert(rec.x.end(), {x, x + 1, NAN});
      rec.y.insert(rec.y.end(), {points[i].second, points[i].second, NAN});
      high = std::max({high, points[i].first, points[i].second});
    }
    h << svg_line_chart(r == 0 ? "CPU requests" : "Memory requests", "workloads", r == 0 ? "cores" : "GiB", {now, rec}, 0,
                        std::max<double>(1, static_cast<double>(points.size())), 0, high > 0 ? high * 1.05 : 1);
  }
  // Usage charts for the workloads with the largest savings (at most 12).
  std::vector<const WorkloadRow*> with_usage;
  for (const auto* row : sized) {
    if (!row->usage.empty()) with_usage.push_back(row);
  }
  std::sort(with_usage.begin(), with_usage.end(), [](const WorkloadRow* a, const WorkloadRow* b) {
    return a->audit.rightsizing->cpu_savings() > b->audit.rightsizing->cpu_savings();
  });
  if (with_usage.size() > 12) with_usage.resize(12);
  if (!with_usage.empty()) {
    h << "<h2>Usage and recommendations</h2>\n<p>Per container: hourly maximum usage, the request now and the "
         "recommended one.</p>\n";
  }
  for (const auto* row : with_usage) {
    for (const UsageSeries* series : row->usage) {
      const ContainerRow* container = nullptr;
      for (const auto& c : row->containers) {
        if (c.name == series->key.container) container = &c;
      }
      if (!container || series->samples.empty()) continue;
      const int64_t begin = series->samples.front().timestamp;
      const double days = std::max(1.0, static_cast<double>(series->samples.back().timestamp - begin) / 86400.0);
      for (int r = 0; r < 2; ++r) {
        const double scale = r == 0 ? 1.0 : 1.0 / 1073741824;
        ChartLine usage{"usage (hourly max)", "#bbbbbb", {}, {}, false, 1.0};
        std::map<int64_t, double> hourly;
        for (const auto& sample : series->samples) {
          double& v = hourly[(sample.timestamp - begin) / 3600];
          v = std::max(v, (r == 0 ? sample.cpu_cores : sample.memory_bytes) * scale);
        }
        double high = 0;
        for (const auto& [hour, v] : hourly) {
          usage.x.push_back(static_cast<double>(hour) / 24.0);
          usage.y.push_back(v);
          high = std::max(high, v);
        }
        std::vector<ChartLine> lines = {usage};
        const char* field = r == 0 ? "cpu request" : "memory request";
        auto flat = [&](const std::string& name, const std::string& text, const char* color, bool dashed) {
          if (text.empty() || text == "none" || text == "-") return;
          auto q = Quantity::parse(text);
          if (!q) return;
          const double v = q->as_double() * scale;
          high = std::max(high, v);
          lines.push_back({name, color, {0, days}, {v, v}, dashed});
        };
        flat("request now", container->current.at(field), "#444444", true);
        if (auto it = container->recommended.find(field); it != container->recommended.end()) {
          flat("recommended", it->second, kColors[r], false);
        }
        h << svg_line_chart(row->audit.namespace_ + "/" + workload_name(row->audit) + " " + container->name +
                                (r == 0 ? " CPU" : " memory"),
                            "days", r == 0 ? "cores" : "GiB", lines, 0, days, 0, high > 0 ? high * 1.05 : 1);
      }
    }
  }
  h << "<h2>Workloads</h2>\n<table><tr><th>namespace</th><th>workload</th><th>pods</th><th>container</th>"
       "<th>CPU request</th><th>CPU limit</th><th>memory request</th><th>memory limit</th><th>savings</th></tr>\n";
  for (const auto& row : rows) {
    for (const auto& c : row.containers) {
      h << "<tr><td>" << esc(row.audit.namespace_) << "</td><td>" << esc(workload_name(row.audit)) << "</td><td>"
        << row.replicas << "</td><td>" << esc(c.name) << "</td>";
      for (const std::string field : kFields) h << "<td>" << esc(cell(c, field)) << "</td>";
      h << "<td>" << esc(savings_text(row)) << "</td></tr>\n";
    }
  }
  h << "</table>\n<h2>Findings</h2>\n";
  const bool any = std::any_of(rows.begin(), rows.end(), [](const WorkloadRow& row) { return !findings(row.audit).empty(); });
  if (!any) {
    h << "<p>No findings: every workload passes every policy that applies to it.</p>\n</body></html>\n";
    return h.str();
  }
  h << "<table><tr><th>namespace</th><th>workload</th><th>policy/rule</th><th>result</th><th>message</th></tr>\n";
  for (const auto& row : rows) {
    for (const AuditResult* r : findings(row.audit)) {
      h << "<tr><td>" << esc(row.audit.namespace_) << "</td><td>" << esc(workload_name(row.audit)) << "</td><td>"
        << esc(r->policy + "/" + r->rule) << "</td><td class=\"" << (r->denies ? "fail" : "") << "\">" << esc(r->result)
        << (r->denies ? " (deny)" : "") << "</td><td style=\"text-align:left\">" << esc(r->message) << "</td></tr>\n";
    }
  }
  h << "</table>\n</body></html>\n";
  return h.str();
}

// --- the scan ------------------------------------------------------------------------------

std::string default_kubeconfig() {
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    std::string first = env;
    return first.substr(0, first.find(':'));
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.kube/config";
}

// "14d" as well as what parse_duration reads ("336h", "90m").
int64_t history_seconds(const std::string& text) {
  if (text.size() > 1 && text.back() == 'd' && text.find_first_not_of("0123456789") == text.size() - 1) {
    return std::stoll(text.substr(0, text.size() - 1)) * 86400;
  }
  return parse_duration("--history", text).count() / 1000;
}

// The snapshot: the file, or `recommend` run now on Prometheus usage (kept for the charts).
std::shared_ptr<const RecommendationSnapshot> recommendations(const ScanFlags& f, std::vector<UsageSeries>& usage,
                                                             std::shared_ptr<const ModelMetadata>& model_metadata,
                                                             std::string& model_version) {
  const std::string model_dir = !f.model.empty() ? f.model : (!f.prometheus.empty() ? SIZEGUARD_DEFAULT_MODEL_DIR : "");
  std::optional<QuantileModel> model;
  if (!model_dir.empty()) {
    try {
      model.emplace(QuantileModel::load(model_dir, f.prometheus.empty() ? 1 : 0));
    } catch (const std::exception& e) {
      throw ScanError("--model " + model_dir + ": " + e.what());
    }
    model_metadata = std::make_shared<const ModelMetadata>(model->metadata());
    model_version = model->version();
  }
  if (!f.recommendations.empty()) {
    try {
      return std::make_shared<const RecommendationSnapshot>(load_recommendations(f.recommendations));
    } catch (const std::exception& e) {
      throw ScanError(std::string("--recommendations: ") + e.what());
    }
  }
  if (f.prometheus.empty()) return nullptr;
  PrometheusOptions p;
  p.url = f.prometheus;
  p.bearer_token = f.prometheus_token;
  p.ca_file = f.prometheus_ca;
  p.end = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  p.start = p.end - history_seconds(f.history);
  p.step_seconds = parse_duration("--step", f.step).count() / 1000;
  if (p.step_seconds <= 0 || p.start >= p.end) throw ScanError("--history and --step must be positive");
  std::cerr << "reading usage from " << f.prometheus << " ..." << std::endl;
  IngestReport report;
  usage = read_prometheus(p, report);  // runtime_error: unreachable -> exit 2
  RecommendationPolicy policy;
  if (model->metadata().calibrated_cpu_margin > 0) {
    policy.margin = model->metadata().calibrated_cpu_margin;
    policy.memory_margin = model->metadata().calibrated_memory_margin;
  }
  const int64_t now = data_end(usage);
  const auto recs = recommend_batch(*model, usage, now, policy, 3);
  std::cerr << "recommended " << recs.size() << " containers from " << usage.size() << " usage series" << std::endl;
  return std::make_shared<const RecommendationSnapshot>(make_snapshot(usage, recs, model->version(), now));
}

int run_scan(const ScanFlags& f) {
  std::vector<WorkloadRow> rows;
  std::size_t skipped = 0;
  std::vector<UsageSeries> usage;
  std::string source;
  try {
    if (f.output != "table" && f.output != "json" && f.output != "csv" && f.output != "html") {
      throw ScanError("--output: expected table, json, csv or html, got '" + f.output + "'");
    }
    if (!f.recommendations.empty() && !f.prometheus.empty()) {
      throw ScanError("--recommendations and --prometheus are alternatives: pick one");
    }
    auto mode = mode_from(f.mode);
    if (!mode) throw ScanError("--mode: expected enforce, warn or audit, got '" + f.mode + "'");
    const auto timeout = parse_duration("--timeout", f.timeout);

    PolicySet policies;
    if (!f.policies.empty()) {
      PolicyLoad load = load_policies(f.policies);
      if (!load.ok()) {
        std::string message = "policies did not load:";
        for (const auto& e : load.errors) message += "\n  " + e;
        throw ScanError(message);
      }
      policies.policies = std::move(load.policies);
      policies.files = std::move(load.files);
      policies.fingerprint = std::move(load.fingerprint);
    }
    std::shared_ptr<const ModelMetadata> model;
    std::string model_version;
    auto snapshot = recommendations(f, usage, model, model_version);

    const std::string kubeconfig = f.kubeconfig.empty() ? default_kubeconfig() : f.kubeconfig;
    auto config = kubeconfig_config(kubeconfig, f.context);
    if (auto* error = std::get_if<std::string>(&config)) throw ScanError("cluster access: " + *error);
    std::get<KubeConfig>(config).timeout = timeout;
    KubeClient client(std::get<KubeConfig>(config));
    source = "cluster " + client.config().server;
    ApiClusterState state(client, std::chrono::minutes(5));

    ExistingAuditInputs inputs;
    inputs.policies = &policies;
    inputs.state = &state;
    inputs.rightsizing = {snapshot, model, model_version};
    inputs.evaluation.default_mode = *mode;
    inputs.evaluation.now = std::chrono::system_clock::now();

    std::map<std::string, std::vector<const UsageSeries*>> usage_by_workload;  // "ns/Kind/name"
    for (const auto& s : usage) {
      usage_by_workload[s.key.namespace_ + "/" + s.key.kind + "/" + s.key.name].push_back(&s);
    }
    std::vector<std::string> scopes = f.namespaces;
    if (scopes.empty()) scopes.push_back("");
    for (const auto& resource : audited_resources()) {
      for (const auto& ns : scopes) {
        std::string path = resource.collection_path();
        if (!ns.empty()) {
          const auto slash = path.rfind('/');
          path = path.substr(0, slash) + "/namespaces/" + kube_path_escape(ns) + path.substr(slash);
        }
        auto listed = list_all(client, path);
        if (auto* error = std::get_if<std::string>(&listed)) throw ScanError(*error);
        auto& objects = std::get<std::vector<Json>>(listed);
        std::cerr << "scan: " << objects.size() << " " << resource.resource << (ns.empty() ? "" : " in " + ns) << std::endl;
        std::size_t done = 0;
        for (const auto& object : objects) {
          ObjectAudit audit = audit_existing_object(object, resource, inputs);
          if (++done % 200 == 0) std::cerr << "scan: " << done << "/" << objects.size() << " " << resource.resource << std::endl;
          if (audit.skipped) {
            ++skipped;
            continue;
          }
          WorkloadRow row = make_row(object, std::move(audit));
          if (row.audit.rightsizing) {
            auto it = usage_by_workload.find(row.audit.rightsizing->workload);
            if (it != usage_by_workload.end()) row.usage = it->second;
          }
          rows.push_back(std::move(row));
        }
      }
    }
  } catch (const ScanError& e) {
    std::cerr << "sizeguard scan: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "sizeguard scan: " << e.what() << "\n";
    return 2;
  }
  std::sort(rows.begin(), rows.end(), [](const WorkloadRow& a, const WorkloadRow& b) {
    return std::tie(a.audit.namespace_, a.audit.kind, a.audit.name) < std::tie(b.audit.namespace_, b.audit.kind, b.audit.name);
  });
  const Totals totals = totals_of(rows, skipped);
  std::ostringstream text;
  if (f.output == "table") {
    write_table(text, rows, totals);
  } else if (f.output == "json") {
    Json workloads = Json::array();
    for (const auto& row : rows) workloads.push_back(row_json(row));
    text << Json{{"source", source}, {"summary", summary_json(totals)}, {"workloads", workloads}}.dump(2) << "\n";
  } else if (f.output == "csv") {
    write_csv(text, rows);
  } else {
    text << html_report(rows, totals, source);
  }
  if (f.out.empty()) {
    std::cout << text.str() << std::flush;
  } else {
    std::ofstream file(f.out, std::ios::trunc);
    if (!file || !(file << text.str()) || !file.flush()) {
      std::cerr << "sizeguard scan: " << f.out << ": cannot write\n";
      return 2;
    }
    std::cerr << "scan: wrote " << f.out << "\n";
  }
  std::cerr << "scan: " << totals.workloads << " workloads, " << totals.denies << " would be denied\n";
  return totals.denies > 0 ? 1 : 0;
}

}  // namespace

void add_scan_command(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<ScanFlags>();
  auto* cmd = app.add_subcommand(
      "scan", "Judge the workloads a cluster runs now: current vs recommended requests/limits, savings, policy findings");
  cmd->add_option("--kubeconfig", f->kubeconfig, "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)");
  cmd->add_option("--context", f->context, "kubeconfig context (default: its current-context)");
  cmd->add_option("-n,--namespace", f->namespaces, "only these namespaces (repeatable; default: all)");
  cmd->add_option("--policies", f->policies, "policy file or directory ('' = none)")->capture_default_str();
  cmd->add_option("--recommendations", f->recommendations, "recommendations snapshot written by `sizeguard recommend`");
  cmd->add_option("--prometheus", f->prometheus, "or: run `recommend` now on usage from this Prometheus (cAdvisor metrics)");
  cmd->add_option("--prometheus-token", f->prometheus_token, "bearer token for --prometheus");
  cmd->add_option("--prometheus-ca-file", f->prometheus_ca, "PEM CA bundle for an https --prometheus");
  cmd->add_option("--history", f->history, "usage history read from --prometheus")->capture_default_str();
  cmd->add_option("--step", f->step, "--prometheus query step")->capture_default_str();
  cmd->add_option("--model", f->model,
                  "model directory: cold-start estimates (with --prometheus: the model that recommends; default the "
                  "built-in one)");
  cmd->add_option("--mode", f->mode, "mode of policies that set none (enforce, warn, audit)")->capture_default_str();
  cmd->add_option("-o,--output", f->output, "table, json, csv or html")->capture_default_str();
  cmd->add_option("--out", f->out, "write the output to this file instead of stdout");
  cmd->add_option("--timeout", f->timeout, "per API request")->capture_default_str();
  cmd->callback([f, &exit_code] { exit_code = run_scan(*f); });
}

}  // namespace sizeguard
