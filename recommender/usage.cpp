#include "recommender/usage.h"

#include <utility>

namespace sizeguard {

std::string WorkloadKey::to_string() const { return namespace_ + "/" + kind + "/" + name + "/" + container; }

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
