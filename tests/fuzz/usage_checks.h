// What every usage reader promises about its result, whatever the input (see ingest.h):
// every row accounted for, strictly increasing timestamps, finite non-negative values.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "recommender/usage.h"

namespace sizeguard::fuzz {

[[noreturn]] inline void usage_violation(const char* what, const UsageSeries* series = nullptr) {
  std::fprintf(stderr, "usage fuzz: invariant violated: %s%s%s\n", what, series ? " in " : "",
               series ? series->key.to_string().c_str() : "");
  std::abort();
}

inline bool valid_amount(double value) { return std::isfinite(value) && value >= 0; }
inline bool valid_amount(const std::optional<double>& value) { return !value || valid_amount(*value); }

inline void check_usage(const std::vector<UsageSeries>& out, const IngestReport& report) {
  if (report.rows_read != report.rows_used + report.rows_bad) usage_violation("rows_read == rows_used + rows_bad");
  if (report.errors.size() > IngestReport::kMaxErrors) usage_violation("errors are capped");
  if (out.empty()) usage_violation("a reader that returns has at least one series");
  size_t samples = 0;
  for (const UsageSeries& series : out) {
    if (series.samples.empty()) usage_violation("no empty series", &series);
    samples += series.samples.size();
    for (size_t i = 0; i < series.samples.size(); ++i) {
      const UsageSample& s = series.samples[i];
      if (s.timestamp < 0 || (i > 0 && s.timestamp <= series.samples[i - 1].timestamp)) {
        usage_violation("timestamps are non-negative and strictly increasing", &series);
      }
      if (!valid_amount(s.cpu_cores) || !valid_amount(s.memory_bytes)) {
        usage_violation("usage is finite and non-negative", &series);
      }
    }
    const ResourceSpec& spec = series.spec;
    if (!valid_amount(spec.cpu_request) || !valid_amount(spec.memory_request) || !valid_amount(spec.cpu_limit) ||
        !valid_amount(spec.memory_limit)) {
      usage_violation("requests and limits are finite and non-negative", &series);
    }
  }
  if (samples != report.rows_used) usage_violation("rows_used counts the samples returned");
}

}  // namespace sizeguard::fuzz
