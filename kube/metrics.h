// Prometheus metrics: counters, gauges and histograms with labels, rendered in the
// text exposition format. One Metrics instance is created by the process and passed by
// reference to whoever records (no global registry).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sizeguard {

enum class MetricType { Counter, Gauge, Histogram };

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Metrics {
 public:
  // Declares a metric family once (help text, type, histogram buckets in ascending order).
  void describe(const std::string& name, MetricType type, const std::string& help,
                std::vector<double> buckets = {});
  void increment(std::string_view name, const MetricLabels& labels = {}, double delta = 1);
  void set(std::string_view name, const MetricLabels& labels, double value);
  void observe(std::string_view name, const MetricLabels& labels, double value);
  // Drops every series of a gauge family (for gauges recomputed as a whole, e.g. per namespace).
  void clear(std::string_view name);
  // Text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Series {
    double value = 0;                  // counter / gauge
    std::vector<uint64_t> bucket_counts;  // histogram, one per bucket (non-cumulative)
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    MetricType type = MetricType::Counter;
    std::string help;
    std::vector<double> buckets;
    std::map<MetricLabels, Series> series;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
};

}  // namespace sizeguard
