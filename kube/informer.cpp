#include "kube/informer.h"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

namespace sizeguard {
namespace {

constexpr const char* kSynced = "sizeguard_watch_synced";
constexpr const char* kStaleness = "sizeguard_watch_staleness_seconds";
constexpr const char* kRelists = "sizeguard_watch_relists_total";
constexpr const char* kFailures = "sizeguard_watch_failures_total";
constexpr const char* kObjects = "sizeguard_watch_objects";

std::string string_at(const Json& object, const Json::json_pointer& pointer) {
  if (!object.contains(pointer)) return "";
  const Json& value = object.at(pointer);
  return value.is_string() ? value.get<std::string>() : "";
}

const Json::json_pointer kNamespace("/metadata/namespace");
const Json::json_pointer kName("/metadata/name");
const Json::json_pointer kResourceVersion("/metadata/resourceVersion");

}  // namespace

void describe_watch_metrics(Metrics& metrics) {
  metrics.describe(kSynced, MetricType::Gauge, "1 once the watched resource has been listed, else 0.");
  metrics.describe(kStaleness, MetricType::Gauge,
                   "Seconds since the last watch event, bookmark or list of the resource.");
  metrics.describe(kRelists, MetricType::Counter,
                   "Lists of the resource after the first (410 Gone: the watch fell too far behind).");
  metrics.describe(kFailures, MetricType::Counter, "Lists and watches of the resource that failed.");
  metrics.describe(kObjects, MetricType::Gauge, "Objects of the resource held in memory.");
}

Informer::Informer(KubeClient& client, InformerOptions options) : client_(client), options_(std::move(options)) {
  status_.last_event = std::chrono::steady_clock::now();
  status_.broken_since = status_.last_event;
  status_.last_error = "not listed yet";
  if (auto* metrics = options_.metrics) {
    const MetricLabels labels{{"resource", options_.name}};
    metrics->set(kSynced, labels, 0);
    metrics->increment(kRelists, labels, 0);
    metrics->increment(kFailures, labels, 0);
  }
}

Informer::~Informer() { stop(); }

void Informer::start() {
  if (thread_.joinable()) return;
  // spdlog builds its registry on first use, inside the (uninstrumented) library: built here,
  // before the thread, its construction is ordered before every watch thread's logging.
  (void)spdlog::default_logger_raw();
  thread_ = std::thread([this] { run(); });
}

void Informer::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  cancel_.cancel();
  if (thread_.joinable()) thread_.join();
}

bool Informer::synced() const {
  std::lock_guard lock(status_mutex_);
  return status_.synced;
}

InformerStatus Informer::status() const {
  std::lock_guard lock(status_mutex_);
  return status_;
}

std::shared_ptr<const Json> Informer::get(const std::string& ns, const std::string& name) const {
  std::shared_lock lock(store_mutex_);
  auto in_ns = objects_.find(ns);
  if (in_ns == objects_.end()) return nullptr;
  auto found = in_ns->second.find(name);
  return found == in_ns->second.end() ? nullptr : found->second;
}

std::vector<std::shared_ptr<const Json>> Informer::list(const std::string& ns) const {
  std::vector<std::shared_ptr<const Json>> out;
  std::shared_lock lock(store_mutex_);
  auto in_ns = objects_.find(ns);
  if (in_ns == objects_.end()) return out;
  out.reserve(in_ns->second.size());
  for (const auto& [name, object] : in_ns->second) out.push_back(object);
  return out;
}

std::size_t Informer::size() const {
  std::shared_lock lock(store_mutex_);
  std::size_t total = 0;
  for (const auto& [ns, objects] : objects_) total += objects.size();
  return total;
}

void Informer::export_metrics(std::chrono::steady_clock::time_point now) const {
  if (!options_.metrics) return;
  const InformerStatus s = status();
  const MetricLabels labels{{"resource", options_.name}};
  options_.metrics->set(kSynced, labels, s.synced ? 1 : 0);
  options_.metrics->set(kStaleness, labels, std::chrono::duration<double>(now - s.last_event).count());
  options_.metrics->set(kObjects, labels, static_cast<double>(size()));
}

std::shared_ptr<const Json> Informer::prepare(Json object) const {
  if (auto metadata = object.find("metadata"); metadata != object.end() && metadata->is_object()) {
    metadata->erase("managedFields");
  }
  if (options_.transform) object = options_.transform(std::move(object));
  return std::make_shared<const Json>(std::move(object));
}

void Informer::mark_broken(const std::string& error) {
  {
    std::lock_guard lock(status_mutex_);
    if (!status_.broken_since) status_.broken_since = std::chrono::steady_clock::now();
    status_.last_error = error;
  }
  if (options_.metrics) options_.metrics->increment(kFailures, {{"resource", options_.name}});
}

bool Informer::wait(std::chrono::milliseconds delay) {
  std::unique_lock lock(wake_mutex_);
  return !wake_.wait_for(lock, delay, [this] { return stopping_.load(); });
}

bool Informer::list_all() {
  Objects fresh;
  std::string continue_token, resource_version;
  do {
    std::string path = options_.path + "?limit=" + std::to_string(options_.page_size);
    if (!options_.field_selector.empty()) path += "&fieldSelector=" + kube_path_escape(options_.field_selector);
    if (!continue_token.empty()) path += "&continue=" + kube_path_escape(continue_token);
    auto result = client_.get_json(path);
    if (auto* error = std::get_if<std::string>(&result)) {
      mark_broken("list: " + *error);
      return false;
    }
    const Json& list = std::get<Json>(result);
    auto items = list.find("items");
    if (items == list.end() || !(items->is_array() || items->is_null())) {
      mark_broken("list " + options_.path + ": the response has no items list");
      return false;
    }
    if (items->is_array()) {
      for (const auto& item : *items) {
        if (!item.is_object()) continue;
        const std::string name = string_at(item, kName);
        if (!name.empty()) fresh[string_at(item, kNamespace)][name] = prepare(item);
      }
    }
    resource_version = string_at(list, kResourceVersion);
    continue_token = string_at(list, Json::json_pointer("/metadata/continue"));
  } while (!continue_token.empty() && !stopping_);
  if (stopping_) return false;
  bool relist = false;
  {
    std::lock_guard lock(status_mutex_);
    relist = status_.synced;  // written only by this thread
  }
  // Metrics before the objects and the synced flag: whoever sees those sees these too.
  if (options_.metrics) {
    const MetricLabels labels{{"resource", options_.name}};
    options_.metrics->set(kSynced, labels, 1);
    options_.metrics->set(kStaleness, labels, 0);
    options_.metrics->set(kObjects, labels, static_cast<double>(fresh.size()));
    if (relist) options_.metrics->increment(kRelists, labels);
  }
  {
    std::unique_lock lock(store_mutex_);
    objects_.swap(fresh);
  }
  {
    std::lock_guard lock(status_mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (relist) ++status_.relists;
    status_.synced = true;
    status_.last_sync = status_.last_event = now;
    status_.broken_since.reset();
    status_.resource_version = resource_version;
    status_.last_error.clear();
  }
  if (options_.on_synced) options_.on_synced();
  return true;
}

void Informer::apply(const Json& event, WatchEnd& end) {
  const std::string type = event.value("type", std::string());
  auto object_it = event.find("object");
  if (object_it == event.end() || !object_it->is_object()) return;
  const Json& object = *object_it;
  if (type == "ERROR") {
    // A metav1.Status; 410 means our resourceVersion is too old to resume from.
    if (object.value("code", 0) == 410) {
      end = WatchEnd::Gone;
    } else {
      end = WatchEnd::Failed;
      std::lock_guard lock(status_mutex_);
      status_.last_error = "watch: ERROR event: " + object.value("message", std::string("(no message)"));
    }
    return;
  }
  const std::string name = string_at(object, kName);
  const std::string ns = string_at(object, kNamespace);
  if (type == "ADDED" || type == "MODIFIED") {
    if (name.empty()) return;
    auto prepared = prepare(object);
    std::unique_lock lock(store_mutex_);
    objects_[ns][name] = std::move(prepared);
  } else if (type == "DELETED") {
    std::unique_lock lock(store_mutex_);
    if (auto in_ns = objects_.find(ns); in_ns != objects_.end()) {
      in_ns->second.erase(name);
      if (in_ns->second.empty()) objects_.erase(in_ns);
    }
  } else if (type != "BOOKMARK") {
    return;
  }
  std::lock_guard lock(status_mutex_);
  if (auto rv = string_at(object, kResourceVersion); !rv.empty()) status_.resource_version = rv;
  status_.last_event = std::chrono::steady_clock::now();
}

Informer::WatchEnd Informer::watch_once(bool& established) {
  static thread_local std::mt19937 random{std::random_device{}()};
  // Like client-go: a random timeout between 1x and 2x, so replicas do not renew in step.
  const auto timeout = options_.watch_timeout.count() +
                       std::uniform_int_distribution<long>(0, std::max<long>(0, options_.watch_timeout.count()))(random);
  std::string path = options_.path + "?watch=1&allowWatchBookmarks=true&resourceVersion=" +
                     kube_path_escape(status().resource_version) + "&timeoutSeconds=" + std::to_string(timeout);
  if (!options_.field_selector.empty()) path += "&fieldSelector=" + kube_path_escape(options_.field_selector);

  WatchEnd end = WatchEnd::Ended;
  std::string buffer;
  auto on_status = [&](int status) {
    if (status < 200 || status >= 300) return;
    established = true;
    std::lock_guard lock(status_mutex_);
    status_.broken_since.reset();  // established: events flow from here
  };
  auto on_data = [&](std::string_view data) {
    buffer.append(data);
    std::size_t start = 0;
    for (std::size_t newline; (newline = buffer.find('\n', start)) != std::string::npos; start = newline + 1) {
      std::string_view line(buffer.data() + start, newline - start);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
      if (line.empty()) continue;
      auto event = Json::parse(line, nullptr, false);
      if (!event.is_object()) {
        end = WatchEnd::Failed;
        std::lock_guard lock(status_mutex_);
        status_.last_error = "watch: an event is not a JSON object";
        break;
      }
      apply(event, end);
      if (end != WatchEnd::Ended) break;
    }
    buffer.erase(0, start);
    return end == WatchEnd::Ended && !stopping_;
  };
  KubeResponse response = client_.stream(path, options_.read_timeout, on_status, on_data, cancel_);
  if (stopping_) return WatchEnd::Stopped;
  if (end == WatchEnd::Gone || response.status == 410) {
    mark_broken("watch: 410 Gone (resourceVersion " + status().resource_version + " expired)");
    return WatchEnd::Gone;
  }
  if (end == WatchEnd::Failed) {
    mark_broken(status().last_error);
    return WatchEnd::Failed;
  }
  if (!response.transport_error.empty()) {
    mark_broken("watch: " + response.transport_error);
    return WatchEnd::Failed;
  }
  if (response.status < 200 || response.status >= 300) {
    mark_broken("watch: " + kube_error_summary(response.status, response.body));
    return WatchEnd::Failed;
  }
  // The server ended the stream (timeoutSeconds): resume at once from where we are.
  std::lock_guard lock(status_mutex_);
  if (!status_.broken_since) status_.broken_since = std::chrono::steady_clock::now();
  return WatchEnd::Ended;
}

void Informer::run() {
  std::mt19937 random{std::random_device{}()};
  auto backoff = options_.backoff_initial;
  // Full backoff at most, at least half of it: jitter spreads the replicas' reconnects.
  auto pause = [&] {
    const auto delay = std::uniform_int_distribution<long long>(backoff.count() / 2, backoff.count())(random);
    backoff = std::min(backoff * 2, options_.backoff_max);
    return wait(std::chrono::milliseconds(delay));
  };
  bool need_list = true;
  while (!stopping_) {
    if (need_list) {
      if (!list_all()) {
        if (stopping_) return;
        spdlog::warn("watch {}: {}; retrying in up to {} ms", options_.name, status().last_error, backoff.count());
        if (!pause()) return;
        continue;
      }
      need_list = false;
      backoff = options_.backoff_initial;
    }
    bool established = false;
    const auto started = std::chrono::steady_clock::now();
    const WatchEnd end = watch_once(established);
    const bool brief = std::chrono::steady_clock::now() - started < std::chrono::seconds(1);
    if (established) backoff = options_.backoff_initial;  // the server was fine until now
    switch (end) {
      case WatchEnd::Stopped: return;
      case WatchEnd::Gone:
        spdlog::info("watch {}: resourceVersion expired (410 Gone), listing again", options_.name);
        need_list = true;
        break;
      case WatchEnd::Ended:
        // A server that ends every stream at once must not make this a busy loop.
        if (brief && !pause()) return;
        break;
      case WatchEnd::Failed:
        spdlog::warn("watch {}: {}; reconnecting in up to {} ms", options_.name, status().last_error, backoff.count());
        if (!pause()) return;
        break;
    }
  }
}

}  // namespace sizeguard
