#include "recommender/recommendation_store.h"

#include <sys/stat.h>

#include <ctime>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "recommender/publish.h"

namespace sizeguard {

RecommendationStore::RecommendationStore(std::filesystem::path path, Metrics& metrics, StatusCallback on_status)
    : path_(std::move(path)), metrics_(metrics), on_status_(std::move(on_status)) {
  metrics_.describe("sizeguard_recommendations_last_reload_success", MetricType::Gauge,
                    "1 if the last recommendations reload succeeded, 0 if it failed (the last good snapshot stays).");
  metrics_.describe("sizeguard_recommendations_loaded", MetricType::Gauge, "Containers in the recommendations snapshot in force.");
  metrics_.describe("sizeguard_recommendations_load_errors_total", MetricType::Counter, "Failed recommendations reloads.");
}

RecommendationStore::~RecommendationStore() { poller_.stop(); }

namespace {

// What identifies a version of `path` (and of `path`.gz) without reading it: device, inode,
// size and modification/change times, following symlinks (a ConfigMap's ..data swap gives
// new inodes). "" when a stamp cannot tell: a file modified within 2 s of now may be written
// again within the same filesystem clock tick, size unchanged, and must be read.
std::string file_stamp(const std::filesystem::path& path) {
  std::string stamp;
  const auto now = std::time(nullptr);
  for (const std::string& name : {path.string(), path.string() + ".gz"}) {
    struct stat st {};
    if (::stat(name.c_str(), &st) != 0) {
      stamp += "-;";
      continue;
    }
    if (now - st.st_mtim.tv_sec < 2 || now - st.st_ctim.tv_sec < 2) return "";
    stamp += std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
             std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
             std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec) + ";";
  }
  return stamp;
}

}  // namespace

std::string RecommendationStore::reload() {
  std::lock_guard lock(reload_mutex_);
  // A poll every few seconds must not read and hash a snapshot of hundreds of KiB that did
  // not change.
  std::string stamp = file_stamp(path_);
  if (loaded_once_ && !stamp.empty() && stamp == last_stamp_) return "";
  last_stamp_ = std::move(stamp);
  // The publisher gzips snapshots above 900 KiB into "<name>.gz" (ConfigMaps hold 1 MiB)
  // and drops the plain key: read whichever exists.
  std::filesystem::path source = path_;
  std::error_code ec;
  if (!std::filesystem::exists(source, ec)) source += ".gz";
  std::ifstream in(source, std::ios::binary);
  std::ostringstream buffer;
  if (in) buffer << in.rdbuf();
  std::string text = buffer.str();
  const size_t hash = std::hash<std::string>{}(text) ^ static_cast<size_t>(static_cast<bool>(in));
  if (loaded_once_ && hash == last_hash_) return "";
  last_hash_ = hash;
  try {
    if (!in) throw SnapshotError(path_.string() + ": cannot read (nor " + path_.string() + ".gz)");
    if (text.size() >= 2 && static_cast<unsigned char>(text[0]) == 0x1f && static_cast<unsigned char>(text[1]) == 0x8b) {
      auto plain = gunzip(text);
      if (!plain) throw SnapshotError(source.string() + ": corrupt or truncated gzip data");
      text = std::move(*plain);
    }
    auto snapshot = std::make_shared<const RecommendationSnapshot>(parse_recommendations(text, source.string()));
    const size_t count = snapshot->recommendations.size();
    current_.store(std::move(snapshot));
    loaded_once_ = true;
    metrics_.set("sizeguard_recommendations_last_reload_success", {}, 1);
    metrics_.set("sizeguard_recommendations_loaded", {}, static_cast<double>(count));
    if (on_status_) on_status_(true, "");
    spdlog::info("recommendations: loaded {} containers from {}", count, path_.string());
    return "";
  } catch (const std::exception& e) {
    metrics_.increment("sizeguard_recommendations_load_errors_total");
    metrics_.set("sizeguard_recommendations_last_reload_success", {}, 0);
    const bool have = current_.load() != nullptr;
    if (on_status_) {
      on_status_(have, have ? std::string("last reload failed, previous snapshot in force: ") + e.what() : e.what());
    }
    spdlog::error("recommendations: {}{}", e.what(), have ? " (keeping the previous snapshot)" : "");
    return e.what();
  }
}

void RecommendationStore::start(std::chrono::milliseconds interval) {
  poller_.start(interval, [this] { reload(); });
}

}  // namespace sizeguard
