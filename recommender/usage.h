// Usage history: the common shape every source (CSV, Bitbrains traces, Prometheus)
// produces and every consumer (features, training, baselines, backtest) reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sizeguard {

// namespace/kind/name/container; the key recommendations are published under.
struct WorkloadKey {
  std::string namespace_;
  std::string kind;
  std::string name;
  std::string container;
  std::string to_string() const;  // "ns/kind/name/container"
  auto operator<=>(const WorkloadKey&) const = default;
};

struct UsageSample {
  int64_t timestamp = 0;     // epoch seconds, UTC
  double cpu_cores = 0;      // average cores over the sample interval
  double memory_bytes = 0;   // working set
};

// Requests/limits in cores and bytes.
struct ResourceSpec {
  std::optional<double> cpu_request, memory_request, cpu_limit, memory_limit;
  bool operator==(const ResourceSpec&) const = default;
};

// The spec from `since` on (until the next change): readers that see the spec on every row
// record each change, so a backtest origin uses the request in force then, not a later one.
struct SpecChange {
  int64_t since = 0;
  ResourceSpec spec;
};

struct UsageSeries {
  WorkloadKey key;
  std::vector<UsageSample> samples;  // strictly increasing timestamps
  ResourceSpec spec;                    // the latest known (in force after the last sample)
  std::vector<SpecChange> spec_history;  // ascending `since`; empty: `spec` is all we know
  bool has_memory = true;               // false: a CPU-only source (memory_bytes are 0, not usage)
  bool oom_killed = false;  // a container of the workload was OOM-killed recently (Prometheus only)
};

// The spec in force at origin t: the latest change with since < t (nothing known before the
// first one: an empty spec, never a later value); `series.spec` when there is no history.
ResourceSpec spec_at(const UsageSeries& series, int64_t t);

// Index of the first sample at or after t (samples.size() when none): samples before it are the
// history an origin t may read.
size_t first_sample_at_or_after(const std::vector<UsageSample>& samples, int64_t t);

// Another fleet's training days laid under this data's (train --also): moves the samples of each
// series in [begin, end), and its spec changes, by the whole number of weeks that puts `end`
// latest at or before `target_end` (hour of day and weekday stay as they were), and keeps those
// that land in [target_begin, target_end): nothing reaches outside the days this data trains on.
// Series left without samples are dropped. Returns the shift in seconds.
int64_t lay_under(std::vector<UsageSeries>& series, int64_t begin, int64_t end, int64_t target_begin,
                  int64_t target_end);

// What ingestion read and rejected; bad rows are reported, never dropped silently.
struct IngestReport {
  size_t rows_read = 0;
  size_t rows_used = 0;
  size_t rows_bad = 0;
  std::vector<std::string> errors;  // first errors, each "file:line: column 'x': bad value 'y' (why)"

  static constexpr size_t kMaxErrors = 50;
  // Records a message (kept only while errors.size() < kMaxErrors); does not count a row.
  void note(std::string message);
  // A rejected row: rows_bad += 1 and note(message).
  void bad_row(std::string message);
  // Adds another report's counters and errors (errors still capped at kMaxErrors).
  void merge(const IngestReport& other);
};

}  // namespace sizeguard
