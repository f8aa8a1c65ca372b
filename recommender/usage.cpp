#include "recommender/usage.h"

#include <algorithm>
#include <utility>

namespace sizeguard {

std::string WorkloadKey::to_string() const { return namespace_ + "/" + kind + "/" + name + "/" + container; }

ResourceSpec spec_at(const UsageSeries& series, int64_t t) {
  const auto& h = series.spec_history;
  if (h.empty()) return series.spec;
  const auto it = std::lower_bound(h.begin(), h.end(), t, [](const SpecChange& c, int64_t v) { return c.since < v; });
  return it == h.begin() ? ResourceSpec{} : std::prev(it)->spec;
}

size_t first_sample_at_or_after(const std::vector<UsageSample>& samples, int64_t t) {
  const auto it = std::lower_bound(samples.begin(), samples.end(), t,
                                   [](const UsageSample& s, int64_t v) { return s.timestamp < v; });
  return static_cast<size_t>(it - samples.begin());
}

int64_t lay_under(std::vector<UsageSeries>& series, int64_t begin, int64_t end, int64_t target_begin,
                  int64_t target_end) {
  constexpr int64_t kWeek = 7 * 86400;
  const int64_t gap = target_end - end;
  const int64_t shift = (gap >= 0 ? gap / kWeek : -((-gap + kWeek - 1) / kWeek)) * kWeek;  // floor
  begin = std::max(begin, target_begin - shift), end = std::min(end, target_end - shift);
  for (auto& s : series) {
    std::erase_if(s.samples, [&](const UsageSample& x) { return x.timestamp < begin || x.timestamp >= end; });
    for (auto& x : s.samples) x.timestamp += shift;
    std::erase_if(s.spec_history, [&](const SpecChange& c) { return c.since >= end; });
    for (auto& c : s.spec_history) c.since += shift;
  }
  std::erase_if(series, [](const UsageSeries& s) { return s.samples.empty(); });
  return shift;
}

void IngestReport::note(std::string message) {
  if (errors.size() < kMaxErrors) errors.push_back(std::move(message));
}

void IngestReport::bad_row(std::string message) {
  ++rows_bad;
  note(std::move(message));
}

void IngestReport::merge(const IngestReport& other) {
  rows_read += other.rows_read;
  rows_used += other.rows_used;
  rows_bad += other.rows_bad;
  for (const auto& e : other.errors) note(e);
}

}  // namespace sizeguard
