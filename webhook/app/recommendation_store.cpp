#include "webhook/app/recommendation_store.h"

#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

namespace sizeguard {

RecommendationStore::RecommendationStore(std::filesystem::path path, Metrics& metrics, Readiness* readiness)
    : path_(std::move(path)), metrics_(metrics), readiness_(readiness) {
  metrics_.describe("sizeguard_recommendations_last_reload_success", MetricType::Gauge,
                    "1 if the last recommendations reload succeeded, 0 if it failed (the last good snapshot stays).");
  metrics_.describe("sizeguard_recommendations_loaded", MetricType::Gauge, "Containers in the recommendations snapshot in force.");
  metrics_.describe("sizeguard_recommendations_load_errors_total", MetricType::Counter, "Failed recommendations reloads.");
}

RecommendationStore::~RecommendationStore() { poller_.stop(); }

std::string RecommendationStore::reload() {
  std::lock_guard lock(reload_mutex_);
  std::ifstream in(path_, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  const size_t hash = std::hash<std::string>{}(text.str()) ^ static_cast<size_t>(static_cast<bool>(in));
  if (loaded_once_ && hash == last_hash_) return "";
  last_hash_ = hash;
  try {
    if (!in) throw SnapshotError(path_.string() + ": cannot read");
    auto snapshot = std::make_shared<const RecommendationSnapshot>(parse_recommendations(text.str(), path_.string()));
    const size_t count = snapshot->recommendations.size();
    current_.store(std::move(snapshot));
    loaded_once_ = true;
    metrics_.set("sizeguard_recommendations_last_reload_success", {}, 1);
    metrics_.set("sizeguard_recommendations_loaded", {}, static_cast<double>(count));
    if (readiness_) readiness_->set("recommendations", true);
    spdlog::info("recommendations: loaded {} containers from {}", count, path_.string());
    return "";
  } catch (const std::exception& e) {
    metrics_.increment("sizeguard_recommendations_load_errors_total");
    metrics_.set("sizeguard_recommendations_last_reload_success", {}, 0);
    const bool have = current_.load() != nullptr;
    if (readiness_) {
      readiness_->set("recommendations", have,
                      have ? std::string("last reload failed, previous snapshot in force: ") + e.what() : e.what());
    }
    spdlog::error("recommendations: {}{}", e.what(), have ? " (keeping the previous snapshot)" : "");
    return e.what();
  }
}

void RecommendationStore::start(std::chrono::milliseconds interval) {
  poller_.start(interval, [this] { reload(); });
}

}  // namespace sizeguard
