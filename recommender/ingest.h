// File sources of usage history: the documented long CSV and the Bitbrains GWA-T-12 traces.
// Both return UsageSeries with strictly increasing timestamps and account for every row in
// the IngestReport (rows_read = rows_used + rows_bad; errors hold the first 50 messages).
// See docs/recommender-data.md for the formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "recommender/usage.h"

namespace sizeguard {

// Bitbrains GWA-T-12 trace: one file = one workload; ";\t" separated; epoch seconds;
// CPU MHz -> cores (usage MHz / (capacity MHz / cores)); memory KB -> bytes (x1024);
// provisioned capacity plays today's request (spec.cpu_request = CPU cores,
// spec.memory_request = memory capacity in bytes, from the latest row). .csv or .csv.gz.
// Key: namespace "bitbrains", kind "VM", name = file stem ("17"), container "main".
// A directory reads every *.csv / *.csv.gz in it, ordered by numeric stem (1, 2, ..., 10),
// the first max_files of them when max_files > 0; series come back in that order. A file of
// a directory without a usable row is skipped and reported; a single file without one, or a
// directory without any usable file, throws std::runtime_error.
std::vector<UsageSeries> read_bitbrains(const std::filesystem::path& file_or_dir, IngestReport& report,
                                        size_t max_files = 0 /* 0 = all */);

// The documented long CSV (.csv or .csv.gz): header
//   timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes
//   [,cpu_request,memory_request,cpu_limit,memory_limit]
// Columns are matched by header name, in any order; unknown columns are ignored with a note
// in report.errors; a missing required column throws. timestamp = epoch seconds or RFC3339
// (2024-05-01T12:00:00Z, fractional seconds and +hh:mm offsets accepted). Optional columns may
// be empty (unknown); the spec is the latest non-empty value per series. Rows are grouped by
// (namespace, kind, workload, container), sorted by time; a duplicate timestamp keeps the last
// row and reports the replaced one as bad. Bad rows are counted in rows_bad and described as
// "file:line: column 'cpu_cores': bad value 'abc' (expected a non-negative number)".
// A file with no usable row throws std::runtime_error. Series come back sorted by key.
std::vector<UsageSeries> read_usage_csv(const std::filesystem::path& file, IngestReport& report);

// The same readers on text already in memory (fuzzing, tests). `source` names the text in
// messages as the path does; the Bitbrains workload name is its stem ("17.csv" -> "17").
// Throws std::runtime_error where the file readers do.
UsageSeries parse_bitbrains(std::string_view text, const std::string& source, IngestReport& report);
std::vector<UsageSeries> parse_usage_csv(std::string_view text, const std::string& source, IngestReport& report);

// Azure Public Dataset V1 CPU sample (extra-traces/azure2017-vm-cpu-sample100): header with
// vm, t_offset_s, cpu_avg_pct (other columns ignored), one row per VM and 5 minutes. CPU only:
// cpu_cores = cpu_avg_pct / 100, in units of the whole VM (its core count is unknown);
// memory_bytes = 0 and has_memory = false (evaluate scores no memory for it). Timestamps are
// the offsets as epoch seconds (the trace's absolute start is not kept). Key: namespace
// "azure2017", kind "VM", name = vm, container "main"; series sorted by vm. .csv or .csv.gz.
std::vector<UsageSeries> read_azure_cpu(const std::filesystem::path& file, IngestReport& report);
std::vector<UsageSeries> parse_azure_cpu(std::string_view text, const std::string& source, IngestReport& report);

// Epoch seconds from an RFC3339 timestamp; nullopt when malformed. Exposed for tests/tools.
std::optional<int64_t> parse_rfc3339(std::string_view text);

}  // namespace sizeguard
