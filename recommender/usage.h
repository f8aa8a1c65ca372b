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

// Requests/limits in force for the series (latest known), in cores and bytes.
struct ResourceSpec {
  std::optional<double> cpu_request, memory_request, cpu_limit, memory_limit;
};

struct UsageSeries {
  WorkloadKey key;
  std::vector<UsageSample> samples;  // strictly increasing timestamps
  ResourceSpec spec;
  bool oom_killed = false;  // a container of the workload was OOM-killed recently (Prometheus only)
};

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
