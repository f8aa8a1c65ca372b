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
