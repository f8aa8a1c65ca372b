#include "recommender/ingest.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace sizeguard {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Reading and splitting

// Whole file, gunzipped when it is gzip (gzread passes plain files through unchanged).
std::string read_whole_file(const fs::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw std::runtime_error("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  gzbuffer(file, 1 << 17);
  std::string out;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec) out.reserve(static_cast<size_t>(size) * (path.extension() == ".gz" ? 5 : 1) + 1);
  constexpr size_t kChunk = 1 << 20;
  for (;;) {
    const size_t old = out.size();
    out.resize(old + kChunk);
    const int n = gzread(file, out.data() + old, static_cast<unsigned>(kChunk));
    if (n < 0) {
      int code = 0;
      const std::string why = gzerror(file, &code);
      gzclose(file);
      throw std::runtime_error("cannot read " + path.string() + ": " + why);
    }
    out.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  int code = Z_OK;
  const char* why = gzerror(file, &code);
  if (code != Z_OK && code != Z_STREAM_END) {
    const std::string message = "cannot read " + path.string() + ": " + (why ? why : "gzip error");
    gzclose(file);
    throw std::runtime_error(message);
  }
  gzclose(file);
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Iterates lines (without '\n'; a trailing '\r' is kept, callers trim) with 1-based numbers.
class LineReader {
 public:
  explicit LineReader(std::string_view data) : rest_(data) {
    if (rest_.starts_with("\xEF\xBB\xBF")) rest_.remove_prefix(3);  // UTF-8 BOM
  }
  bool next(std::string_view& line) {
    if (done_) return false;
    const size_t end = rest_.find('\n');
    if (end == std::string_view::npos) {
      line = rest_;
      done_ = true;
      if (line.empty()) return false;
    } else {
      line = rest_.substr(0, end);
      rest_.remove_prefix(end + 1);
    }
    ++number_;
    return true;
  }
  size_t number() const { return number_; }

 private:
  std::string_view rest_;
  size_t number_ = 0;
  bool done_ = false;
};

// One CSV line into fields (trimmed). Quoted fields may hold commas and "" escapes; their
// unescaped text lives in `owned`. Returns false on unbalanced quotes.
bool split_csv(std::string_view line, std::vector<std::string_view>& out, std::deque<std::string>& owned) {
  out.clear();
  owned.clear();
  line = trim(line);
  if (line.find('"') == std::string_view::npos) {
    size_t start = 0;
    for (;;) {
      const size_t comma = line.find(',', start);
      if (comma == std::string_view::npos) {
        out.push_back(trim(line.substr(start)));
        return true;
      }
      out.push_back(trim(line.substr(start, comma - start)));
      start = comma + 1;
    }
  }
  size_t i = 0;
  for (;;) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i < line.size() && line[i] == '"') {
      std::string value;
      ++i;
      bool closed = false;
      while (i < line.size()) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            value += '"';
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        value += line[i++];
      }
      if (!closed) return false;
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      owned.push_back(std::move(value));
      out.push_back(owned.back());
      if (i == line.size()) return true;
      if (line[i] != ',') return false;
      ++i;
    } else {
      const size_t comma = line.find(',', i);
      const size_t end = comma == std::string_view::npos ? line.size() : comma;
      const std::string_view field = trim(line.substr(i, end - i));
      if (field.find('"') != std::string_view::npos) return false;
      out.push_back(field);
      if (comma == std::string_view::npos) return true;
      i = comma + 1;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Values

std::optional<double> parse_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);
  double value = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || ptr != s.data() + s.size() || !std::isfinite(value)) return std::nullopt;
  return value + 0.0;  // -0 -> 0
}

std::optional<double> parse_non_negative(std::string_view s) {
  auto v = parse_number(s);
  if (!v || *v < 0) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_integer(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);
  int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return value;
}

// Epoch seconds, integer or decimal (floored); rejects negative values and millisecond-like
// magnitudes (beyond year 5138).
std::optional<int64_t> parse_epoch_seconds(std::string_view s) {
  constexpr int64_t kMax = 100'000'000'000;
  if (auto v = parse_integer(s)) {
    if (*v < 0 || *v >= kMax) return std::nullopt;
    return v;
  }
  if (s.find_first_of("eE") == std::string_view::npos) {
    if (auto d = parse_number(s); d && *d >= 0 && *d < static_cast<double>(kMax)) {
      return static_cast<int64_t>(std::floor(*d));
    }
  }
  return std::nullopt;
}

std::optional<int64_t> parse_timestamp(std::string_view s) {
  if (auto v = parse_epoch_seconds(s)) return v;
  return parse_rfc3339(s);
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// ---------------------------------------------------------------------------------------------
// Series assembly

struct Row {
  int64_t timestamp;
  double cpu_cores;
  double memory_bytes;
  size_t line;
};

// Sorts rows by time (stable: file order within a timestamp), keeps the last row of each
// timestamp and reports the others as bad.
std::vector<UsageSample> finalize_rows(std::vector<Row>& rows, const std::string& file,
                                       std::string_view timestamp_column, const WorkloadKey& key,
                                       IngestReport& report) {
  if (!std::is_sorted(rows.begin(), rows.end(),
                      [](const Row& a, const Row& b) { return a.timestamp < b.timestamp; })) {
    std::stable_sort(rows.begin(), rows.end(),
                     [](const Row& a, const Row& b) { return a.timestamp < b.timestamp; });
  }
  std::vector<UsageSample> samples;
  samples.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (i + 1 < rows.size() && rows[i + 1].timestamp == rows[i].timestamp) {
      size_t last = i + 1;
      while (last + 1 < rows.size() && rows[last + 1].timestamp == rows[i].timestamp) ++last;
      report.bad_row(file + ":" + std::to_string(rows[i].line) + ": column '" + std::string(timestamp_column) +
                     "': duplicate value '" + std::to_string(rows[i].timestamp) + "' for " + key.to_string() +
                     " (superseded by line " + std::to_string(rows[last].line) + "; the last row wins)");
      continue;
    }
    samples.push_back({rows[i].timestamp, rows[i].cpu_cores, rows[i].memory_bytes});
  }
  report.rows_used += samples.size();
  return samples;
}

// One spec value seen on a row: column 0..3 = cpu_request, memory_request, cpu_limit, memory_limit.
struct SpecEvent {
  int64_t timestamp;
  size_t line;
  int column;
  double value;
};

// The spec changes over time from per-row values (the last line wins at one timestamp, as
// for samples), and the final spec (the latest known value of each column).
std::vector<SpecChange> spec_history_of(std::vector<SpecEvent>& events, ResourceSpec& latest) {
  std::stable_sort(events.begin(), events.end(), [](const SpecEvent& a, const SpecEvent& b) {
    return a.timestamp != b.timestamp ? a.timestamp < b.timestamp : a.line < b.line;
  });
  std::vector<SpecChange> history;
  ResourceSpec running;
  for (size_t i = 0; i < events.size();) {
    const int64_t t = events[i].timestamp;
    for (; i < events.size() && events[i].timestamp == t; ++i) {
      auto& slot = events[i].column == 0   ? running.cpu_request
                   : events[i].column == 1 ? running.memory_request
                   : events[i].column == 2 ? running.cpu_limit
                                           : running.memory_limit;
      slot = events[i].value;
    }
    if (history.empty() || !(history.back().spec == running)) history.push_back({t, running});
  }
  latest = running;
  return history;
}

std::string bad_value(const std::string& file, size_t line, std::string_view column, std::string_view value,
                      std::string_view why) {
  return file + ":" + std::to_string(line) + ": column '" + std::string(column) + "': bad value '" +
         std::string(value) + "' (" + std::string(why) + ")";
}

std::string no_usable_row(const std::string& file, const IngestReport& report) {
  return file + ": no usable row (" + std::to_string(report.rows_read) + " rows read, " +
         std::to_string(report.rows_bad) + " bad" +
         (report.errors.empty() ? std::string() : "; first error: " + report.errors.front()) + ")";
}

// ---------------------------------------------------------------------------------------------
// Bitbrains

constexpr std::array<std::string_view, 11> kBitbrainsColumns = {
    "Timestamp [ms]",
    "CPU cores",
    "CPU capacity provisioned [MHZ]",
    "CPU usage [MHZ]",
    "CPU usage [%]",
    "Memory capacity provisioned [KB]",
    "Memory usage [KB]",
    "Disk read throughput [KB/s]",
    "Disk write throughput [KB/s]",
    "Network received throughput [KB/s]",
    "Network transmitted throughput [KB/s]"};
constexpr size_t kBitbrainsUsedColumns = 7;  // timestamp .. memory usage
constexpr double kBytesPerKB = 1024;

std::string bitbrains_stem(const fs::path& path) {
  std::string name = path.filename().string();
  for (std::string_view suffix : {".csv.gz", ".csv"}) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) return name.substr(0, name.size() - suffix.size());
  }
  return path.stem().string();
}

struct FileResult {
  std::optional<UsageSeries> series;
  IngestReport report;
  std::string fatal;  // set when the file gave no series
};

// `file` names the text in messages; the workload name is its stem.
FileResult parse_bitbrains_text(std::string_view data, const std::string& file) {
  FileResult result;
  IngestReport& report = result.report;
  LineReader lines(data);

  std::vector<std::string> names(kBitbrainsColumns.begin(), kBitbrainsColumns.end());
  size_t columns = names.size();
  std::string_view line;
  std::array<std::string_view, 32> fields;
  auto split = [&fields](std::string_view text) {
    size_t n = 0;
    size_t start = 0;
    for (;;) {
      const size_t semi = text.find(';', start);
      const std::string_view field = trim(text.substr(start, semi == std::string_view::npos ? semi : semi - start));
      if (n < fields.size()) fields[n] = field;
      ++n;
      if (semi == std::string_view::npos) return n;
      start = semi + 1;
    }
  };

  std::vector<Row> rows;
  rows.reserve(data.size() / 120 + 16);
  WorkloadKey key{"bitbrains", "VM", bitbrains_stem(file), "main"};
  std::vector<SpecEvent> spec_events;
  bool first = true;
  while (lines.next(line)) {
    line = trim(line);
    if (line.empty()) continue;
    if (first) {
      first = false;
      if (line.front() < '0' || line.front() > '9') {  // header line
        const size_t n = split(line);
        if (n < kBitbrainsUsedColumns || n > fields.size()) {
          throw std::runtime_error(file + ":" + std::to_string(lines.number()) +
                                   ": not a Bitbrains trace header (expected 11 ';'-separated columns "
                                   "starting 'Timestamp [ms]; CPU cores; ...', got " +
                                   std::to_string(n) + ")");
        }
        columns = n;
        names.assign(fields.begin(), fields.begin() + static_cast<ptrdiff_t>(n));
        continue;
      }
    }
    ++report.rows_read;
    const size_t n = split(line);
    if (n != columns) {
      report.bad_row(file + ":" + std::to_string(lines.number()) + ": wrong column count: expected " +
                     std::to_string(columns) + ", got " + std::to_string(n));
      continue;
    }
    const size_t ln = lines.number();
    const auto timestamp = parse_epoch_seconds(fields[0]);
    if (!timestamp) {
      report.bad_row(bad_value(file, ln, names[0], fields[0], "expected epoch seconds"));
      continue;
    }
    std::array<double, kBitbrainsUsedColumns> v{};
    bool ok = true;
    for (size_t c = 1; c < kBitbrainsUsedColumns; ++c) {
      const auto value = parse_non_negative(fields[c]);
      const bool positive_needed = c == 1 || c == 2;  // cores and capacity divide
      if (!value || (positive_needed && *value <= 0)) {
        const char* why = !positive_needed ? "expected a non-negative number"
                          : value              ? "expected a positive number; 0 = no CPU provisioned, e.g. VM off"
                                               : "expected a positive number";
        report.bad_row(bad_value(file, ln, names[c], fields[c], why));
        ok = false;
        break;
      }
      v[c] = *value;
    }
    if (!ok) continue;
    const double cores = v[1];
    const double cpu = v[3] / (v[2] / cores);
    const double memory = v[6] * kBytesPerKB, memory_capacity = v[5] * kBytesPerKB;
    // Each value is finite, but the conversions can overflow (1e308 KB) or divide by an
    // underflowed per-core capacity; infinite or NaN usage must never reach training.
    if (!std::isfinite(cpu) || !std::isfinite(memory) || !std::isfinite(memory_capacity)) {
      const size_t c = !std::isfinite(cpu) ? 3 : !std::isfinite(memory) ? 6 : 5;
      report.bad_row(bad_value(file, ln, names[c], fields[c],
                               c == 3 ? "out of range: not a finite number of cores at the provisioned MHz per core"
                                      : "out of range: not a finite number of bytes"));
      continue;
    }
    rows.push_back({*timestamp, cpu, memory, ln});
    spec_events.push_back({*timestamp, ln, 0, cores});
    spec_events.push_back({*timestamp, ln, 1, memory_capacity});
  }
  auto samples = finalize_rows(rows, file, names[0], key, report);
  if (samples.empty()) {
    result.fatal = no_usable_row(file, report);
    return result;
  }
  ResourceSpec spec;
  auto history = spec_history_of(spec_events, spec);
  result.series = UsageSeries{std::move(key), std::move(samples), spec, std::move(history)};
  return result;
}

FileResult parse_bitbrains_file(const fs::path& path) { return parse_bitbrains_text(read_whole_file(path), path.string()); }

std::vector<fs::path> bitbrains_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".csv") || name.ends_with(".csv.gz")) files.push_back(entry.path());
  }
  auto numeric = [](const std::string& s) {
    return !s.empty() && s.size() < 19 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  std::sort(files.begin(), files.end(), [&](const fs::path& a, const fs::path& b) {
    const std::string sa = bitbrains_stem(a), sb = bitbrains_stem(b);
    const bool na = numeric(sa), nb = numeric(sb);
    if (na != nb) return na;
    if (na && sa.size() != sb.size()) return sa.size() < sb.size();  // numeric order without parsing
    if (sa != sb) return sa < sb;
    return a.filename() < b.filename();
  });
  return files;
}

// ---------------------------------------------------------------------------------------------
// Long CSV

enum CsvColumn : size_t {
  kTimestamp,
  kNamespace,
  kKind,
  kWorkload,
  kContainer,
  kCpuCores,
  kMemoryBytes,
  kCpuRequest,
  kMemoryRequest,
  kCpuLimit,
  kMemoryLimit,
  kCsvColumnCount
};
constexpr std::array<std::string_view, kCsvColumnCount> kCsvNames = {
    "timestamp", "namespace",   "workload_kind",  "workload",  "container",   "cpu_cores",
    "memory_bytes", "cpu_request", "memory_request", "cpu_limit", "memory_limit"};
constexpr size_t kCsvRequired = kCpuRequest;  // the first seven are required
constexpr size_t kAbsent = static_cast<size_t>(-1);

struct CsvGroup {
  std::vector<Row> rows;
  std::vector<SpecEvent> spec;
};

}  // namespace

std::optional<int64_t> parse_rfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  auto digits = [&s](size_t pos, size_t count) -> std::optional<unsigned> {
    if (pos + count > s.size()) return std::nullopt;
    unsigned v = 0;
    for (size_t i = pos; i < pos + count; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(s[i] - '0');
    }
    return v;
  };
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  const auto year = digits(0, 4), month = digits(5, 2), day = digits(8, 2);
  const auto hour = digits(11, 2), minute = digits(14, 2), second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second) return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *hour > 23 || *minute > 59 || *second > 60) return std::nullopt;
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (*year % 4 == 0 && *year % 100 != 0) || *year % 400 == 0;
  if (*day > kDays[*month - 1] + (*month == 2 && leap ? 1 : 0)) return std::nullopt;
  size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    const size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start) return std::nullopt;
  }
  int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const auto oh = digits(pos + 1, 2), om = digits(pos + 4, 2);
    if (!oh || !om || pos + 3 >= s.size() || s[pos + 3] != ':' || *oh > 23 || *om > 59) return std::nullopt;
    offset = (s[pos] == '+' ? 1 : -1) * static_cast<int64_t>(*oh * 3600 + *om * 60);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const int64_t days = days_from_civil(*year, *month, *day);
  const int64_t t = days * 86400 + *hour * 3600 + *minute * 60 + std::min(*second, 59u) - offset;
  if (t < 0) return std::nullopt;
  return t;
}

std::vector<UsageSeries> read_bitbrains(const std::filesystem::path& file_or_dir, IngestReport& report,
                                        size_t max_files) {
  if (!fs::exists(file_or_dir)) throw std::runtime_error("Bitbrains trace not found: " + file_or_dir.string());
  if (!fs::is_directory(file_or_dir)) {
    std::vector<UsageSeries> out;
    out.push_back(parse_bitbrains(read_whole_file(file_or_dir), file_or_dir.string(), report));
    return out;
  }
  std::vector<fs::path> files = bitbrains_files(file_or_dir);
  if (max_files > 0 && files.size() > max_files) files.resize(max_files);
  if (files.empty()) throw std::runtime_error(file_or_dir.string() + ": no *.csv or *.csv.gz files");

  std::vector<FileResult> results(files.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < files.size(); i = next++) {
      try {
        results[i] = parse_bitbrains_file(files[i]);
      } catch (const std::exception& e) {
        results[i].fatal = e.what();
      }
    }
  };
  const size_t threads =
      std::min<size_t>({files.size(), std::max(1u, std::thread::hardware_concurrency()), size_t{8}});
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();

  std::vector<UsageSeries> out;
  out.reserve(files.size());
  for (auto& result : results) {
    report.merge(result.report);
    if (result.series) {
      out.push_back(std::move(*result.series));
    } else {
      report.note(result.fatal + " (file skipped)");
    }
  }
  if (out.empty()) {
    throw std::runtime_error(file_or_dir.string() + ": no usable Bitbrains file among " +
                             std::to_string(files.size()) +
                             (report.errors.empty() ? std::string() : "; first error: " + report.errors.front()));
  }
  return out;
}

UsageSeries parse_bitbrains(std::string_view text, const std::string& source, IngestReport& report) {
  FileResult result = parse_bitbrains_text(text, source);
  report.merge(result.report);
  if (!result.series) throw std::runtime_error(result.fatal);
  return std::move(*result.series);
}

std::vector<UsageSeries> read_usage_csv(const std::filesystem::path& path, IngestReport& report) {
  return parse_usage_csv(read_whole_file(path), path.string(), report);
}

std::vector<UsageSeries> parse_usage_csv(std::string_view data, const std::string& file, IngestReport& total) {
  IngestReport report;
  LineReader lines(data);
  std::string_view line;
  std::vector<std::string_view> fields;
  std::deque<std::string> owned;

  // Header.
  bool have_header = false;
  while (lines.next(line)) {
    if (!trim(line).empty()) {
      have_header = true;
      break;
    }
  }
  if (!have_header) {
    throw std::runtime_error(file + ": empty file (expected a header: timestamp,namespace,workload_kind,"
                                    "workload,container,cpu_cores,memory_bytes[,cpu_request,memory_request,"
                                    "cpu_limit,memory_limit])");
  }
  if (!split_csv(line, fields, owned)) {
    throw std::runtime_error(file + ":" + std::to_string(lines.number()) + ": malformed header (unbalanced quotes)");
  }
  const size_t header_line = lines.number();
  const size_t columns = fields.size();
  std::array<size_t, kCsvColumnCount> index;
  index.fill(kAbsent);
  for (size_t i = 0; i < fields.size(); ++i) {
    std::string name(fields[i]);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    const auto it = std::find(kCsvNames.begin(), kCsvNames.end(), name);
    if (it == kCsvNames.end()) {
      report.note(file + ":" + std::to_string(header_line) + ": column '" + name +
                  "' ignored (not part of the schema)");
      continue;
    }
    const auto c = static_cast<size_t>(it - kCsvNames.begin());
    if (index[c] != kAbsent) {
      throw std::runtime_error(file + ":" + std::to_string(header_line) + ": column '" + name + "' appears twice");
    }
    index[c] = i;
  }
  for (size_t c = 0; c < kCsvRequired; ++c) {
    if (index[c] == kAbsent) {
      total.merge(report);
      throw std::runtime_error(file + ":" + std::to_string(header_line) + ": missing column '" +
                               std::string(kCsvNames[c]) +
                               "' (header must name timestamp,namespace,workload_kind,workload,container,"
                               "cpu_cores,memory_bytes; optional cpu_request,memory_request,cpu_limit,"
                               "memory_limit)");
    }
  }

  std::map<WorkloadKey, CsvGroup> groups;
  CsvGroup* last_group = nullptr;
  const WorkloadKey* last_key = nullptr;
  while (lines.next(line)) {
    if (trim(line).empty()) continue;
    ++report.rows_read;
    const size_t ln = lines.number();
    if (!split_csv(line, fields, owned)) {
      report.bad_row(file + ":" + std::to_string(ln) + ": malformed quoting");
      continue;
    }
    if (fields.size() != columns) {
      report.bad_row(file + ":" + std::to_string(ln) + ": wrong column count: expected " + std::to_string(columns) +
                     ", got " + std::to_string(fields.size()));
      continue;
    }
    auto field = [&](size_t c) { return fields[index[c]]; };
    const auto timestamp = parse_timestamp(field(kTimestamp));
    if (!timestamp) {
      report.bad_row(bad_value(file, ln, "timestamp", field(kTimestamp),
                               "expected epoch seconds or RFC3339 like 2024-05-01T12:00:00Z"));
      continue;
    }
    bool ok = true;
    for (size_t c = kNamespace; c <= kContainer && ok; ++c) {
      if (field(c).empty()) {
        report.bad_row(bad_value(file, ln, kCsvNames[c], field(c), "expected a non-empty name"));
        ok = false;
      }
    }
    if (!ok) continue;
    std::array<std::optional<double>, kCsvColumnCount> numbers;
    for (size_t c = kCpuCores; c < kCsvColumnCount && ok; ++c) {
      if (index[c] == kAbsent) continue;
      const std::string_view text = field(c);
      if (c >= kCpuRequest && text.empty()) continue;  // optional value unknown
      numbers[c] = parse_non_negative(text);
      if (!numbers[c]) {
        report.bad_row(bad_value(file, ln, kCsvNames[c], text, "expected a non-negative number"));
        ok = false;
      }
    }
    if (!ok) continue;

    const bool same = last_key != nullptr && last_key->namespace_ == field(kNamespace) &&
                      last_key->kind == field(kKind) && last_key->name == field(kWorkload) &&
                      last_key->container == field(kContainer);
    if (!same) {
      WorkloadKey key{std::string(field(kNamespace)), std::string(field(kKind)), std::string(field(kWorkload)),
                      std::string(field(kContainer))};
      auto it = groups.try_emplace(std::move(key)).first;
      last_key = &it->first;
      last_group = &it->second;
    }
    last_group->rows.push_back({*timestamp, *numbers[kCpuCores], *numbers[kMemoryBytes], ln});
    for (size_t c = kCpuRequest; c < kCsvColumnCount; ++c) {
      if (numbers[c]) last_group->spec.push_back({*timestamp, ln, static_cast<int>(c - kCpuRequest), *numbers[c]});
    }
  }

  std::vector<UsageSeries> out;
  out.reserve(groups.size());
  for (auto& [key, group] : groups) {
    auto samples = finalize_rows(group.rows, file, "timestamp", key, report);
    if (samples.empty()) continue;
    ResourceSpec spec;
    auto history = spec_history_of(group.spec, spec);
    out.push_back(UsageSeries{key, std::move(samples), spec, std::move(history)});
  }
  total.merge(report);
  if (out.empty()) throw std::runtime_error(no_usable_row(file, report));
  return out;
}

std::vector<UsageSeries> read_azure_cpu(const std::filesystem::path& path, IngestReport& report) {
  return parse_azure_cpu(read_whole_file(path), path.string(), report);
}

std::vector<UsageSeries> parse_azure_cpu(std::string_view data, const std::string& file, IngestReport& total) {
  IngestReport report;
  LineReader lines(data);
  std::string_view line;
  std::vector<std::string_view> fields;
  std::deque<std::string> owned;
  while (lines.next(line) && trim(line).empty()) {
  }
  if (trim(line).empty()) throw std::runtime_error(file + ": empty file (expected a header vm,t_offset_s,cpu_avg_pct,...)");
  const size_t header_line = lines.number();
  if (!split_csv(line, fields, owned)) throw std::runtime_error(file + ":" + std::to_string(header_line) + ": malformed header");
  const std::array<std::string_view, 3> names{"vm", "t_offset_s", "cpu_avg_pct"};
  std::array<size_t, 3> index{kAbsent, kAbsent, kAbsent};
  for (size_t i = 0; i < fields.size(); ++i)
    for (size_t c = 0; c < names.size(); ++c)
      if (trim(fields[i]) == names[c]) index[c] = i;
  for (size_t c = 0; c < names.size(); ++c)
    if (index[c] == kAbsent)
      throw std::runtime_error(file + ":" + std::to_string(header_line) + ": missing column '" + std::string(names[c]) +
                               "' (an Azure CPU sample needs vm,t_offset_s,cpu_avg_pct)");
  const size_t columns = fields.size();
  std::map<std::string, std::vector<Row>, std::less<>> groups;
  while (lines.next(line)) {
    if (trim(line).empty()) continue;
    ++report.rows_read;
    const size_t ln = lines.number();
    if (!split_csv(line, fields, owned) || fields.size() != columns) {
      report.bad_row(file + ":" + std::to_string(ln) + ": wrong column count: expected " + std::to_string(columns));
      continue;
    }
    const std::string_view vm = trim(fields[index[0]]);
    const auto offset = parse_epoch_seconds(trim(fields[index[1]]));
    const auto pct = parse_non_negative(trim(fields[index[2]]));
    if (vm.empty()) {
      report.bad_row(bad_value(file, ln, "vm", vm, "expected a non-empty name"));
    } else if (!offset) {
      report.bad_row(bad_value(file, ln, "t_offset_s", fields[index[1]], "expected whole seconds"));
    } else if (!pct || *pct > 100) {
      report.bad_row(bad_value(file, ln, "cpu_avg_pct", fields[index[2]], "expected a percentage in [0, 100]"));
    } else {
      auto it = groups.find(vm);
      if (it == groups.end()) it = groups.emplace(std::string(vm), std::vector<Row>{}).first;
      it->second.push_back({*offset, *pct / 100.0, 0.0, ln});
    }
  }
  std::vector<UsageSeries> out;
  for (auto& [vm, rows] : groups) {
    WorkloadKey key{"azure2017", "VM", vm, "main"};
    auto samples = finalize_rows(rows, file, "t_offset_s", key, report);
    if (samples.empty()) continue;
    UsageSeries s{std::move(key), std::move(samples), {}, {}};
    s.has_memory = false;
    out.push_back(std::move(s));
  }
  total.merge(report);
  if (out.empty()) throw std::runtime_error(no_usable_row(file, report));
  return out;
}

}  // namespace sizeguard
