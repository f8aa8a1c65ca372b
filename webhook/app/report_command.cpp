// `sizeguard report --audit-log FILE`: what right-sizing did or would do, per workload
// (the latest audit record of each), with the estimated monthly savings; with
// --recommendations, also which model and gate decision the snapshot in force came from.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <vector>

#include "webhook/app/commands.h"
#include "kube/review.h"
#include "recommender/recommend.h"

namespace sizeguard {
namespace {

struct ReportFlags {
  std::string audit_log;
  std::string recommendations;  // snapshot from `sizeguard recommend`, optional
  double price_core_hour = 0.0316;  // on-demand x86 vCPU-hour, order of magnitude of the big clouds
  double price_gib_hour = 0.0042;
  std::string output = "table";
};

constexpr double kHoursPerMonth = 730;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

int run_report(const ReportFlags& flags) {
  std::optional<RecommendationSnapshot> snapshot;
  if (!flags.recommendations.empty()) {
    try {
      snapshot = load_recommendations(flags.recommendations);
    } catch (const SnapshotError& e) {
      std::cerr << "sizeguard report: " << e.what() << "\n";
      return 2;
    }
  }
  std::ifstream in(flags.audit_log);
  if (!in) {
    std::cerr << "sizeguard report: cannot read " << flags.audit_log << "\n";
    return 2;
  }
  // Latest record per workload; Pods made by controllers are reported through their workload.
  // Dry runs never existed, and a record whose object the validating webhook then denied
  // (the next validate record for the same object) is taken back.
  std::map<std::string, std::vector<Json>> history;   // workload -> its records, oldest first
  std::map<std::string, int64_t> workload_replicas;    // from the workload's own records
  std::map<std::string, std::string> last_workload_of; // "ns/kind/name" of an object -> workload
  auto object_key = [](const Json& r) {
    return r.value("namespace", "") + "/" + r.value("kind", "") + "/" + r.value("name", "");
  };
  std::string line;
  size_t line_number = 0, skipped = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    Json record = Json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object()) {
      ++skipped;
      continue;
    }
    if (record.value("dryRun", false)) continue;
    if (record.value("webhook", "") == "validate") {
      auto it = last_workload_of.find(object_key(record));
      if (it == last_workload_of.end()) continue;
      if (!record.value("allowed", true)) {
        auto& records = history[it->second];
        if (!records.empty() && object_key(records.back()) == it->first) records.pop_back();
      }
      last_workload_of.erase(it);
      continue;
    }
    if (record.value("webhook", "") != "mutate" || !record.contains("rightsizing")) continue;
    const Json& rs = record["rightsizing"];
    const std::string workload = rs.value("workload", "");
    if (workload.empty()) continue;
    if (record.value("kind", "") != "Pod") workload_replicas[workload] = rs.value("replicas", int64_t{1});
    last_workload_of[object_key(record)] = workload;
    history[workload].push_back(std::move(record));
  }
  std::map<std::string, Json> latest;
  for (auto& [workload, records] : history) {
    if (records.empty()) continue;
    Json record = records.back();
    // A Pod stands for each replica of its workload, when a record of the workload said how many.
    if (auto it = workload_replicas.find(workload); it != workload_replicas.end() && record.value("kind", "") == "Pod") {
      record["rightsizing"]["replicas"] = it->second;
    }
    latest[workload] = std::move(record);
  }
  if (skipped) std::cerr << "sizeguard report: skipped " << skipped << " line(s) that are not JSON\n";

  Json rows = Json::array();
  double total_savings = 0;
  for (const auto& [workload, record] : latest) {
    const Json& rs = record["rightsizing"];
    const double replicas = rs.value("replicas", 1);
    const double cpu_now = rs["cpuCores"].value("current", 0.0) * replicas;
    const double cpu_rec = rs["cpuCores"].value("recommended", 0.0) * replicas;
    const double mem_now = rs["memoryBytes"].value("current", 0.0) * replicas;
    const double mem_rec = rs["memoryBytes"].value("recommended", 0.0) * replicas;
    const double savings =
        ((cpu_now - cpu_rec) * flags.price_core_hour + (mem_now - mem_rec) / kGiB * flags.price_gib_hour) * kHoursPerMonth;
    total_savings += savings;
    rows.push_back({{"workload", workload},
                    {"mode", rs.value("mode", "")},
                    {"replicas", replicas},
                    {"coldStart", rs.value("coldStart", false)},
                    {"cpuCores", {{"current", cpu_now}, {"recommended", cpu_rec}}},
                    {"memoryGiB", {{"current", mem_now / kGiB}, {"recommended", mem_rec / kGiB}}},
                    {"monthlySavings", std::round(savings * 100) / 100},
                    {"time", record.value("time", "")}});
  }
  if (flags.output == "json") {
    Json out = {{"workloads", rows},
                {"totalMonthlySavings", std::round(total_savings * 100) / 100},
                {"pricePerCoreHour", flags.price_core_hour},
                {"pricePerGiBHour", flags.price_gib_hour}};
    if (snapshot) out["recommender"] = snapshot_summary_json(*snapshot);
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (snapshot) {
    std::printf("recommendations: model %s, generated %s\n", snapshot->model_version.c_str(), snapshot->generated_at.c_str());
    if (!snapshot->decision) {
      std::printf("  (no gate decision recorded: snapshot from an older build)\n");
    } else {
      if (!snapshot->decision->model.empty()) std::printf("  %s\n", snapshot->decision->model.c_str());
      for (const auto& line : decision_summary(*snapshot->decision)) std::printf("  %s\n", line.c_str());
    }
  }
  std::printf("%-48s %-8s %5s %17s %19s %10s\n", "WORKLOAD", "MODE", "PODS", "CPU now→rec", "MEM GiB now→rec", "$/MONTH");
  for (const auto& row : rows) {
    char cpu[32], mem[32];
    std::snprintf(cpu, sizeof cpu, "%.3f→%.3f", row["cpuCores"]["current"].get<double>(), row["cpuCores"]["recommended"].get<double>());
    std::snprintf(mem, sizeof mem, "%.2f→%.2f", row["memoryGiB"]["current"].get<double>(), row["memoryGiB"]["recommended"].get<double>());
    std::printf("%-48s %-8s %5.0f %17s %19s %10.2f%s\n", row["workload"].get<std::string>().c_str(),
                row["mode"].get<std::string>().c_str(), row["replicas"].get<double>(), cpu, mem,
                row["monthlySavings"].get<double>(), row["coldStart"].get<bool>() ? "  (cold start)" : "");
  }
  std::printf("%zu workload(s); estimated savings %.2f per month at %.4f per core-hour and %.4f per GiB-hour\n",
              rows.size(), total_savings, flags.price_core_hour, flags.price_gib_hour);
  return 0;
}

}  // namespace

void add_report_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ReportFlags>();
  auto* cmd = app.add_subcommand("report", "Current vs recommended resources per workload from an audit log, with savings");
  cmd->add_option("--audit-log", flags->audit_log, "audit log written by `serve --audit-log`")->required();
  cmd->add_option("--recommendations", flags->recommendations,
                  "snapshot from `sizeguard recommend`: also show its model and which source (model, blend, vpa) "
                  "shipped per resource");
  cmd->add_option("--price-core-hour", flags->price_core_hour, "price of one core for one hour")->capture_default_str();
  cmd->add_option("--price-gib-hour", flags->price_gib_hour, "price of one GiB of memory for one hour")->capture_default_str();
  cmd->add_option("--output", flags->output, "table or json")
      ->transform(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  cmd->callback([flags, &exit_code] { exit_code = run_report(*flags); });
}

}  // namespace sizeguard
