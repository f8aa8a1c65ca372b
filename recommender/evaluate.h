// Rolling-origin backtest. At each UTC midnight t of the evaluation days every method
// recommends from the samples before t only, and is scored on the 5-minute samples of
// [t, t + 24h):
//   model   what `recommend --at t` writes (recommend_batch with the shipped policy: calibrated
//           margins, the gate's model-or-baseline choice, the distribution guard, floors and
//           rounding); the headline
//   raw     the model's bare prediction (no margin, no floors): a diagnostic
//   blend   sqrt(raw x vpa): the candidate the gate may pick (a diagnostic here)
//   vpa     VPA recommender as documented (baselines.h)
//   krr     KRR "simple" (baselines.h)
//   oracle  USES THE FUTURE: the day's actual CPU p95 and memory peak (a lower bound on slack)
// Per method and resource, over all scored windows:
//   slack = sum (rec - usage)+ / sum rec;  under = share of windows with usage > rec;
//   churn = share of day-to-day changes of the recommendation by more than 10%;
//   coverage = share of series-days with samples for which the method had a recommendation;
//   series p90 under = the p90 over series of each series' own under-provisioning at the
//   matched margin (pooled risk lets some workloads run far above it).
// Matched risk: each method's recommendations are multiplied by the smallest margin m with
// under(m) <= risk (CPU 5%, memory 1%), and slack is compared at that m;
// gap closed = (slack_vpa - slack_model) / (slack_vpa - slack_oracle), per resource.
// Days are numbered from 1 = the first UTC midnight at or after the earliest sample.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "recommender/recommendation.h"
#include "recommender/usage.h"

namespace sizeguard {

// Start (epoch) of day 1: the first UTC midnight at or after the earliest sample (0 if none).
int64_t day_one(const std::vector<UsageSeries>& series);
// Just after the latest sample (epoch; 0 if none): where the data ends, and "now" for it.
int64_t data_end(const std::vector<UsageSeries>& series);
// Start (epoch) of day `day` (1-based) when day 1 starts at `day1`.
inline int64_t day_start(int64_t day1, int day) { return day1 + static_cast<int64_t>(day - 1) * kSecondsPerDay; }
// How the backtest and the snapshot's decision print a day and a share: the UTC date of an
// epoch ("2013-07-21"), and a fraction as a percentage ("52.3%"; "n/a" when not finite).
std::string format_day(int64_t epoch);
std::string pct(double fraction);
// "21-30" or "7" -> {21, 30} / {7, 7}; throws std::invalid_argument with a clear message.
std::pair<int, int> parse_day_range(const std::string& text);

struct EvaluateOptions {
  int first_day = 21, last_day = 30;
  double cpu_risk = 0.05, memory_risk = 0.01;
  size_t chart_series = 3;
  int threads = 0;  // 0: hardware
  std::function<void(size_t done, size_t total)> progress;
  std::optional<RecommendationPolicy> policy;  // nullopt: shipped_policy(model.metadata())
  // As `recommend` does by default: before each evaluation day, gate and calibrate the model
  // again on the days before it (gate_on_recent_days); ignored when `policy` is set.
  bool regate = false;
  int regate_days = 4;  // at most this many recent days (gate_on_recent_days max_days)
  // The gate's view: vpa, raw and blend as they would ship, with the memory request floor
  // (memory_request_floor) of `policy`; false: VPA as Kubernetes ships it, the bare prediction.
  bool candidates_as_shipped = false;
};

struct CurvePoint {
  double margin = 1;
  double slack = 0, under = 0;
};

struct ResourceScore {
  double slack = 0, under = 0, churn = 0;      // at margin 1 (the method as it is)
  double matched_margin = 1, matched_slack = 0, matched_under = 0;  // at the matched risk
  // The pooled risk can hide workloads that are under-provisioned far more often than the
  // target: the p90 over series of each series' own under-provisioning at the matched margin.
  double matched_series_p90_under = 0;
  std::vector<CurvePoint> curve;               // margin sweep
  size_t windows = 0;
};

struct MethodScore {
  std::string name;
  bool uses_future = false;
  bool diagnostic = false;  // not a method anyone ships (raw)
  double coverage = 0;
  size_t days_recommended = 0;
  ResourceScore cpu, memory;
};

struct RecRow {
  std::string method, series;
  int64_t day_start = 0;
  double cpu_cores = 0, memory_bytes = 0;
};

struct ChartSeries {
  std::string name;
  std::vector<int64_t> hours;                 // hourly points of the evaluation days
  std::vector<double> cpu_max, memory_max;    // per hour, NaN when no sample
};

struct Evaluation {
  EvaluateOptions options;
  int64_t day1 = 0, eval_begin = 0, eval_end = 0;
  size_t series = 0, series_days = 0;
  std::string model_version;
  std::vector<MethodScore> methods;  // model, vpa, krr, oracle, raw, blend
  RecommendationPolicy policy;       // the one "model" was scored with
  // Series-days "model" recommended, and how many of them used the model (vs the baseline)
  // per resource, and how many were out of the training distribution.
  size_t shipped_days = 0, cpu_from_model_days = 0, memory_from_model_days = 0, out_of_distribution_days = 0;
  ModelMetadata::Gate cpu_gate, memory_gate;
  // With options.regate: the evaluation days gated on their own recent days, and per resource
  // how many days each candidate was chosen (model, blend, baseline); policy/gates above are
  // the last day's.
  size_t regated_days = 0;
  struct GateDays {
    size_t model = 0, blend = 0, baseline = 0;
  } cpu_gate_days, memory_gate_days;
  double gap_closed_cpu = 0, gap_closed_memory = 0;
  std::vector<RecRow> recs;          // every method's raw daily recommendation
  std::vector<ChartSeries> charts;
};

Evaluation run_backtest(const std::vector<UsageSeries>& series, const QuantileModel& model, const EvaluateOptions& options);

// The end of `train`: a backtest on days first..last (the validation days, held out from the
// gradient steps) that sets the model's calibrated margins (the raw prediction's matched-risk
// margins) and its champion/challenger gate: per resource, the model is used only if its
// matched-risk slack is below the VPA baseline's, and as the blend (blend_cpu, blend_memory) x its
// matched margin where that beats both at a margin >= 1; the baseline margin is max(1, VPA's matched margin).
// A resource without scored windows keeps the model. Returns the backtest.
Evaluation calibrate_and_gate(QuantileModel& model, const std::vector<UsageSeries>& series, int first_day, int last_day,
                              double cpu_risk = 0.05, double memory_risk = 0.01);

// What calibrate_and_gate decides, written into `metadata` (calibrated margins, gates, gate
// days) instead of into the model; the model's own metadata is untouched.
Evaluation decide_gate(const QuantileModel& model, ModelMetadata& metadata, const std::vector<UsageSeries>& series,
                       int first_day, int last_day, double cpu_risk = 0.05, double memory_risk = 0.01);

// What a decided gate ships: "model", "blend" or "baseline".
const char* gate_name(const ModelMetadata::Gate& gate);

// What `recommend` does with a model it did not just train: gate and calibrate it again on the
// input's own most recent days. Gate days are whole days (day numbers as in EvaluateOptions)
// that end at or before `before` (0: the last sample), have a day of history before them
// (day >= 2) and do not overlap the model's training period (its train_begin..train_end, so
// a model is never gated on the days it learned from); the last `max_days` of them are used,
// and only if there are at least `min_days`. Returns false (metadata untouched) otherwise.
struct RecentGate {
  bool regated = false;
  int first_day = 0, last_day = 0;
  std::string note;  // one line for the log: the days and the decision, or why not
};
RecentGate gate_on_recent_days(const QuantileModel& model, ModelMetadata& metadata,
                               const std::vector<UsageSeries>& series, int64_t before = 0, int max_days = 4,
                               int min_days = 2);

void write_table(std::ostream& out, const Evaluation& e);
std::string evaluation_json(const Evaluation& e);
std::string evaluation_html(const Evaluation& e);
void write_recs_csv(std::ostream& out, const Evaluation& e);

// The report's SVG line chart, for other reports in the same style (`sizeguard scan --output
// html`): linear axes, a legend, NaN points break a line, an optional dashed vertical line.
struct ChartLine {
  std::string name, color;
  std::vector<double> x, y;
  bool dashed = false;
  double width = 1.5;
};
std::string svg_line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<ChartLine>& lines, double x0, double x1, double y0, double y1,
                           const std::vector<std::pair<double, std::string>>& xticks = {});
// Text safe inside HTML elements and attribute values.
std::string report_html_escape(const std::string& text);

// The scoring primitives, exposed for tests: pairs of (recommendation, usage) per window.
struct WindowSet {
  std::vector<float> rec, usage;
  std::vector<uint32_t> series;  // which series each window belongs to
  void add(double r, double u, uint32_t s = 0) {
    rec.push_back(static_cast<float>(r)), usage.push_back(static_cast<float>(u)), series.push_back(s);
  }
};
double slack_of(const WindowSet& w, double margin = 1);
double under_of(const WindowSet& w, double margin = 1);
// Smallest margin with under <= risk, and the score there; plus a sweep over `margins`.
ResourceScore score_windows(const WindowSet& w, double risk, const std::vector<double>& margins);
// Share of consecutive pairs changing by more than `threshold` (relative to the earlier).
double churn_of(const std::vector<std::vector<double>>& per_series_days, double threshold = 0.1);

}  // namespace sizeguard
