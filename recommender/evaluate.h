// Rolling-origin backtest. At each UTC midnight t of the evaluation days every method
// recommends from the samples before t only, and is scored on the 5-minute samples of
// [t, t + 24h):
//   model   the trained quantile model (raw prediction, no margin)
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
#include <string>
#include <vector>

#include "recommender/model.h"
#include "recommender/usage.h"

namespace sizeguard {

// Start (epoch) of day 1: the first UTC midnight at or after the earliest sample (0 if none).
int64_t day_one(const std::vector<UsageSeries>& series);
// "21-30" or "7" -> {21, 30} / {7, 7}; throws std::invalid_argument with a clear message.
std::pair<int, int> parse_day_range(const std::string& text);

struct EvaluateOptions {
  int first_day = 21, last_day = 30;
  double cpu_risk = 0.05, memory_risk = 0.01;
  size_t chart_series = 3;
  int threads = 0;  // 0: hardware
  std::function<void(size_t done, size_t total)> progress;
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
  std::vector<MethodScore> methods;  // model, vpa, krr, oracle
  double gap_closed_cpu = 0, gap_closed_memory = 0;
  std::vector<RecRow> recs;          // every method's raw daily recommendation
  std::vector<ChartSeries> charts;
};

Evaluation run_backtest(const std::vector<UsageSeries>& series, const QuantileModel& model, const EvaluateOptions& options);

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
