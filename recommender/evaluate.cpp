#include "recommender/evaluate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "recommender/baselines.h"
#include "recommender/features.h"
#include "kube/utc_time.h"

namespace sizeguard {
namespace {

// "model" is what `recommend` ships (recommend_batch: margins, gate, floors, rounding); "raw"
// is the model's bare prediction, a diagnostic.
constexpr const char* kMethods[] = {"model", "vpa", "krr", "oracle", "raw", "blend"};
constexpr size_t kMethodCount = 6;
constexpr const char* kColors[] = {"#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#ff7f0e", "#9467bd"};

std::vector<double> sweep_margins() {
  std::vector<double> m;
  for (int i = 0; i <= 60; ++i) m.push_back(0.5 * std::pow(10.0, i / 60.0));  // 0.5 .. 5
  return m;
}

double ratio_of(float rec, float usage) {
  if (usage <= 0) return 0;
  if (rec <= 0) return std::numeric_limits<double>::infinity();
  return static_cast<double>(usage) / rec;
}

std::string fmt(double v, int precision = 3) {
  if (!std::isfinite(v)) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

std::string format_day(int64_t t) { return format_utc(t).substr(0, 10); }

std::string pct(double v) { return std::isfinite(v) ? fmt(100 * v, 1) + "%" : "n/a"; }

int64_t day_one(const std::vector<UsageSeries>& series) {
  int64_t first = std::numeric_limits<int64_t>::max();
  for (const auto& s : series)
    if (!s.samples.empty()) first = std::min(first, s.samples.front().timestamp);
  if (first == std::numeric_limits<int64_t>::max()) return 0;
  const int64_t m = utc_midnight(first);
  return m == first ? m : m + kSecondsPerDay;
}

int64_t data_end(const std::vector<UsageSeries>& series) {
  int64_t end = 0;
  for (const auto& s : series)
    if (!s.samples.empty()) end = std::max(end, s.samples.back().timestamp + 1);
  return end;
}

std::pair<int, int> parse_day_range(const std::string& text) {
  const auto bad = [&] {
    return std::invalid_argument("bad day range '" + text + "': expected FIRST-LAST with 1 <= FIRST <= LAST, e.g. 1-20");
  };
  const auto dash = text.find('-');
  size_t used = 0;
  int first = 0, last = 0;
  try {
    first = std::stoi(text.substr(0, dash), &used);
    if (used != text.substr(0, dash).size()) throw bad();
    if (dash == std::string::npos) {
      last = first;
    } else {
      const std::string rest = text.substr(dash + 1);
      last = std::stoi(rest, &used);
      if (used != rest.size()) throw bad();
    }
  } catch (const std::logic_error&) {
    throw bad();
  }
  if (first < 1 || last < first) throw bad();
  return {first, last};
}

double slack_of(const WindowSet& w, double margin) {
  double over = 0, total = 0;
  for (size_t i = 0; i < w.rec.size(); ++i) {
    const double r = margin * w.rec[i];
    over += std::max(0.0, r - w.usage[i]);
    total += r;
  }
  return total > 0 ? over / total : NAN;
}

double under_of(const WindowSet& w, double margin) {
  if (w.rec.empty()) return NAN;
  size_t n = 0;
  for (size_t i = 0; i < w.rec.size(); ++i) n += w.usage[i] > margin * w.rec[i];
  return static_cast<double>(n) / static_cast<double>(w.rec.size());
}

ResourceScore score_windows(const WindowSet& w, double risk, const std::vector<double>& margins) {
  ResourceScore s;
  const size_t n = w.rec.size();
  s.windows = n;
  s.slack = slack_of(w, 1);
  s.under = under_of(w, 1);
  if (n == 0) {
    s.matched_slack = s.matched_under = s.matched_margin = NAN;
    return s;
  }
  // Windows sorted by usage/rec; prefix sums of rec and usage give slack(m) for any m.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> ratio(n);
  for (size_t i = 0; i < n; ++i) ratio[i] = ratio_of(w.rec[i], w.usage[i]);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ratio[a] < ratio[b]; });
  std::vector<double> sorted(n), rec_prefix(n + 1, 0), use_prefix(n + 1, 0);
  for (size_t k = 0; k < n; ++k) {
    sorted[k] = ratio[order[k]];
    rec_prefix[k + 1] = rec_prefix[k] + w.rec[order[k]];
    use_prefix[k + 1] = use_prefix[k] + w.usage[order[k]];
  }
  auto at = [&](double m) {
    CurvePoint p;
    p.margin = m;
    const auto le = static_cast<size_t>(std::upper_bound(sorted.begin(), sorted.end(), m) - sorted.begin());
    p.under = static_cast<double>(n - le) / static_cast<double>(n);
    const double total = m * rec_prefix[n];
    p.slack = total > 0 ? (m * rec_prefix[le] - use_prefix[le]) / total : NAN;
    return p;
  };
  const auto allowed = static_cast<size_t>(std::floor(risk * static_cast<double>(n) + 1e-9));
  const double m = allowed >= n ? 0.0 : sorted[n - allowed - 1];
  s.matched_series_p90_under = NAN;
  if (std::isfinite(m) && m > 0) {
    const CurvePoint p = at(m);
    s.matched_margin = m, s.matched_slack = p.slack, s.matched_under = p.under;
    std::vector<std::pair<size_t, size_t>> per_series;  // (under, windows)
    for (size_t i = 0; i < n; ++i) {
      const uint32_t id = i < w.series.size() ? w.series[i] : 0;
      if (id >= per_series.size()) per_series.resize(id + 1, {0, 0});
      per_series[id].first += ratio[i] > m;
      ++per_series[id].second;
    }
    std::vector<double> shares;
    for (const auto& [under, windows] : per_series)
      if (windows > 0) shares.push_back(static_cast<double>(under) / static_cast<double>(windows));
    std::sort(shares.begin(), shares.end());
    s.matched_series_p90_under = quantile_sorted(shares, 0.9);
  } else {
    s.matched_margin = m;
    s.matched_slack = std::isfinite(m) ? 0.0 : NAN;
    s.matched_under = std::isfinite(m) ? at(m).under : NAN;
  }
  for (double mm : margins) s.curve.push_back(at(mm));
  return s;
}

double churn_of(const std::vector<std::vector<double>>& per_series_days, double threshold) {
  size_t pairs = 0, changed = 0;
  for (const auto& days : per_series_days)
    for (size_t d = 1; d < days.size(); ++d) {
      const double a = days[d - 1], b = days[d];
      if (!std::isfinite(a) || !std::isfinite(b) || a <= 0) continue;
      ++pairs;
      changed += std::abs(b - a) / a > threshold + 1e-9;  // exactly the threshold is no churn
    }
  return pairs ? static_cast<double>(changed) / static_cast<double>(pairs) : NAN;
}

Evaluation run_backtest(const std::vector<UsageSeries>& series, const QuantileModel& model, const EvaluateOptions& o) {
  Evaluation e;
  e.options = o;
  e.options.progress = nullptr;
  e.model_version = model.version();
  e.cpu_gate = model.metadata().cpu_gate;
  e.memory_gate = model.metadata().memory_gate;
  e.day1 = day_one(series);
  e.eval_begin = day_start(e.day1, o.first_day);
  e.eval_end = day_start(e.day1, o.last_day + 1);
  e.series = series.size();
  const size_t days = static_cast<size_t>(o.last_day - o.first_day + 1);
  const size_t ns = series.size();
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

  // recs[method][series][day] = {cpu, memory}; NaN when the method has none.
  using Day = std::pair<double, double>;
  std::vector<std::vector<std::vector<Day>>> recs(kMethodCount,
                                                  std::vector<std::vector<Day>>(ns, std::vector<Day>(days, {kNaN, kNaN})));
  std::vector<std::vector<bool>> scorable(ns, std::vector<bool>(days, false));
  std::vector<std::vector<bool>> has_history(ns, std::vector<bool>(days, false));

  // Phase 1, parallel over series: baselines, oracle and model features.
  const int threads = hardware_threads(o.threads);
  std::atomic<size_t> next{0}, done{0};
  auto work = [&] {
    for (size_t i; (i = next++) < ns;) {
      const auto& s = series[i];
      VpaEstimator vpa;
      size_t fed = 0;
      for (size_t d = 0; d < days; ++d) {
        const int64_t t = e.eval_begin + static_cast<int64_t>(d) * kSecondsPerDay;
        while (fed < s.samples.size() && s.samples[fed].timestamp < t) vpa.add(s.samples[fed++]);
        const Targets target = compute_targets(s, t, kSecondsPerDay, 0.95);
        if (target.samples == 0) continue;
        scorable[i][d] = true;
        recs[3][i][d] = {target.cpu, target.memory};
        if (fed == 0) continue;  // no history: no method but the oracle can recommend
        const auto v = vpa.recommend(t);
        recs[1][i][d] = {v.cpu_cores, v.memory_bytes};
        const auto k = krr_recommend(s, t);
        if (k.has_history) recs[2][i][d] = {k.cpu_cores, k.memory_bytes};
        has_history[i][d] = true;
      }
      if (o.progress) o.progress(++done, ns);
    }
  };
  {
    std::vector<std::thread> pool;
    for (int k = 0; k < threads; ++k) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  // Phase 2: what `recommend --at <day>` writes, through the same code (recommend_batch),
  // and the raw prediction behind it. Scored where the baselines had history too.
  RecommendationPolicy policy = o.policy ? *o.policy : shipped_policy(model.metadata());
  e.policy = policy;
  for (size_t d = 0; d < days; ++d) {
    const int64_t t = e.eval_begin + static_cast<int64_t>(d) * kSecondsPerDay;
    if (o.regate && !o.policy) {  // what `recommend --at t` does: gate again on the days before t
      ModelMetadata meta = model.metadata();
      const RecentGate g = gate_on_recent_days(model, meta, series, t, o.regate_days);
      policy = shipped_policy(meta);
      e.cpu_gate = meta.cpu_gate, e.memory_gate = meta.memory_gate;
      e.regated_days += g.regated;
      for (auto [gate, count] : {std::pair{&meta.cpu_gate, &e.cpu_gate_days}, std::pair{&meta.memory_gate, &e.memory_gate_days}})
        ++(gate->use_blend ? count->blend : gate->use_model ? count->model : count->baseline);
    }
    e.policy = policy;
    const auto shipped = recommend_batch(model, series, t, policy, 0, threads);
    for (size_t i = 0; i < ns; ++i) {
      if (!has_history[i][d]) continue;
      const Recommendation& r = shipped[i];
      recs[0][i][d] = {r.cpu_cores, r.memory_bytes};
      recs[4][i][d] = {r.raw.cpu_cores, r.raw.memory_bytes};
      Day& v = recs[1][i][d];
      if (!std::isnan(v.first))
        recs[5][i][d] = {blend_cpu_of(r, v.first), blend_memory(r.raw.memory_bytes, v.second)};
      if (o.candidates_as_shipped) {
        // Series the distribution guard sends to VPA get VPA from every candidate, as they ship.
        if (!std::isnan(v.first)) {
          if (!r.cpu_from_model) recs[4][i][d].first = recs[5][i][d].first = v.first;
          if (!r.memory_from_model) recs[4][i][d].second = recs[5][i][d].second = v.second;
        }
        if (const double floor = memory_request_floor(series[i], t, policy.memory_request_floor_days); floor > 0)
          for (Day* c : {&v, &recs[4][i][d], &recs[5][i][d]})
            if (!std::isnan(c->second)) c->second = std::max(c->second, floor);
      }
      ++e.shipped_days;
      e.cpu_from_model_days += r.cpu_from_model;
      e.memory_from_model_days += r.memory_from_model;
      e.out_of_distribution_days += r.out_of_distribution;
    }
  }

  // Phase 3: score every 5-minute window.
  std::vector<WindowSet> cpu(kMethodCount), mem(kMethodCount);
  for (size_t i = 0; i < ns; ++i) {
    const auto& s = series[i];
    for (const auto& x : s.samples) {
      if (x.timestamp < e.eval_begin || x.timestamp >= e.eval_end) continue;
      const auto d = static_cast<size_t>((x.timestamp - e.eval_begin) / kSecondsPerDay);
      for (size_t m = 0; m < kMethodCount; ++m) {
        const Day& r = recs[m][i][d];
        if (std::isnan(r.first)) continue;
        cpu[m].add(r.first, x.cpu_cores, static_cast<uint32_t>(i));
        if (s.has_memory) mem[m].add(r.second, x.memory_bytes, static_cast<uint32_t>(i));
      }
    }
  }
  for (size_t i = 0; i < ns; ++i) e.series_days += static_cast<size_t>(std::count(scorable[i].begin(), scorable[i].end(), true));
  const auto margins = sweep_margins();
  for (size_t m = 0; m < kMethodCount; ++m) {
    MethodScore score;
    score.name = kMethods[m];
    score.uses_future = m == 3;
    score.diagnostic = m >= 4;
    std::vector<std::vector<double>> cpu_days(ns), mem_days(ns);
    for (size_t i = 0; i < ns; ++i)
      for (size_t d = 0; d < days; ++d) {
        const Day& r = recs[m][i][d];
        cpu_days[i].push_back(r.first), mem_days[i].push_back(r.second);
        if (!std::isnan(r.first)) {
          ++score.days_recommended;
          e.recs.push_back({score.name, series[i].key.to_string(), e.eval_begin + static_cast<int64_t>(d) * kSecondsPerDay,
                            r.first, r.second});
        }
      }
    score.coverage = e.series_days ? static_cast<double>(score.days_recommended) / static_cast<double>(e.series_days) : NAN;
    score.cpu = score_windows(cpu[m], o.cpu_risk, margins);
    score.memory = score_windows(mem[m], o.memory_risk, margins);
    score.cpu.churn = churn_of(cpu_days);
    score.memory.churn = churn_of(mem_days);
    e.methods.push_back(std::move(score));
  }
  auto gap = [](double vpa, double ours, double oracle) {
    return std::abs(vpa - oracle) > 1e-12 ? (vpa - ours) / (vpa - oracle) : NAN;
  };
  e.gap_closed_cpu = gap(e.methods[1].cpu.matched_slack, e.methods[0].cpu.matched_slack, e.methods[3].cpu.matched_slack);
  e.gap_closed_memory =
      gap(e.methods[1].memory.matched_slack, e.methods[0].memory.matched_slack, e.methods[3].memory.matched_slack);

  // Charts: the series at the median, p90 and p99 of mean CPU over the evaluation days.
  std::vector<std::pair<double, size_t>> by_cpu;
  for (size_t i = 0; i < ns; ++i) {
    double sum = 0;
    size_t n = 0;
    for (const auto& x : series[i].samples)
      if (x.timestamp >= e.eval_begin && x.timestamp < e.eval_end) sum += x.cpu_cores, ++n;
    if (n > 0 && sum > 0) by_cpu.emplace_back(sum / static_cast<double>(n), i);
  }
  std::sort(by_cpu.begin(), by_cpu.end());
  std::vector<size_t> picked;
  for (double q : {0.5, 0.9, 0.99}) {
    if (picked.size() >= o.chart_series || by_cpu.empty()) break;
    const size_t i = by_cpu[static_cast<size_t>(q * static_cast<double>(by_cpu.size() - 1))].second;
    if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
  }
  for (size_t i : picked) {
    ChartSeries c;
    c.name = series[i].key.to_string();
    const size_t hours = days * 24;
    c.cpu_max.assign(hours, kNaN), c.memory_max.assign(hours, kNaN);
    for (size_t h = 0; h < hours; ++h) c.hours.push_back(e.eval_begin + static_cast<int64_t>(h) * kSecondsPerHour);
    for (const auto& x : series[i].samples) {
      if (x.timestamp < e.eval_begin || x.timestamp >= e.eval_end) continue;
      const auto h = static_cast<size_t>((x.timestamp - e.eval_begin) / kSecondsPerHour);
      c.cpu_max[h] = std::isnan(c.cpu_max[h]) ? x.cpu_cores : std::max(c.cpu_max[h], x.cpu_cores);
      c.memory_max[h] = std::isnan(c.memory_max[h]) ? x.memory_bytes : std::max(c.memory_max[h], x.memory_bytes);
    }
    e.charts.push_back(std::move(c));
  }
  return e;
}

Evaluation decide_gate(const QuantileModel& model, ModelMetadata& meta, const std::vector<UsageSeries>& series,
                       int first_day, int last_day, double cpu_risk, double memory_risk) {
  EvaluateOptions o;
  o.first_day = first_day, o.last_day = last_day;
  o.cpu_risk = cpu_risk, o.memory_risk = memory_risk;
  o.chart_series = 0;
  o.policy = RecommendationPolicy{};  // the gate and margins are what this decides
  o.candidates_as_shipped = true;
  Evaluation e = run_backtest(series, model, o);
  const MethodScore& raw = e.methods[4];
  const MethodScore& vpa = e.methods[1];
  const MethodScore& blend = e.methods[5];
  auto margin = [](double m, double fallback) { return std::isfinite(m) && m > 0 ? m : fallback; };
  meta.calibrated_cpu_margin = margin(raw.cpu.matched_margin, 1.1);
  meta.calibrated_memory_margin = margin(raw.memory.matched_margin, 1.1);
  // blend_only: a resource whose raw prediction spends a risk budget (spend_risk_budget) is a
  // candidate only blended with VPA: alone it is a shape, not a level (the memory budget's centre
  // is set for the blend), so the blend need not beat it, only the baseline. (It once had to:
  // Google's own model then shipped the blend on days it under-provisioned memory in 2.2% of
  // windows; those were restarted tasks, now held at their request by memory_request_floor.)
  auto decide = [&](const ResourceScore& ours, const ResourceScore& base, const ResourceScore& mix, bool blend_only,
                    bool may_ship_at_one) {
    ModelMetadata::Gate g;
    g.decided = true;
    g.model_slack = std::isfinite(ours.matched_slack) ? ours.matched_slack : 0;
    g.baseline_slack = std::isfinite(base.matched_slack) ? base.matched_slack : 0;
    // Like the baseline, a candidate built on VPA is never cut below it (a July memory blend margin
    // of 0.79 left 92% of the Google trace's memory windows above the recommendation). A CPU blend
    // that met the target risk with room to spare (the pooled forecast is a 5% level already) ships
    // at margin 1 and is judged by its slack there; a memory blend then is no candidate, as before.
    const bool blend_at_one = std::isfinite(mix.matched_margin) && mix.matched_margin < 1;
    const double mix_slack = blend_at_one && may_ship_at_one ? mix.slack : mix.matched_slack;
    g.blend_slack = std::isfinite(mix_slack) ? mix_slack : 0;
    const double mix_margin = margin(mix.matched_margin, 1);
    g.blend_margin = may_ship_at_one ? std::max(1.0, mix_margin) : mix_margin;
    // The fallback is VPA as Kubernetes ships it, or more where that under-provisioned on these
    // days: never cut below VPA's own target (a margin < 1 tuned on one fleet under-provisions
    // another: 0.71 on July memory left 98% of Alibaba's memory windows above).
    g.baseline_margin = std::max(1.0, margin(base.matched_margin, 1));
    // Without windows to judge (e.g. CPU-only data for memory) the model stays.
    const bool judged = std::isfinite(ours.matched_slack) && std::isfinite(base.matched_slack);
    g.use_model = !judged || (!blend_only && ours.matched_slack < base.matched_slack);
    // The blend wins only by beating both (blend_only: the baseline).
    g.use_blend = (!blend_at_one || may_ship_at_one) && std::isfinite(mix_slack) && std::isfinite(base.matched_slack) && std::isfinite(ours.matched_slack) &&
                  mix_slack < base.matched_slack && (blend_only || mix_slack < ours.matched_slack);
    g.use_model = g.use_model || g.use_blend;
    return g;
  };
  meta.cpu_gate = decide(raw.cpu, vpa.cpu, blend.cpu, model.metadata().budget_cpu_risk > 0, true);
  meta.memory_gate = decide(raw.memory, vpa.memory, blend.memory, model.metadata().budget_memory_risk > 0, false);
  meta.gate_first_day = first_day, meta.gate_last_day = last_day;
  e.cpu_gate = meta.cpu_gate;
  e.memory_gate = meta.memory_gate;
  return e;
}

Evaluation calibrate_and_gate(QuantileModel& model, const std::vector<UsageSeries>& series, int first_day, int last_day,
                              double cpu_risk, double memory_risk) {
  ModelMetadata meta = model.metadata();
  Evaluation e = decide_gate(model, meta, series, first_day, last_day, cpu_risk, memory_risk);
  model.set_calibration(meta.calibrated_cpu_margin, meta.calibrated_memory_margin);
  model.set_gate(meta.cpu_gate, meta.memory_gate, first_day, last_day);
  return e;
}

const char* gate_name(const ModelMetadata::Gate& g) { return g.use_blend ? "blend" : g.use_model ? "model" : "baseline"; }

RecentGate gate_on_recent_days(const QuantileModel& model, ModelMetadata& meta, const std::vector<UsageSeries>& series,
                               int64_t before, int max_days, int min_days) {
  RecentGate r;
  const int64_t day1 = day_one(series);
  int64_t end = data_end(series);
  if (before > 0) end = std::min(end, before);
  const ModelMetadata& own = model.metadata();
  auto trained_on = [&](int day) {  // the day overlaps the model's training period
    const int64_t begin = day_start(day1, day);
    return own.train_end > own.train_begin && begin < own.train_end && begin + kSecondsPerDay > own.train_begin;
  };
  int last = end > day1 ? static_cast<int>((end - day1) / kSecondsPerDay) : 0;
  while (last >= 2 && trained_on(last)) --last;
  int first = last;
  while (first - 1 >= 2 && last - first + 1 < max_days && !trained_on(first - 1)) --first;
  const int n = last >= 2 ? last - first + 1 : 0;
  if (n < std::max(1, min_days)) {
    r.note = std::to_string(n) + " whole day(s) here it did not train on (< " + std::to_string(min_days) +
             "): its own gate applies";
    return r;
  }
  decide_gate(model, meta, series, first, last);
  r.regated = true, r.first_day = first, r.last_day = last;
  r.note = "gated on days " + std::to_string(first) + "-" + std::to_string(last) + " here: cpu " +
           gate_name(meta.cpu_gate) + ", memory " + gate_name(meta.memory_gate);
  return r;
}

void write_table(std::ostream& out, const Evaluation& e) {
  out << "backtest: " << e.series << " series, days " << e.options.first_day << "-" << e.options.last_day << " ("
      << e.series_days << " series-days), model " << e.model_version << "\n";
  out << std::left << std::setw(8) << "method" << std::right << std::setw(9) << "coverage" << std::setw(11)
      << "cpu slack" << std::setw(11) << "cpu under" << std::setw(11) << "cpu churn" << std::setw(11) << "mem slack"
      << std::setw(11) << "mem under" << std::setw(11) << "mem churn" << "   | matched risk: cpu@" << pct(e.options.cpu_risk)
      << " margin slack p90ser, mem@" << pct(e.options.memory_risk) << " margin slack p90ser\n";
  for (const auto& m : e.methods) {
    out << std::left << std::setw(8) << (m.uses_future ? m.name + "*" : m.name) << std::right << std::setw(9)
        << pct(m.coverage) << std::setw(11) << pct(m.cpu.slack) << std::setw(11) << pct(m.cpu.under) << std::setw(11)
        << pct(m.cpu.churn) << std::setw(11) << pct(m.memory.slack) << std::setw(11) << pct(m.memory.under)
        << std::setw(11) << pct(m.memory.churn) << "   | " << std::setw(6) << fmt(m.cpu.matched_margin, 2) << " "
        << std::setw(6) << pct(m.cpu.matched_slack) << " " << std::setw(6) << pct(m.cpu.matched_series_p90_under) << "   "
        << std::setw(6) << fmt(m.memory.matched_margin, 2) << " " << std::setw(6) << pct(m.memory.matched_slack) << " "
        << std::setw(6) << pct(m.memory.matched_series_p90_under) << "\n";
  }
  out << "gap closed vs VPA at matched risk (VPA - model) / (VPA - oracle): cpu " << pct(e.gap_closed_cpu) << ", memory "
      << pct(e.gap_closed_memory) << "\n* oracle uses the future (the day's actual p95 CPU and peak memory)\n";
  out << "model = what recommend writes (margins cpu " << fmt(e.policy.margin, 2) << ", memory "
      << fmt(e.policy.memory_margin > 0 ? e.policy.memory_margin : e.policy.margin, 2)
      << "; floors and rounding); raw = the bare prediction (diagnostic); under at margin 1 = at the shipped margins\n";
  auto gate = [&](const char* name, const ModelMetadata::Gate& g, bool from_model) {
    out << "gate " << name << ": ";
    if (!g.decided) out << "none in this model (model used)";
    else
      out << gate_name(g)
          << " (training backtest slack at matched risk: model " << pct(g.model_slack) << ", vpa " << pct(g.baseline_slack)
          << ", blend " << pct(g.blend_slack) << ")";
    out << (from_model ? "" : " [forced to baseline]") << "\n";
  };
  gate("cpu", e.cpu_gate, e.policy.cpu_from_model);
  gate("memory", e.memory_gate, e.policy.memory_from_model);
  const auto share = [&](size_t n) {
    return e.shipped_days ? pct(static_cast<double>(n) / static_cast<double>(e.shipped_days)) : std::string("n/a");
  };
  if (e.options.regate && !e.options.policy) {
    const auto days = [](const Evaluation::GateDays& g) {
      return "model " + std::to_string(g.model) + ", blend " + std::to_string(g.blend) + ", baseline " +
             std::to_string(g.baseline);
    };
    out << "regated before each day on its recent days (as recommend does): " << e.regated_days << " of "
        << (e.options.last_day - e.options.first_day + 1) << " days (the rest: the model's own gate); days per choice: cpu "
        << days(e.cpu_gate_days) << "; memory " << days(e.memory_gate_days) << " (the gates above: the last day's)\n";
  }
  out << "model series-days from the model: cpu " << share(e.cpu_from_model_days) << ", memory "
      << share(e.memory_from_model_days) << " (baseline for the rest); out of training distribution "
      << share(e.out_of_distribution_days) << "\n";
}

std::string evaluation_json(const Evaluation& e) {
  using nlohmann::json;
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  auto resource = [&](const ResourceScore& r) {
    json curve = json::array();
    for (const auto& p : r.curve) curve.push_back({{"margin", num(p.margin)}, {"slack", num(p.slack)}, {"under", num(p.under)}});
    return json{{"slack", num(r.slack)},         {"under", num(r.under)},
                {"churn", num(r.churn)},         {"windows", r.windows},
                {"matched", {{"margin", num(r.matched_margin)}, {"slack", num(r.matched_slack)}, {"under", num(r.matched_under)},
                             {"seriesP90Under", num(r.matched_series_p90_under)}}},
                {"curve", curve}};
  };
  json methods = json::array();
  for (const auto& m : e.methods)
    methods.push_back({{"name", m.name}, {"usesFuture", m.uses_future}, {"diagnostic", m.diagnostic}, {"coverage", num(m.coverage)},
                       {"daysRecommended", m.days_recommended}, {"cpu", resource(m.cpu)}, {"memory", resource(m.memory)}});
  json j = {{"modelVersion", e.model_version},
            {"series", e.series},
            {"seriesDays", e.series_days},
            {"days", {{"first", e.options.first_day}, {"last", e.options.last_day}}},
            {"day1", e.day1},
            {"evalBegin", e.eval_begin},
            {"evalEnd", e.eval_end},
            {"risk", {{"cpu", e.options.cpu_risk}, {"memory", e.options.memory_risk}}},
            {"methods", methods},
            {"gapClosed", {{"cpu", num(e.gap_closed_cpu)}, {"memory", num(e.gap_closed_memory)}}},
            {"shipped",
             {{"cpuMargin", e.policy.margin},
              {"memoryMargin", e.policy.memory_margin > 0 ? e.policy.memory_margin : e.policy.margin},
              {"cpuFromModel", e.policy.cpu_from_model},
              {"memoryFromModel", e.policy.memory_from_model},
              {"cpuBlend", e.policy.cpu_from_model && e.policy.cpu_blend},
              {"memoryBlend", e.policy.memory_from_model && e.policy.memory_blend},
              {"seriesDays", e.shipped_days},
              {"cpuFromModelDays", e.cpu_from_model_days},
              {"memoryFromModelDays", e.memory_from_model_days},
              {"outOfDistributionDays", e.out_of_distribution_days},
              {"regate", e.options.regate && !e.options.policy},
              {"regatedDays", e.regated_days},
              {"gateDays",
               {{"cpu", {{"model", e.cpu_gate_days.model}, {"blend", e.cpu_gate_days.blend}, {"baseline", e.cpu_gate_days.baseline}}},
                {"memory",
                 {{"model", e.memory_gate_days.model},
                  {"blend", e.memory_gate_days.blend},
                  {"baseline", e.memory_gate_days.baseline}}}}}}}};
  return j.dump(2) + "\n";
}

void write_recs_csv(std::ostream& out, const Evaluation& e) {
  out << "method,series,day_start_epoch,cpu_cores,memory_bytes\n";
  out << std::setprecision(17);  // max_digits10: the values read back exactly
  for (const auto& r : e.recs) {
    const bool quote = r.series.find_first_of(",\"") != std::string::npos;
    std::string name = r.series;
    if (quote) {
      std::string q = "\"";
      for (char c : name) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      name = q + "\"";
    }
    out << r.method << "," << name << "," << r.day_start << "," << r.cpu_cores << "," << r.memory_bytes << "\n";
  }
}

namespace {

struct Line {
  std::string name, color;
  std::vector<double> x, y;
  bool dashed = false;
  double width = 1.5;
};

// A self-contained SVG line chart with linear axes; NaN points break a line.
std::string svg_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                      const std::vector<Line>& lines, double x0, double x1, double y0, double y1,
                      const std::vector<std::pair<double, std::string>>& xticks = {}, double vline = NAN) {
  const double W = 640, H = 300, L = 60, R = 150, T = 28, B = 40;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  std::ostringstream s;
  s << std::fixed << std::setprecision(1);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " "
    << H << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s << "<text x=\"" << L << "\" y=\"16\" font-size=\"13\" font-weight=\"bold\">" << html_escape(title) << "</text>\n";
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"#999\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double y = y0 + (y1 - y0) * k / 4;
    s << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << sy(y) << "\" y2=\"" << sy(y)
      << "\" stroke=\"#eee\"/><text x=\"" << L - 4 << "\" y=\"" << sy(y) + 4 << "\" text-anchor=\"end\">"
      << fmt(y, y1 - y0 < 0.5 ? 3 : (y1 - y0 < 5 ? 2 : 1)) << "</text>\n";
  }
  std::vector<std::pair<double, std::string>> ticks = xticks;
  if (ticks.empty())
    for (int k = 0; k <= 5; ++k) ticks.emplace_back(x0 + (x1 - x0) * k / 5, fmt(x0 + (x1 - x0) * k / 5, 1));
  for (const auto& [x, label] : ticks)
    s << "<text x=\"" << sx(x) << "\" y=\"" << H - B + 14 << "\" text-anchor=\"middle\">" << html_escape(label) << "</text>\n";
  s << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">" << html_escape(xlabel)
    << "</text>\n<text transform=\"translate(14," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << html_escape(ylabel) << "</text>\n";
  if (std::isfinite(vline))
    s << "<line x1=\"" << sx(vline) << "\" x2=\"" << sx(vline) << "\" y1=\"" << T << "\" y2=\"" << H - B
      << "\" stroke=\"#444\" stroke-dasharray=\"4 3\"/>\n";
  int legend = 0;
  for (const auto& line : lines) {
    std::string points;
    auto flush = [&] {
      if (!points.empty())
        s << "<polyline fill=\"none\" stroke=\"" << line.color << "\" stroke-width=\"" << line.width << "\""
          << (line.dashed ? " stroke-dasharray=\"5 3\"" : "") << " points=\"" << points << "\"/>\n";
      points.clear();
    };
    for (size_t i = 0; i < line.x.size(); ++i) {
      if (!std::isfinite(line.x[i]) || !std::isfinite(line.y[i])) {
        flush();
        continue;
      }
      const double x = std::clamp(line.x[i], x0, x1), y = std::clamp(line.y[i], y0, y1);
      std::ostringstream p;
      p << std::fixed << std::setprecision(1) << sx(x) << "," << sy(y) << " ";
      points += p.str();
    }
    flush();
    const double ly = T + 8 + 16 * legend++;
    s << "<line x1=\"" << W - R + 10 << "\" x2=\"" << W - R + 30 << "\" y1=\"" << ly << "\" y2=\"" << ly << "\" stroke=\""
      << line.color << "\" stroke-width=\"2\"" << (line.dashed ? " stroke-dasharray=\"5 3\"" : "") << "/><text x=\""
      << W - R + 34 << "\" y=\"" << ly + 4 << "\">" << html_escape(line.name) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace

std::string evaluation_html(const Evaluation& e) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sizeguard backtest</title>\n"
       "<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f4f4f4}td:first-child{text-align:left}</style></head><body>\n";
  h << "<h1>sizeguard backtest</h1>\n<p>" << e.series << " series, evaluation days " << e.options.first_day << "&ndash;"
    << e.options.last_day << " (" << e.series_days << " series-days, " << html_escape(format_day(e.eval_begin)) << " to "
    << html_escape(format_day(e.eval_end)) << " UTC), model <code>" << html_escape(e.model_version)
    << "</code>. Each method recommends at every UTC midnight from history only and is scored on the next 24 h of "
       "5-minute samples. <b>oracle uses the future</b> (the day's actual p95 CPU and peak memory).</p>\n";
  h << "<h2>Results</h2>\n<table><tr><th>method</th><th>coverage</th><th>CPU slack</th><th>CPU under</th><th>CPU churn</th>"
       "<th>mem slack</th><th>mem under</th><th>mem churn</th><th>CPU margin @"
    << pct(e.options.cpu_risk) << "</th><th>CPU slack @" << pct(e.options.cpu_risk)
    << "</th><th>CPU series p90 under</th><th>mem margin @" << pct(e.options.memory_risk) << "</th><th>mem slack @"
    << pct(e.options.memory_risk) << "</th><th>mem series p90 under</th></tr>\n";
  for (const auto& m : e.methods)
    h << "<tr><td>" << m.name << (m.uses_future ? " (future)" : "") << "</td><td>" << pct(m.coverage) << "</td><td>"
      << pct(m.cpu.slack) << "</td><td>" << pct(m.cpu.under) << "</td><td>" << pct(m.cpu.churn) << "</td><td>"
      << pct(m.memory.slack) << "</td><td>" << pct(m.memory.under) << "</td><td>" << pct(m.memory.churn) << "</td><td>"
      << fmt(m.cpu.matched_margin, 2) << "</td><td>" << pct(m.cpu.matched_slack) << "</td><td>"
      << pct(m.cpu.matched_series_p90_under) << "</td><td>" << fmt(m.memory.matched_margin, 2) << "</td><td>"
      << pct(m.memory.matched_slack) << "</td><td>" << pct(m.memory.matched_series_p90_under) << "</td></tr>\n";
  h << "</table>\n<p>Gap closed vs VPA at matched risk, (VPA &minus; model) / (VPA &minus; oracle): CPU <b>"
    << pct(e.gap_closed_cpu) << "</b>, memory <b>" << pct(e.gap_closed_memory) << "</b>.</p>\n";

  h << "<h2>Slack vs under-provisioning</h2>\n<p>Every method's recommendations multiplied by a margin from 0.5 to 5; "
       "the dashed line is the matched risk.</p>\n";
  for (int r = 0; r < 2; ++r) {
    std::vector<Line> lines;
    double xmax = 0;
    for (size_t m = 0; m < e.methods.size(); ++m) {
      const ResourceScore& s = r == 0 ? e.methods[m].cpu : e.methods[m].memory;
      Line line{e.methods[m].name, kColors[m % kMethodCount], {}, {}, e.methods[m].uses_future};
      for (const auto& p : s.curve)
        if (p.under <= 0.3) line.x.push_back(100 * p.under), line.y.push_back(100 * p.slack), xmax = std::max(xmax, 100 * p.under);
      lines.push_back(std::move(line));
    }
    const double risk = 100 * (r == 0 ? e.options.cpu_risk : e.options.memory_risk);
    h << svg_chart(r == 0 ? "CPU: slack vs under-provisioning" : "Memory: slack vs under-provisioning",
                   "under-provisioned 5-min windows (%)", "slack (%)", lines, 0, std::max(2 * risk, std::min(xmax, 30.0)), 0, 100,
                   {}, risk);
  }
  h << "<h2>Usage and recommendations</h2>\n<p>Hourly maximum usage and each method's daily recommendation, "
       "multiplied by its matched-risk margin.</p>\n";
  for (const auto& c : e.charts) {
    for (int r = 0; r < 2; ++r) {
      const double scale = r == 0 ? 1.0 : 1.0 / 1073741824;
      std::vector<Line> lines;
      Line usage{"usage (hourly max)", "#bbbbbb", {}, {}, false, 1.0};
      double ymax = 0;
      for (size_t i = 0; i < c.hours.size(); ++i) {
        usage.x.push_back(static_cast<double>(c.hours[i] - e.eval_begin) / kSecondsPerDay);
        const double v = (r == 0 ? c.cpu_max[i] : c.memory_max[i]) * scale;
        usage.y.push_back(v);
        if (std::isfinite(v)) ymax = std::max(ymax, v);
      }
      lines.push_back(std::move(usage));
      for (size_t m = 0; m < e.methods.size(); ++m) {
        const double margin = r == 0 ? e.methods[m].cpu.matched_margin : e.methods[m].memory.matched_margin;
        Line line{e.methods[m].name, kColors[m % kMethodCount], {}, {}, e.methods[m].uses_future};
        for (const auto& rec : e.recs) {
          if (rec.method != e.methods[m].name || rec.series != c.name) continue;
          const double x = static_cast<double>(rec.day_start - e.eval_begin) / kSecondsPerDay;
          const double v = (r == 0 ? rec.cpu_cores : rec.memory_bytes) * scale * (std::isfinite(margin) ? margin : 1);
          line.x.insert(line.x.end(), {x, x + 1, NAN});
          line.y.insert(line.y.end(), {v, v, NAN});
          ymax = std::max(ymax, v);
        }
        lines.push_back(std::move(line));
      }
      std::vector<std::pair<double, std::string>> ticks;
      const int ndays = e.options.last_day - e.options.first_day + 1;
      for (int d = 0; d <= ndays; d += std::max(1, ndays / 10)) ticks.emplace_back(d, "day " + std::to_string(e.options.first_day + d));
      h << svg_chart(c.name + (r == 0 ? " CPU" : " memory"), "", r == 0 ? "cores" : "GiB", lines, 0, ndays, 0,
                     ymax > 0 ? ymax * 1.05 : 1, ticks);
    }
  }
  h << "</body></html>\n";
  return h.str();
}

std::string svg_line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<ChartLine>& lines, double x0, double x1, double y0, double y1,
                           const std::vector<std::pair<double, std::string>>& xticks) {
  std::vector<Line> converted;
  for (const auto& l : lines) converted.push_back({l.name, l.color, l.x, l.y, l.dashed, l.width});
  return svg_chart(title, xlabel, ylabel, converted, x0, x1, y0, y1, xticks);
}

std::string report_html_escape(const std::string& text) { return html_escape(text); }

}  // namespace sizeguard
