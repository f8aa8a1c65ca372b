#include "kube/metrics.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace sizeguard {
namespace {

// Default buckets when a histogram is observed before being described: sub-millisecond
// to a second, which is the range admission latencies live in.
const std::vector<double> kFallbackBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                              0.01,   0.025,   0.05,   0.1,   0.25,   0.5, 1};

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  // Shortest round-trip form in %g style (0.0001, 1e-05, 2.5e+06), like Prometheus' Go clients.
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::general);
  if (ec != std::errc()) return "NaN";
  return std::string(buffer, end);
}

void append_escaped(std::string& out, std::string_view text, bool escape_quotes) {
  for (char c : text) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '"':
        if (escape_quotes) {
          out += "\\\"";
          break;
        }
        [[fallthrough]];
      default: out += c;
    }
  }
}

// Renders `{a="1",b="2"}` (or nothing), with an optional extra label (histogram `le`).
void append_labels(std::string& out, const MetricLabels& labels, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  auto add = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped(out, value, true);
    out += '"';
  };
  for (const auto& [name, value] : labels) add(name, value);
  if (!extra_name.empty()) add(extra_name, extra_value);
  out += '}';
}

std::string_view type_name(MetricType type) {
  switch (type) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Histogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

void Metrics::describe(const std::string& name, MetricType type, const std::string& help,
                       std::vector<double> buckets) {
  for (size_t i = 1; i < buckets.size(); ++i) {
    if (!(buckets[i - 1] < buckets[i])) {
      throw std::invalid_argument("metric " + name + ": histogram buckets must be strictly ascending");
    }
  }
  if (type == MetricType::Histogram && buckets.empty()) buckets = kFallbackBuckets;
  // +Inf is implicit in the exposition format; keep only finite bounds.
  if (!buckets.empty() && std::isinf(buckets.back())) buckets.pop_back();
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.type = type;
  family.help = help;
  if (family.buckets != buckets) {
    family.buckets = std::move(buckets);
    family.series.clear();  // bucket layout changed: old counts would be meaningless
  }
}

void Metrics::increment(std::string_view name, const MetricLabels& labels, double delta) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) it = families_.emplace(std::string(name), Family{}).first;
  it->second.series[labels].value += delta;
}

void Metrics::set(std::string_view name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family gauge;
    gauge.type = MetricType::Gauge;
    it = families_.emplace(std::string(name), std::move(gauge)).first;
  }
  it->second.series[labels].value = value;
}

void Metrics::observe(std::string_view name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family histogram;
    histogram.type = MetricType::Histogram;
    histogram.buckets = kFallbackBuckets;
    it = families_.emplace(std::string(name), std::move(histogram)).first;
  }
  Family& family = it->second;
  Series& series = family.series[labels];
  if (family.type != MetricType::Histogram) {
    series.value = value;  // a misdeclared family still records something sensible
    return;
  }
  if (series.bucket_counts.size() != family.buckets.size()) {
    series.bucket_counts.assign(family.buckets.size(), 0);
  }
  for (size_t i = 0; i < family.buckets.size(); ++i) {
    if (value <= family.buckets[i]) {
      ++series.bucket_counts[i];
      break;
    }
  }
  series.sum += value;
  ++series.count;
}

void Metrics::clear(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it != families_.end()) it->second.series.clear();
}

std::string Metrics::render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  out.reserve(families_.size() * 256);
  for (const auto& [name, family] : families_) {
    if (!family.help.empty()) {
      out += "# HELP ";
      out += name;
      out += ' ';
      append_escaped(out, family.help, false);
      out += '\n';
    }
    out += "# TYPE ";
    out += name;
    out += ' ';
    out += type_name(family.type);
    out += '\n';
    for (const auto& [labels, series] : family.series) {
      if (family.type != MetricType::Histogram) {
        out += name;
        append_labels(out, labels);
        out += ' ';
        out += format_value(series.value);
        out += '\n';
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i < family.buckets.size(); ++i) {
        if (i < series.bucket_counts.size()) cumulative += series.bucket_counts[i];
        out += name;
        out += "_bucket";
        append_labels(out, labels, "le", format_value(family.buckets[i]));
        out += ' ';
        out += std::to_string(cumulative);
        out += '\n';
      }
      out += name;
      out += "_bucket";
      append_labels(out, labels, "le", "+Inf");
      out += ' ';
      out += std::to_string(series.count);
      out += '\n';
      out += name;
      out += "_sum";
      append_labels(out, labels);
      out += ' ';
      out += format_value(series.sum);
      out += '\n';
      out += name;
      out += "_count";
      append_labels(out, labels);
      out += ' ';
      out += std::to_string(series.count);
      out += '\n';
    }
  }
  return out;
}

}  // namespace sizeguard
