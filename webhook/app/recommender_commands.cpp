// `sizeguard train | recommend | evaluate`: the recommender's command line.
//   train     --bitbrains DIR | --csv FILE | --azure-cpu FILE | --prometheus URL [--start --end --step
//             --token --ca-file] --out DIR [--train-days 1-20] [--horizon 24h] [--quantile 0.95]
//             [--rounds N] [--from-model DIR] [--also KIND:PATH[@DAYS]]; ends with calibration and the gate
//   recommend --model DIR (same sources) --out FILE [--margin M] [--at TIME] [--no-regate] [--regate-days 4]
//             [--model-store DIR --min-train-days 8 --min-default-days 1] (the CronJob)
//   evaluate  --model DIR (same sources) [--eval-days 21-30] [--json F] [--html F] [--export-recs F]
//             [--max-series N] [--no-regate] [--regate-days 4]
// Exit 0 ok, 1 runtime failure, 2 bad input (message on stderr). Progress only on a TTY.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <sstream>
#include <string>
#include <tuple>

#include "kube/utc_time.h"
#include "recommender/evaluate.h"
#include "recommender/ingest.h"
#include "recommender/model.h"
#include "recommender/model_choice.h"
#include "recommender/prometheus.h"
#include "recommender/recommend.h"
#include "recommender/publish.h"
#include "webhook/app/commands.h"
#include "kube/kubeapi.h"

#ifndef SIZEGUARD_DEFAULT_MODEL_DIR
#define SIZEGUARD_DEFAULT_MODEL_DIR "recommender/models/default"
#endif

namespace sizeguard {
namespace {

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SourceFlags {
  std::string bitbrains, csv, azure_cpu, prometheus, start, end, step = "5m", token, ca_file;
  size_t max_series = 0;
};

using Clock = std::chrono::steady_clock;

bool tty() { return ::isatty(2) == 1; }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// "24h", "30m", "1d", "90s", "3600" -> seconds.
int64_t parse_duration(const std::string& text, const char* flag) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::logic_error&) {
    throw InputError(std::string(flag) + ": bad duration '" + text + "' (expected e.g. 24h, 30m, 1d, 300s)");
  }
  const std::string unit = text.substr(used);
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "m") scale = 60;
  else if (unit == "h") scale = 3600;
  else if (unit == "d") scale = 86400;
  if (scale == 0 || !(value > 0))
    throw InputError(std::string(flag) + ": bad duration '" + text + "' (expected e.g. 24h, 30m, 1d, 300s)");
  return static_cast<int64_t>(std::llround(value * scale));
}

// Epoch seconds or RFC3339.
int64_t parse_time(const std::string& text, const char* flag) {
  if (auto t = parse_rfc3339(text)) return *t;
  size_t used = 0;
  try {
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::logic_error&) {
  }
  throw InputError(std::string(flag) + ": bad time '" + text + "' (expected epoch seconds or RFC3339, e.g. 2024-05-01T00:00:00Z)");
}

void add_source_options(CLI::App* cmd, SourceFlags& f) {
  cmd->add_option("--bitbrains", f.bitbrains, "Bitbrains GWA-T-12 trace file or directory");
  cmd->add_option("--csv", f.csv, "usage CSV (timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,...)");
  cmd->add_option("--azure-cpu", f.azure_cpu,
                  "Azure Public Dataset V1 CPU sample (vm,t_offset_s,cpu_avg_pct,...; CPU only, docs/recommender-data.md)");
  cmd->add_option("--prometheus", f.prometheus, "Prometheus base URL (cAdvisor metrics)");
  cmd->add_option("--start", f.start, "Prometheus range start (epoch seconds or RFC3339; default end - 14d)");
  cmd->add_option("--end", f.end, "Prometheus range end (default now)");
  cmd->add_option("--step", f.step, "Prometheus step (default 5m)");
  cmd->add_option("--token", f.token, "Prometheus bearer token");
  cmd->add_option("--ca-file", f.ca_file, "PEM CA bundle for https Prometheus");
}

std::vector<UsageSeries> read_source(const SourceFlags& f) {
  const int sources = !f.bitbrains.empty() + !f.csv.empty() + !f.azure_cpu.empty() + !f.prometheus.empty();
  if (sources != 1) throw InputError("give exactly one of --bitbrains DIR, --csv FILE, --azure-cpu FILE, --prometheus URL");
  const auto started = Clock::now();
  if (tty()) std::cerr << "reading usage ..." << std::flush;
  IngestReport report;
  std::vector<UsageSeries> series;
  if (!f.prometheus.empty()) {
    PrometheusOptions p;
    p.url = f.prometheus;
    p.bearer_token = f.token;
    p.ca_file = f.ca_file;
    p.end = f.end.empty() ? std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count()
                          : parse_time(f.end, "--end");
    p.start = f.start.empty() ? p.end - 14 * kSecondsPerDay : parse_time(f.start, "--start");
    p.step_seconds = parse_duration(f.step, "--step");
    if (p.start >= p.end) throw InputError("--start must be before --end");
    series = read_prometheus(p, report);  // runtime_error: unreachable/failed -> exit 1
  } else {
    try {
      series = !f.bitbrains.empty()   ? read_bitbrains(f.bitbrains, report, f.max_series)
               : !f.azure_cpu.empty() ? read_azure_cpu(f.azure_cpu, report)
                                      : read_usage_csv(f.csv, report);
    } catch (const std::runtime_error& e) {
      throw InputError(e.what());
    }
  }
  if (f.max_series > 0 && series.size() > f.max_series) series.resize(f.max_series);
  if (tty()) std::cerr << "\r";
  std::cerr << "read " << report.rows_read << " rows (" << report.rows_used << " used, " << report.rows_bad << " bad) into "
            << series.size() << " series in " << std::fixed << std::setprecision(1) << seconds_since(started) << " s\n";
  for (size_t i = 0; i < report.errors.size() && i < 5; ++i) std::cerr << "  " << report.errors[i] << "\n";
  if (report.errors.size() > 5) std::cerr << "  ... " << report.errors.size() - 5 << " more\n";
  if (series.empty()) throw InputError("no usage series in the input");
  return series;
}

// Runs `body`, mapping errors to exit codes and printing "sizeguard <cmd>: <message>".
template <typename F>
void run(const char* name, int& exit_code, F body) {
  try {
    body();
    exit_code = 0;
  } catch (const InputError& e) {
    std::cerr << "sizeguard " << name << ": " << e.what() << "\n";
    exit_code = 2;
  } catch (const ModelError& e) {
    std::cerr << "sizeguard " << name << ": " << e.what() << "\n";
    exit_code = e.bad_input() ? 2 : 1;
  } catch (const std::invalid_argument& e) {
    std::cerr << "sizeguard " << name << ": " << e.what() << "\n";
    exit_code = 2;
  } catch (const std::exception& e) {
    std::cerr << "sizeguard " << name << ": " << e.what() << "\n";
    exit_code = 1;
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  if (!out || !(out << text) || !out.flush()) throw std::runtime_error(path + ": cannot write");
}

// The end of the last whole UTC day (from day1) that the samples reach.
int64_t whole_days_end(const std::vector<UsageSeries>& series, int64_t day1) {
  return day1 + std::max<int64_t>(0, data_end(series) - day1) / kSecondsPerDay * kSecondsPerDay;
}

std::string fmt_eta(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  return buf;
}

// train --also KIND:PATH[@FIRST-LAST]: another fleet's history and its days (its own day numbers;
// none: all whole days).
struct OtherFleet {
  SourceFlags source;
  std::string spec, path;
  std::optional<std::pair<int, int>> days;
};

// Checked before any data is read, so a typo fails at once.
OtherFleet parse_other_fleet(const std::string& spec) {
  OtherFleet fleet;
  fleet.spec = spec;
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  fleet.path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  std::string days;
  if (const size_t at = fleet.path.rfind('@'); at != std::string::npos) days = fleet.path.substr(at + 1), fleet.path.resize(at);
  if (kind == "bitbrains") fleet.source.bitbrains = fleet.path;
  else if (kind == "csv") fleet.source.csv = fleet.path;
  else if (kind == "azure-cpu") fleet.source.azure_cpu = fleet.path;
  else
    throw InputError("--also '" + spec + "': expected KIND:PATH[@FIRST-LAST] with KIND bitbrains, csv or azure-cpu");
  if (fleet.path.empty()) throw InputError("--also '" + spec + "': no path");
  if (!days.empty()) {
    try {
      fleet.days = parse_day_range(days);
    } catch (const std::invalid_argument& e) {
      throw InputError("--also '" + spec + "': " + e.what());
    }
  }
  return fleet;
}

// Reads the fleet, lays its days under [target_begin, target_end) (lay_under) and appends its series.
void add_other_fleet(std::vector<UsageSeries>& series, const OtherFleet& fleet, int64_t target_begin,
                     int64_t target_end) {
  auto other = read_source(fleet.source);
  const int64_t day1 = day_one(other);
  const int64_t begin = fleet.days ? day_start(day1, fleet.days->first) : day1;
  const int64_t end = fleet.days ? day_start(day1, fleet.days->second + 1) : whole_days_end(other, day1);
  const int64_t shift = lay_under(other, begin, end, target_begin, target_end);
  const std::string days = format_day(begin) + " .. " + format_day(end - 1);
  if (other.empty())
    throw InputError("--also '" + fleet.spec + "': no samples in its days " + days + " that fit under the training days");
  std::cerr << "also training on " << other.size() << " series of " << fleet.path << ", " << days << " moved by "
            << shift / kSecondsPerDay << " days\n";
  series.insert(series.end(), std::make_move_iterator(other.begin()), std::make_move_iterator(other.end()));
}

void add_train(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("train", "Train the usage-forecast model (XGBoost, pinball loss) and save it to --out DIR");
  auto f = std::make_shared<SourceFlags>();
  auto out = std::make_shared<std::string>();
  auto days = std::make_shared<std::string>();
  auto horizon = std::make_shared<std::string>("24h");
  auto o = std::make_shared<TrainOptions>();
  add_source_options(cmd, *f);
  cmd->add_option("--max-series", f->max_series, "read at most N series (Bitbrains: the first N files)");
  cmd->add_option("--out", *out, "model directory to write (model.json + metadata.json)")->required();
  cmd->add_option("--train-days", *days, "training days FIRST-LAST, day 1 = first UTC midnight of the data (default all)");
  cmd->add_option("--horizon", *horizon, "forecast horizon (default 24h)");
  cmd->add_option("--quantile", o->cpu_quantile, "CPU quantile of the next horizon to predict (default 0.95)");
  cmd->add_option("--memory-quantile", o->memory_quantile, "pinball quantile for the next-horizon memory peak (default 0.5)");
  cmd->add_option("--rounds", o->max_rounds, "maximum boosting rounds (default 300; early stopping on validation)");
  cmd->add_option("--validation-days", o->validation_days, "latest training days used for validation (default 4)");
  cmd->add_option("--size-weight", o->size_weight_power,
                  "weigh rows by (level/floor)^P: 0 = all workloads alike, 1 = by size (default 0.5)");
  cmd->add_option("--max-depth", o->max_depth, "tree depth (default 5)");
  cmd->add_option("--eta", o->eta, "learning rate (default 0.1)");
  cmd->add_option("--min-child-weight", o->min_child_weight, "minimum (weighted) rows per leaf (default 20)");
  cmd->add_option("--threads", o->nthread, "threads (default: all cores)");
  auto base = std::make_shared<std::string>("level");
  cmd->add_option("--base", *base, "what the trees correct: 'level' (the recent p95, default) or 'vpa' (learn log(target / VPA))")
      ->check(CLI::IsMember({"level", "vpa"}));
  auto budget = std::make_shared<std::vector<double>>(std::vector<double>{o->budget_cpu_risk, o->budget_memory_risk});
  cmd->add_option("--risk-budget", *budget,
                  "pooled risk CPU,MEMORY the raw predictions spend per batch, series by series (0 = off; default 0,0.01)")
      ->delimiter(',')->expected(2);
  auto tails = std::make_shared<std::string>("0.8,0.95,0.99");
  cmd->add_option("--cpu-tails", *tails,
                  "CPU quantiles Q1,Q2,.. of one more booster each: the tail of the next day's forecast the CPU blend "
                  "spends the pooled risk on (at most 4; default 0.8,0.95,0.99; 'none': no tail boosters)");
  auto also = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--also", *also,
                  "another fleet's history to train on as well, KIND:PATH[@FIRST-LAST] (KIND: bitbrains, csv or "
                  "azure-cpu; its own days, default all whole days), laid by whole weeks under the end of "
                  "--train-days; repeatable");
  auto from_model = std::make_shared<std::string>();
  cmd->add_option("--from-model", *from_model,
                  "no new main trees: load this model and redo the end of training only (input ranges over its "
                  "training period, calibration and gate on its validation days; CPU tail boosters when it has none), "
                  "e.g. for a model trained by an older build");
  cmd->callback([=, &exit_code] {
    run("train", exit_code, [&] {
      TrainOptions options = *o;
      options.vpa_base = *base == "vpa";
      options.cpu_tail_quantiles.clear();
      if (*tails != "none") {
        std::istringstream list(*tails);
        for (std::string item; std::getline(list, item, ',');) {
          size_t used = 0;
          double q = 0;
          try {
            q = std::stod(item, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used == 0 || used != item.size() || !(q > 0 && q < 1))
            throw InputError("--cpu-tails: '" + item + "' is not a quantile in (0, 1) (or give 'none')");
          options.cpu_tail_quantiles.push_back(q);
        }
        if (options.cpu_tail_quantiles.size() > kMaxCpuTails)
          throw InputError("--cpu-tails: at most " + std::to_string(kMaxCpuTails) + " quantiles");
      }
      for (double v : *budget)
        if (!(v >= 0 && v < 1)) throw InputError("--risk-budget: each risk must be in [0, 1)");
      options.budget_cpu_risk = (*budget)[0], options.budget_memory_risk = (*budget)[1];
      options.horizon_seconds = parse_duration(*horizon, "--horizon");
      if (!(options.cpu_quantile > 0 && options.cpu_quantile < 1)) throw InputError("--quantile must be in (0, 1)");
      if (!(options.memory_quantile > 0 && options.memory_quantile < 1)) throw InputError("--memory-quantile must be in (0, 1)");
      if (options.max_rounds < 1) throw InputError("--rounds must be at least 1");
      if (options.validation_days < 1) throw InputError("--validation-days must be at least 1");
      std::pair<int, int> range{0, 0};
      if (!days->empty()) range = parse_day_range(*days);
      std::vector<OtherFleet> others;
      for (const auto& spec : *also) others.push_back(parse_other_fleet(spec));
      auto series = read_source(*f);
      const int64_t day1 = day_one(series);
      if (!days->empty()) {
        options.train_begin = day_start(day1, range.first);
        options.train_end = day_start(day1, range.second + 1);
      } else if (!others.empty()) {  // the whole days of this data, which the other fleets' days go under
        options.train_begin = day1;
        options.train_end = whole_days_end(series, day1);
      }
      if (!others.empty()) options.fleet_of_series.assign(series.size(), 0);
      for (const auto& other : others) {
        add_other_fleet(series, other, options.train_begin, options.train_end);
        options.fleet_of_series.resize(series.size(), options.fleet_of_series.back() + 1);
      }
      const auto started = Clock::now();
      if (tty())
        options.progress = [first = std::make_shared<Clock::time_point>()](const TrainProgress& p) {
          // ETA from the boosting rounds only (row building comes before round 1).
          if (p.round == 1) *first = Clock::now();
          const double elapsed = seconds_since(*first);
          const double eta = p.round > 1 ? elapsed / (p.round - 1) * (p.max_rounds - p.round) : 0.0;
          std::fprintf(stderr, "\rround %d/%d  train %.4f  valid %.4f  best %d  ETA %s (max)   ", p.round, p.max_rounds,
                       p.train_loss, p.valid_loss, p.best_round, fmt_eta(eta).c_str());
        };
      QuantileModel model;
      if (from_model->empty()) {
        model = QuantileModel::train(series, options);
      } else {
        model = QuantileModel::load(*from_model);
        // The guard's ranges describe the data the model was trained on: kept when recorded.
        if (model.metadata().input_low.empty()) model.record_input_ranges(series);
        // A model from before the CPU tail forecasts gets them, trained on these --train-days
        // (the main trees stay as they are; a throw-away main booster is trained beside them).
        if (model.metadata().cpu_tail_quantiles.empty() && !options.cpu_tail_quantiles.empty())
          model.adopt_cpu_tails(QuantileModel::train(series, options));
        model.set_risk_budget(options.budget_cpu_risk, options.budget_memory_risk);
      }
      if (tty()) std::cerr << "\n";
      // Calibrate the margins that meet the target risks on the validation days: inside the
      // training range, so days held out for evaluation stay unseen.
      // A model from --from-model may come from other data: its gate days are this data's
      // last --validation-days of --train-days (default: every whole day).
      const int64_t train_end = from_model->empty()                   ? model.metadata().train_end
                                : options.train_end ? options.train_end
                                                    : whole_days_end(series, day1);
      const int last_day = static_cast<int>((train_end - day1) / kSecondsPerDay);
      const int first = from_model->empty()
                            ? std::max(1, static_cast<int>((model.metadata().valid_begin - day1) / kSecondsPerDay) + 1)
                            : std::max(1, last_day - options.validation_days + 1);
      calibrate_and_gate(model, series, first, last_day);
      const auto& meta = model.metadata();
      std::cout << "calibrated margins on validation days " << first << "-" << last_day << ": cpu " << std::fixed
                << std::setprecision(2) << meta.calibrated_cpu_margin << " (5% of windows above), memory "
                << meta.calibrated_memory_margin << " (1%)\n";
      struct Named { const char* name; const ModelMetadata::Gate* gate; const char* blend; };
      for (const auto& [name, gate, blend] : {Named{"cpu", &meta.cpu_gate, meta.cpu_tail_quantiles.empty() ? "blend (model x vpa)^1/4 x recent^1/2" : "blend (forecast x vpa)^1/4 x recent^1/2"},
                                              Named{"memory", &meta.memory_gate, "blend sqrt(model x vpa)"}})
        std::cout << "gate " << name << ": " << (gate->use_blend ? blend : gate->use_model ? "model" : "baseline (vpa)")
                  << " wins on validation days " << first << "-" << last_day << " at matched risk: slack model "
                  << std::setprecision(1) << 100 * gate->model_slack << "%, vpa " << 100 * gate->baseline_slack
                  << "%, blend " << 100 * gate->blend_slack << "% (vpa margin " << std::setprecision(2)
                  << gate->baseline_margin << ", blend margin " << gate->blend_margin << ")\n";
      model.save(*out);
      const auto& m = model.metadata();
      std::cout << (from_model->empty() ? "trained " : "re-gated (no new main trees) ") << model.version() << " in " << std::fixed << std::setprecision(1) << seconds_since(started)
                << " s: " << m.rounds << " rounds, " << m.rows_train << " training / " << m.rows_valid
                << " validation origins from " << m.series << " series (" << m.samples << " samples), "
                << format_utc(m.train_begin) << " .. " << format_utc(m.train_end) << "\n";
      for (size_t i = 0; i < m.cpu_tail_quantiles.size(); ++i)
        std::cout << (i == 0 ? "cpu tail boosters (quantile: rounds): " : ", ") << std::defaultfloat << std::setprecision(3)
                  << m.cpu_tail_quantiles[i] << ": " << m.cpu_tail_rounds[i] << (i + 1 == m.cpu_tail_quantiles.size() ? "\n" : "") << std::fixed;
      std::cout
                << "validation pinball (log space): cpu " << std::setprecision(4) << m.valid_loss_cpu << ", memory "
                << m.valid_loss_memory << "\nwrote " << (std::filesystem::path(*out) / "model.json").string() << ", "
                << m.cpu_tail_quantiles.size() << " CPU tail boosters and "
                << (std::filesystem::path(*out) / "metadata.json").string() << "\n";
    });
  });
}

void add_recommend(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("recommend", "Write the recommendations snapshot the webhook reads");
  auto f = std::make_shared<SourceFlags>();
  auto model_dir = std::make_shared<std::string>(SIZEGUARD_DEFAULT_MODEL_DIR);
  auto out = std::make_shared<std::string>();
  auto at = std::make_shared<std::string>();
  auto policy = std::make_shared<RecommendationPolicy>();
  auto top = std::make_shared<size_t>(3);
  add_source_options(cmd, *f);
  cmd->add_option("--max-series", f->max_series, "read at most N series");
  cmd->add_option("--model", *model_dir, "model directory (default: the built-in default model)");
  auto publish = std::make_shared<std::string>();
  auto kubeconfig = std::make_shared<std::string>();
  cmd->add_option("--out", *out, "snapshot file to write (JSON; '-' for stdout)");
  cmd->add_option("--publish-configmap", *publish,
                  "NAMESPACE/NAME: also write the snapshot into this ConfigMap (gzip into binaryData above 900 KiB)");
  cmd->add_option("--kubeconfig", *kubeconfig, "for --publish-configmap outside a pod (default: the service account)");
  auto* margin_option = cmd->add_option(
      "--margin", policy->margin,
      "safety margin multiplied onto predictions (default: the model's calibrated margins, else 1.1)");
  cmd->add_option("--at", *at, "recommend as of this time (epoch or RFC3339; default: just after the last sample)");
  cmd->add_option("--explain", *top, "top feature contributions per resource (default 3)");
  // The CronJob's mode: the model is chosen from the cluster's own history on every run.
  auto store = std::make_shared<std::string>();
  auto min_train_days = std::make_shared<double>(8), min_default_days = std::make_shared<double>(1);
  auto train_threads = std::make_shared<int>(0);
  cmd->add_option("--model-store", *store,
                  "train on the input's own history and keep the last good model in DIR/current (gated against "
                  "VPA); --model is then the bundled default used with too little history");
  cmd->add_option("--min-train-days", *min_train_days, "with --model-store: days of history needed to train (default 8)");
  cmd->add_option("--min-default-days", *min_default_days,
                  "with --model-store: below this many days the baseline (vpa) is used for every resource (default 1)");
  cmd->add_option("--train-threads", *train_threads, "with --model-store: training threads (default: all cores)");
  auto no_regate = std::make_shared<bool>(false);
  cmd->add_flag("--no-regate", *no_regate,
                "use the model's own gate and margins as saved, instead of gating and calibrating it again on the "
                "input's most recent days (up to 4 it did not train on, when there are at least 2); without "
                "--model-store (which always gates a model it did not just train)");
  auto regate_days = std::make_shared<int>(4);
  cmd->add_option("--regate-days", *regate_days, "at most this many recent days to regate on (default 4)");
  cmd->callback([=, &exit_code] {
    run("recommend", exit_code, [&] {
      if (*regate_days < 2) throw InputError("--regate-days must be at least 2");
      if (!(policy->margin > 0)) throw InputError("--margin must be positive");
      if (out->empty() && publish->empty()) throw InputError("give --out FILE, --publish-configmap NAMESPACE/NAME or both");
      std::optional<std::pair<std::string, std::string>> target;
      if (!publish->empty()) {
        target = parse_configmap_ref(*publish);
        if (!target) throw InputError("--publish-configmap: expected NAMESPACE/NAME, got '" + *publish + "'");
      }
      if (!(*min_default_days >= 0 && *min_train_days >= *min_default_days))
        throw InputError("--min-train-days must be at least --min-default-days (and both non-negative)");
      const auto series = read_source(*f);
      const int64_t now = at->empty() ? data_end(series) : parse_time(*at, "--at");
      QuantileModel model;
      ModelMetadata meta;  // the gate and margins what ships follows
      std::string model_choice;
      const double margin = policy->margin;
      if (store->empty()) {
        model = QuantileModel::load(*model_dir);
        meta = model.metadata();  // its calibrated margins and gate, as saved
        // A model meets data it did not learn from: what ships follows the input's own recent
        // days (model, blend or VPA per resource), never a gate from another fleet.
        model_choice = "--model " + *model_dir + ": ";
        if (*no_regate) {
          model_choice += "its saved gate (--no-regate)";
        } else {
          const std::string note = gate_on_recent_days(model, meta, series, now, *regate_days).note;
          std::cerr << "model: " << note << "\n";
          model_choice += note;
        }
        *policy = shipped_policy(meta);
      } else {
        ModelChoiceOptions choice_options;
        choice_options.store = *store;
        choice_options.default_model = *model_dir;
        choice_options.min_train_days = *min_train_days;
        choice_options.min_default_days = *min_default_days;
        choice_options.train.validation_days = 2;
        choice_options.train.nthread = *train_threads;
        ModelChoice choice = choose_model(series, choice_options);
        std::cerr << "model: " << to_string(choice.source) << " (" << choice.reason << ")\n";
        model = std::move(choice.model);
        meta = model.metadata();
        model_choice = std::string(to_string(choice.source)) + ": " + choice.reason;
        *policy = choice.policy;
      }
      if (margin_option->count() > 0) policy->margin = margin, policy->memory_margin = 0;  // overrides the model's
      const auto recs = recommend_batch(model, series, now, *policy, *top);
      auto snapshot = make_snapshot(series, recs, model.version(), now);
      snapshot.decision = describe_decision(meta, *policy, recs, series, model_choice);
      if (*out == "-") std::cout << snapshot_to_json(snapshot);
      else if (!out->empty()) save_recommendations(snapshot, *out);
      if (target) {
        auto config = kubeconfig->empty() ? in_cluster_config() : kubeconfig_config(*kubeconfig);
        if (auto* error = std::get_if<std::string>(&config)) throw InputError("cluster access: " + *error);
        KubeClient client(std::get<KubeConfig>(config));
        if (auto error = publish_snapshot(client, target->first, target->second, snapshot_to_json(snapshot))) {
          throw std::runtime_error(*error);
        }
      }
      // The decision's lines say per resource which source shipped and how many series went to VPA anyway.
      for (const auto& line : decision_summary(*snapshot.decision)) std::cerr << "shipped " << line << "\n";
      std::cerr << "wrote " << snapshot.recommendations.size() << " recommendations (" << snapshot.decision->cold_start
                << " cold start) as of "
                << snapshot.generated_at << " to " << (out->empty() ? "" : *out)
                << (target ? (out->empty() ? "" : " and ") + std::string("configmap ") + *publish : "") << "\n";
    });
  });
}

void add_evaluate(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("evaluate", "Rolling-origin backtest of the model against VPA, KRR and an oracle");
  auto f = std::make_shared<SourceFlags>();
  auto model_dir = std::make_shared<std::string>(SIZEGUARD_DEFAULT_MODEL_DIR);
  auto days = std::make_shared<std::string>("21-30");
  auto json_out = std::make_shared<std::string>(), html_out = std::make_shared<std::string>(),
       recs_out = std::make_shared<std::string>();
  auto o = std::make_shared<EvaluateOptions>();
  add_source_options(cmd, *f);
  cmd->add_option("--model", *model_dir, "model directory (default: the built-in default model)");
  cmd->add_option("--eval-days", *days, "evaluation days FIRST-LAST (default 21-30)");
  cmd->add_option("--json", *json_out, "write the results as JSON");
  cmd->add_option("--html", *html_out, "write a self-contained HTML report with SVG charts");
  cmd->add_option("--export-recs", *recs_out, "write every daily recommendation as CSV");
  cmd->add_option("--max-series", f->max_series, "evaluate at most N series (Bitbrains: the first N files)");
  cmd->add_option("--cpu-risk", o->cpu_risk, "matched CPU under-provisioning risk (default 0.05)");
  cmd->add_option("--memory-risk", o->memory_risk, "matched memory under-provisioning risk (default 0.01)");
  auto no_regate = std::make_shared<bool>(false);
  cmd->add_flag("--no-regate", *no_regate,
                "score the model with its own gate and margins as saved (recommend --no-regate) instead of gated again "
                "on the days before each evaluation day (what recommend does)");
  cmd->add_option("--regate-days", o->regate_days, "at most this many recent days to regate on (default 4)");
  cmd->callback([=, &exit_code] {
    run("evaluate", exit_code, [&] {
      EvaluateOptions options = *o;
      options.regate = !*no_regate;
      if (options.regate_days < 2) throw InputError("--regate-days must be at least 2");
      std::tie(options.first_day, options.last_day) = parse_day_range(*days);
      if (!(options.cpu_risk > 0 && options.cpu_risk < 1) || !(options.memory_risk > 0 && options.memory_risk < 1))
        throw InputError("--cpu-risk and --memory-risk must be in (0, 1)");
      const QuantileModel model = QuantileModel::load(*model_dir);
      const auto series = read_source(*f);
      const auto& meta = model.metadata();
      const int64_t day1 = day_one(series);
      const int64_t eval_begin = day_start(day1, options.first_day);
      if (meta.train_end > eval_begin && meta.data_start <= eval_begin)
        std::cerr << "warning: the model was trained on data up to " << format_utc(meta.train_end)
                  << ", after the evaluation start " << format_utc(eval_begin) << " (look-ahead if this is the same data)\n";
      const auto started = Clock::now();
      if (tty())
        options.progress = [started](size_t done, size_t total) {
          if (done % 10 != 0 && done != total) return;
          const double elapsed = seconds_since(started);
          std::fprintf(stderr, "\rbacktest %zu/%zu series  ETA %s   ", done, total,
                       fmt_eta(elapsed / static_cast<double>(done) * static_cast<double>(total - done)).c_str());
        };
      const Evaluation e = run_backtest(series, model, options);
      if (tty()) std::cerr << "\n";
      if (e.series_days == 0) throw InputError("no samples in evaluation days " + *days);
      write_table(std::cout, e);
      if (!json_out->empty()) write_file(*json_out, evaluation_json(e));
      if (!html_out->empty()) write_file(*html_out, evaluation_html(e));
      if (!recs_out->empty()) {
        std::ostringstream csv;
        write_recs_csv(csv, e);
        write_file(*recs_out, csv.str());
      }
    });
  });
}

}  // namespace

void add_recommender_commands(CLI::App& app, int& exit_code) {
  add_train(app, exit_code);
  add_recommend(app, exit_code);
  add_evaluate(app, exit_code);
}

}  // namespace sizeguard
