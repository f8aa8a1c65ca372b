#include "fake_apiserver.h"

#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <variant>

#include <httplib.h>

#include "webhook/devcerts.h"

namespace sizeguard::test {
namespace {

std::string reason_for(int code) {
  switch (code) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 409: return "Conflict";
    case 410: return "Expired";
    case 422: return "Invalid";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    case 504: return "Timeout";
    default: return "Unknown";
  }
}

void send_status(httplib::Response& response, int code, const std::string& reason, const std::string& message) {
  response.status = code;
  response.set_content(kube_status(code, reason, message).dump(), "application/json");
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : path) {
    if (c == '/') {
      if (!current.empty()) parts.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) parts.push_back(std::move(current));
  return parts;
}

std::string trim(const std::string& text) {
  auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

// Splits on commas outside parentheses.
std::vector<std::string> split_requirements(const std::string& selector) {
  std::vector<std::string> parts;
  std::string current;
  int depth = 0;
  for (char c : selector) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      parts.push_back(trim(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  parts.push_back(trim(current));
  parts.erase(std::remove(parts.begin(), parts.end(), std::string()), parts.end());
  return parts;
}

// A label or field requirement.
struct Requirement {
  enum class Op { Equals, NotEquals, In, NotIn, Exists, NotExists } op = Op::Equals;
  std::string key;
  std::set<std::string> values;
};

// "key!=value", "key=value" or "key==value" into r; false when it is none of them.
bool parse_comparison(const std::string& text, Requirement& r) {
  if (auto ne = text.find("!="); ne != std::string::npos) {
    r.op = Requirement::Op::NotEquals;
    r.key = trim(text.substr(0, ne));
    r.values.insert(trim(text.substr(ne + 2)));
    return true;
  }
  if (auto eq = text.find('='); eq != std::string::npos) {
    r.op = Requirement::Op::Equals;
    r.key = trim(text.substr(0, eq));
    std::size_t skip = (eq + 1 < text.size() && text[eq + 1] == '=') ? 2 : 1;
    r.values.insert(trim(text.substr(eq + skip)));
    return true;
  }
  return false;
}

std::variant<std::vector<Requirement>, std::string> parse_label_selector(const std::string& selector) {
  std::vector<Requirement> out;
  for (const auto& text : split_requirements(selector)) {
    Requirement r;
    if (text[0] == '!') {
      r.op = Requirement::Op::NotExists;
      r.key = trim(text.substr(1));
    } else if (auto paren = text.find('('); paren != std::string::npos) {
      if (text.back() != ')') return "invalid label selector requirement \"" + text + "\"";
      std::istringstream words(text.substr(0, paren));
      std::string op;
      words >> r.key >> op;
      if (op == "in") {
        r.op = Requirement::Op::In;
      } else if (op == "notin") {
        r.op = Requirement::Op::NotIn;
      } else {
        return "invalid label selector operator \"" + op + "\" in \"" + text + "\"";
      }
      std::string list = text.substr(paren + 1, text.size() - paren - 2);
      std::istringstream values(list);
      for (std::string value; std::getline(values, value, ',');) r.values.insert(trim(value));
    } else if (!parse_comparison(text, r)) {
      r.op = Requirement::Op::Exists;
      r.key = text;
    }
    if (r.key.empty()) return "invalid label selector requirement \"" + text + "\"";
    out.push_back(std::move(r));
  }
  return out;
}

std::variant<std::vector<Requirement>, std::string> parse_field_selector(const std::string& selector) {
  std::vector<Requirement> out;
  for (const auto& text : split_requirements(selector)) {
    Requirement r;
    if (!parse_comparison(text, r)) {
      return "invalid field selector requirement \"" + text + "\"";
    }
    if (r.key.empty()) return "invalid field selector requirement \"" + text + "\"";
    out.push_back(std::move(r));
  }
  return out;
}

bool matches_labels(const Json& object, const std::vector<Requirement>& requirements) {
  const Json* labels = nullptr;
  if (object.contains("metadata") && object["metadata"].is_object() && object["metadata"].contains("labels") &&
      object["metadata"]["labels"].is_object()) {
    labels = &object["metadata"]["labels"];
  }
  for (const auto& r : requirements) {
    std::optional<std::string> value;
    if (labels && labels->contains(r.key) && (*labels)[r.key].is_string()) value = (*labels)[r.key].get<std::string>();
    bool ok = false;
    switch (r.op) {
      case Requirement::Op::Equals: ok = value && r.values.count(*value); break;
      case Requirement::Op::In: ok = value && r.values.count(*value); break;
      case Requirement::Op::NotEquals: ok = !value || !r.values.count(*value); break;
      case Requirement::Op::NotIn: ok = !value || !r.values.count(*value); break;
      case Requirement::Op::Exists: ok = value.has_value(); break;
      case Requirement::Op::NotExists: ok = !value.has_value(); break;
    }
    if (!ok) return false;
  }
  return true;
}

std::string field_value(const Json& object, const std::string& field) {
  const Json* current = &object;
  std::istringstream parts(field);
  for (std::string part; std::getline(parts, part, '.');) {
    if (!current->is_object() || !current->contains(part)) {
      current = nullptr;
      break;
    }
    current = &(*current)[part];
  }
  if (current && current->is_string()) return current->get<std::string>();
  if (current && !current->is_null() && !current->is_object() && !current->is_array()) return current->dump();
  if (field == "status.phase") return "Pending";  // a pod not yet scheduled
  return "";
}

bool matches_fields(const Json& object, const std::vector<Requirement>& requirements) {
  for (const auto& r : requirements) {
    const std::string value = field_value(object, r.key);
    bool equal = r.values.count(value) > 0;
    if (r.op == Requirement::Op::Equals ? !equal : equal) return false;
  }
  return true;
}

std::string kind_for(const std::string& resource) {
  static const std::map<std::string, std::string> known = {
      {"pods", "Pod"}, {"namespaces", "Namespace"}, {"deployments", "Deployment"},
      {"statefulsets", "StatefulSet"}, {"daemonsets", "DaemonSet"}, {"replicasets", "ReplicaSet"},
      {"jobs", "Job"}, {"cronjobs", "CronJob"}, {"configmaps", "ConfigMap"}, {"secrets", "Secret"},
      {"services", "Service"}, {"limitranges", "LimitRange"}, {"resourcequotas", "ResourceQuota"},
      {"nodes", "Node"}};
  if (auto found = known.find(resource); found != known.end()) return found->second;
  std::string kind = resource;
  if (!kind.empty() && kind.back() == 's') kind.pop_back();
  if (!kind.empty()) kind[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(kind[0])));
  return kind;
}

// "deployments.apps" as the apiserver names a group resource in messages.
std::string qualified(const std::string& prefix, const std::string& resource) {
  auto parts = split_path(prefix);
  if (parts.size() == 3 && parts[0] == "apis") return resource + "." + parts[1];
  return resource;
}

// Calls visit(fd, local_port, peer_port) for each IPv4 socket this process holds (peer_port
// 0 when not connected, e.g. listening) until it returns true: httplib does not hand out
// the sockets its workers and listener use. False when /proc cannot be read.
template <class Visit>
bool for_each_inet_socket(Visit visit) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return false;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || fd < 0 || fd == dirfd(dir)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (local.ss_family != AF_INET) continue;
    const bool connected = getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
                           peer.ss_family == AF_INET;
    const int local_port = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    const int peer_port = connected ? ntohs(reinterpret_cast<sockaddr_in*>(&peer)->sin_port) : 0;
    if (visit(static_cast<int>(fd), local_port, peer_port)) break;
  }
  closedir(dir);
  return true;
}

// Shuts down the server-side socket of this request (found by its local and peer ports),
// so the client sees the connection closed without a response.
bool drop_connection(const httplib::Request& request) {
  bool dropped = false;
  for_each_inet_socket([&](int fd, int local_port, int peer_port) {
    if (local_port != request.local_port || peer_port != request.remote_port) return false;
    ::shutdown(fd, SHUT_RDWR);
    return dropped = true;
  });
  return dropped;
}

// httplib listens with a backlog of 5, so a burst of concurrent connects loses SYNs and
// stalls for the 1 s retransmit. Re-listen on our socket with a real backlog.
void widen_listen_backlog(int port) {
  for_each_inet_socket([&](int fd, int local_port, int peer_port) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (local_port != port || peer_port != 0) return false;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) return false;
    ::listen(fd, 128);
    return true;
  });
}

}  // namespace

Json kube_status(int code, const std::string& reason, const std::string& message) {
  return Json{{"kind", "Status"},     {"apiVersion", "v1"}, {"metadata", Json::object()},
              {"status", "Failure"},  {"message", message}, {"reason", reason},
              {"code", code}};
}

FakeApiServer::FakeApiServer(std::string token, int idle_timeout_seconds) : token_(std::move(token)) {
  directory_ = make_private_temp_directory("sizeguard-fake-apiserver");
  auto certs = make_dev_certificates(directory_);
  {
    std::ifstream in(certs.ca_cert, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    ca_pem_ = out.str();
  }
  server_ = std::make_unique<httplib::SSLServer>(certs.server_cert.c_str(), certs.server_key.c_str());
  if (!server_->is_valid()) throw std::runtime_error("fake apiserver: cannot load the serving certificate");
  server_->set_keep_alive_timeout(idle_timeout_seconds);
  // Watch streams and open keep-alive connections hold a worker each: tests with dozens
  // of concurrent clients need more than httplib's default 8.
  server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
  server_->set_tcp_nodelay(true);
  server_->set_keep_alive_max_count(1000);
  server_->set_read_timeout(std::chrono::seconds(5));
  server_->set_write_timeout(std::chrono::seconds(5));
  auto handler = [this](const httplib::Request& request, httplib::Response& response) { handle(request, response); };
  server_->Get(".*", handler);
  server_->Post(".*", handler);
  server_->Put(".*", handler);
  server_->Delete(".*", handler);
  server_->Patch(".*", handler);
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("fake apiserver: cannot bind 127.0.0.1");
  widen_listen_backlog(port_);
  thread_ = std::thread([this] {
    // Worker threads inherit this mask: a client closing mid-write must not kill the process.
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    server_->listen_after_bind();
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

FakeApiServer::~FakeApiServer() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(directory_, ec);
}

void FakeApiServer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  watch_wake_.notify_all();
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string FakeApiServer::url() const { return "https://127.0.0.1:" + std::to_string(port_); }
std::filesystem::path FakeApiServer::ca_file() const { return directory_ / "ca.crt"; }

void FakeApiServer::write_kubeconfig(const std::filesystem::path& path) const {
  std::ofstream(path) << "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n"
                         "  cluster:\n    server: " << url() << "\n    certificate-authority: " << ca_file().string()
                      << "\nusers:\n- name: u\n  user:\n    token: " << token()
                      << "\ncontexts:\n- name: fake\n  context: {cluster: fake, user: u}\n";
}

std::string FakeApiServer::token() const {
  std::lock_guard lock(mutex_);
  return token_;
}

void FakeApiServer::set_token(std::string token) {
  std::lock_guard lock(mutex_);
  token_ = std::move(token);
}

Json FakeApiServer::put(const std::string& api_prefix, const std::string& resource, const std::string& ns,
                        Json object) {
  std::lock_guard lock(mutex_);
  const std::string name = object.value("/metadata/name"_json_pointer, std::string());
  if (name.empty()) throw std::invalid_argument("FakeApiServer::put: object has no metadata.name");
  if (!ns.empty()) object["metadata"]["namespace"] = ns;
  return store_locked(Key{api_prefix, ns, resource, name}, std::move(object));
}

Json FakeApiServer::store_locked(const Key& key, Json object) {
  object["metadata"]["resourceVersion"] = std::to_string(++resource_version_);
  Event event{resource_version_, "ADDED", key, object, std::nullopt};
  if (auto found = objects_.find(key); found != objects_.end()) {
    event.type = "MODIFIED";
    event.old = found->second;
  }
  objects_[key] = object;
  events_.push_back(std::move(event));
  watch_wake_.notify_all();
  return object;
}

std::optional<Json> FakeApiServer::erase_locked(const Key& key) {
  auto found = objects_.find(key);
  if (found == objects_.end()) return std::nullopt;
  Json object = std::move(found->second);
  objects_.erase(found);
  ++resource_version_;
  Json deleted = object;
  deleted["metadata"]["resourceVersion"] = std::to_string(resource_version_);
  events_.push_back(Event{resource_version_, "DELETED", key, deleted, object});
  watch_wake_.notify_all();
  return object;
}

std::optional<Json> FakeApiServer::get(const std::string& api_prefix, const std::string& resource,
                                       const std::string& ns, const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto found = objects_.find(Key{api_prefix, ns, resource, name});
  if (found == objects_.end()) return std::nullopt;
  return found->second;
}

bool FakeApiServer::remove(const std::string& api_prefix, const std::string& resource, const std::string& ns,
                           const std::string& name) {
  std::lock_guard lock(mutex_);
  return erase_locked(Key{api_prefix, ns, resource, name}).has_value();
}

void FakeApiServer::compact() {
  std::lock_guard lock(mutex_);
  compacted_ = resource_version_;
}

void FakeApiServer::set_gone_as_http_status(bool http) {
  std::lock_guard lock(mutex_);
  gone_as_http_ = http;
}

void FakeApiServer::set_watch_heartbeats(bool on) {
  std::lock_guard lock(mutex_);
  heartbeats_ = on;
}

void FakeApiServer::drop_watches() {
  {
    std::lock_guard lock(mutex_);
    ++drop_generation_;
  }
  watch_wake_.notify_all();
}

void FakeApiServer::end_watches() {
  {
    std::lock_guard lock(mutex_);
    ++end_generation_;
  }
  watch_wake_.notify_all();
}

void FakeApiServer::send_bookmarks() {
  {
    std::lock_guard lock(mutex_);
    ++bookmark_generation_;
  }
  watch_wake_.notify_all();
}

int FakeApiServer::open_watches() const {
  std::lock_guard lock(mutex_);
  return open_watches_;
}

int FakeApiServer::watches_started() const {
  std::lock_guard lock(mutex_);
  return watches_started_;
}

std::size_t FakeApiServer::connections_seen() const {
  std::lock_guard lock(mutex_);
  return client_ports_.size();
}

int FakeApiServer::open_connections() const {
  int count = 0;
  const bool read = for_each_inet_socket([&](int, int local_port, int peer_port) {
    if (local_port == port_ && peer_port != 0) ++count;
    return false;
  });
  return read ? count : -1;
}

void FakeApiServer::set_delay(std::chrono::milliseconds delay) {
  std::lock_guard lock(mutex_);
  delay_ = delay;
}

void FakeApiServer::fail_next(int status, int count, std::string message) {
  std::lock_guard lock(mutex_);
  fail_status_ = status;
  fail_count_ = count;
  fail_message_ = std::move(message);
}

void FakeApiServer::set_drop_connections(bool drop) {
  std::lock_guard lock(mutex_);
  drop_ = drop;
}

std::size_t FakeApiServer::request_count() const {
  std::lock_guard lock(mutex_);
  return requests_.size();
}

std::vector<std::string> FakeApiServer::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

void FakeApiServer::clear_requests() {
  std::lock_guard lock(mutex_);
  requests_.clear();
}

void FakeApiServer::handle(const httplib::Request& request, httplib::Response& response) {
  std::chrono::milliseconds delay;
  bool drop;
  std::string token;
  {
    std::lock_guard lock(mutex_);
    requests_.push_back(request.method + " " + request.target);
    client_ports_.insert(request.remote_port);
    delay = delay_;
    drop = drop_;
    token = token_;
  }
  if (drop) {
    drop_connection(request);
    return;
  }
  auto until = std::chrono::steady_clock::now() + delay;
  while (!stopping_ && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(10), until - std::chrono::steady_clock::now()));
  }
  if (request.get_header_value("Authorization") != "Bearer " + token) {
    send_status(response, 401, "Unauthorized", "Unauthorized");
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (fail_count_ > 0) {
      --fail_count_;
      std::string message = fail_message_.empty() ? "injected failure (" + reason_for(fail_status_) + ")" : fail_message_;
      send_status(response, fail_status_, reason_for(fail_status_), message);
      return;
    }
  }
  route(request, response);
}

void FakeApiServer::route(const httplib::Request& request, httplib::Response& response) {
  auto parts = split_path(request.path);
  std::string prefix;
  std::size_t next = 0;
  if (parts.size() >= 2 && parts[0] == "api") {
    prefix = parts[0] + "/" + parts[1];
    next = 2;
  } else if (parts.size() >= 3 && parts[0] == "apis") {
    prefix = parts[0] + "/" + parts[1] + "/" + parts[2];
    next = 3;
  } else {
    send_status(response, 404, "NotFound", "the server could not find the requested resource");
    return;
  }
  std::vector<std::string> rest(parts.begin() + static_cast<std::ptrdiff_t>(next), parts.end());
  std::string ns, resource, name;
  if (rest.size() == 1) {
    resource = rest[0];
  } else if (rest.size() == 2) {
    resource = rest[0];
    name = rest[1];
  } else if (rest.size() == 3 && rest[0] == "namespaces") {
    ns = rest[1];
    resource = rest[2];
  } else if (rest.size() == 4 && rest[0] == "namespaces") {
    ns = rest[1];
    resource = rest[2];
    name = rest[3];
  } else {
    send_status(response, 404, "NotFound", "the server could not find the requested resource");
    return;
  }
  const std::string what = qualified(prefix, resource);
  const bool collection = name.empty();
  if (request.method == "GET" && collection &&
      (request.get_param_value("watch") == "1" || request.get_param_value("watch") == "true")) {
    return watch(request, response, prefix, ns, resource);
  }

  std::lock_guard lock(mutex_);
  const Key key{prefix, ns, resource, name};
  auto not_found = [&] { send_status(response, 404, "NotFound", what + " \"" + name + "\" not found"); };
  auto parse_body = [&]() -> std::optional<Json> {
    auto body = Json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      send_status(response, 400, "BadRequest", "the request body is not a JSON object");
      return std::nullopt;
    }
    return body;
  };
  auto store = [&](Json object, const std::string& object_name) {
    if (!ns.empty()) object["metadata"]["namespace"] = ns;
    return store_locked(Key{prefix, ns, resource, object_name}, std::move(object));
  };

  if (request.method == "GET" && !collection) {
    auto found = objects_.find(key);
    if (found == objects_.end()) return not_found();
    response.set_content(found->second.dump(), "application/json");
  } else if (request.method == "GET") {
    std::vector<Requirement> labels, fields;
    if (request.has_param("labelSelector")) {
      auto parsed = parse_label_selector(request.get_param_value("labelSelector"));
      if (auto* error = std::get_if<std::string>(&parsed)) {
        return send_status(response, 400, "BadRequest", "unable to parse requirement: " + *error);
      }
      labels = std::get<std::vector<Requirement>>(parsed);
    }
    if (request.has_param("fieldSelector")) {
      auto parsed = parse_field_selector(request.get_param_value("fieldSelector"));
      if (auto* error = std::get_if<std::string>(&parsed)) return send_status(response, 400, "BadRequest", *error);
      fields = std::get<std::vector<Requirement>>(parsed);
    }
    Json items = Json::array();
    for (const auto& [k, object] : objects_) {
      if (std::get<0>(k) != prefix || std::get<2>(k) != resource) continue;
      if (!ns.empty() && std::get<1>(k) != ns) continue;
      if (matches_labels(object, labels) && matches_fields(object, fields)) items.push_back(object);
    }
    Json metadata = {{"resourceVersion", std::to_string(resource_version_)}};
    // Pages: `limit` items from the offset the `continue` token carries.
    const std::size_t limit = std::strtoull(request.get_param_value("limit").c_str(), nullptr, 10);
    if (limit > 0) {
      const std::size_t offset = std::strtoull(request.get_param_value("continue").c_str(), nullptr, 10);
      Json page = Json::array();
      for (std::size_t i = offset; i < items.size() && i < offset + limit; ++i) page.push_back(items[i]);
      if (offset + limit < items.size()) metadata["continue"] = std::to_string(offset + limit);
      items = std::move(page);
    }
    Json list = {{"kind", kind_for(resource) + "List"},
                 {"apiVersion", prefix.substr(prefix.find('/') + 1)},
                 {"metadata", metadata},
                 {"items", items}};
    response.set_content(list.dump(), "application/json");
  } else if (request.method == "POST" && collection) {
    auto body = parse_body();
    if (!body) return;
    const std::string object_name = body->value("/metadata/name"_json_pointer, std::string());
    if (object_name.empty()) return send_status(response, 422, "Invalid", what + ": metadata.name: Required value");
    if (objects_.count(Key{prefix, ns, resource, object_name})) {
      return send_status(response, 409, "AlreadyExists", what + " \"" + object_name + "\" already exists");
    }
    response.status = 201;
    response.set_content(store(std::move(*body), object_name).dump(), "application/json");
  } else if (request.method == "PUT" && !collection) {
    auto body = parse_body();
    if (!body) return;
    auto found = objects_.find(key);
    if (found == objects_.end()) return not_found();
    const std::string body_name = body->value("/metadata/name"_json_pointer, std::string());
    if (!body_name.empty() && body_name != name) {
      return send_status(response, 400, "BadRequest",
                         "the name of the object (" + body_name + ") does not match the name on the URL (" + name + ")");
    }
    const std::string wanted = body->value("/metadata/resourceVersion"_json_pointer, std::string());
    const std::string stored = found->second.value("/metadata/resourceVersion"_json_pointer, std::string());
    if (!wanted.empty() && wanted != stored) {
      return send_status(response, 409, "Conflict",
                         "Operation cannot be fulfilled on " + what + " \"" + name +
                             "\": the object has been modified; please apply your changes to the latest version "
                             "and try again");
    }
    (*body)["metadata"]["name"] = name;
    response.set_content(store(std::move(*body), name).dump(), "application/json");
  } else if (request.method == "DELETE" && !collection) {
    auto object = erase_locked(key);
    if (!object) return not_found();
    response.set_content(object->dump(), "application/json");
  } else {
    send_status(response, 405, "MethodNotAllowed",
                "the server does not allow this method on the requested resource");
  }
}

void FakeApiServer::watch(const httplib::Request& request, httplib::Response& response, const std::string& prefix,
                          const std::string& ns, const std::string& resource) {
  std::vector<Requirement> labels, fields;
  if (request.has_param("labelSelector")) {
    auto parsed = parse_label_selector(request.get_param_value("labelSelector"));
    if (auto* error = std::get_if<std::string>(&parsed)) return send_status(response, 400, "BadRequest", *error);
    labels = std::get<std::vector<Requirement>>(parsed);
  }
  if (request.has_param("fieldSelector")) {
    auto parsed = parse_field_selector(request.get_param_value("fieldSelector"));
    if (auto* error = std::get_if<std::string>(&parsed)) return send_status(response, 400, "BadRequest", *error);
    fields = std::get<std::vector<Requirement>>(parsed);
  }
  auto matches = [labels, fields, prefix, ns, resource](const Key& key, const Json& object) {
    return std::get<0>(key) == prefix && std::get<2>(key) == resource && (ns.empty() || std::get<1>(key) == ns) &&
           matches_labels(object, labels) && matches_fields(object, fields);
  };
  auto line = [](const std::string& type, const Json& object) {
    return Json{{"type", type}, {"object", object}}.dump() + "\n";
  };
  const std::string rv_text = request.get_param_value("resourceVersion");
  const std::uint64_t from = rv_text.empty() ? 0 : std::strtoull(rv_text.c_str(), nullptr, 10);
  const bool bookmarks = request.get_param_value("allowWatchBookmarks") == "true";
  const long timeout = request.has_param("timeoutSeconds") ? std::atol(request.get_param_value("timeoutSeconds").c_str()) : 0;
  const auto deadline = timeout > 0 ? std::chrono::steady_clock::now() + std::chrono::seconds(timeout)
                                    : std::chrono::steady_clock::time_point::max();
  const int local_port = request.local_port, remote_port = request.remote_port;

  std::lock_guard lock(mutex_);
  const std::string gone_message = "too old resource version: " + rv_text + " (" + std::to_string(compacted_) + ")";
  if (from != 0 && from < compacted_ && gone_as_http_) return send_status(response, 410, "Expired", gone_message);
  struct State {
    std::uint64_t cursor = 0;
    std::string pending;  // lines to write first
    bool gone = false;
    int drop, end, bookmark;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  auto state = std::make_shared<State>(State{from, "", false, drop_generation_, end_generation_, bookmark_generation_});
  if (from != 0 && from < compacted_) {
    state->pending = line("ERROR", kube_status(410, "Expired", gone_message));
    state->gone = true;
  } else if (from == 0) {
    for (const auto& [key, object] : objects_) {
      if (matches(key, object)) state->pending += line("ADDED", object);
    }
    state->cursor = resource_version_;
  }
  ++watches_started_;
  ++open_watches_;
  response.set_chunked_content_provider(
      "application/json",
      [this, state, matches, line, bookmarks, deadline, local_port, remote_port](std::size_t, httplib::DataSink& sink) {
        std::unique_lock lock(mutex_);
        if (state->pending.empty() && !state->gone) {
          watch_wake_.wait_for(lock, std::chrono::milliseconds(50), [&] {
            return stopping_ || drop_generation_ != state->drop || end_generation_ != state->end ||
                   bookmark_generation_ != state->bookmark || (!events_.empty() && events_.back().resource_version > state->cursor);
          });
        }
        if (drop_generation_ != state->drop) {
          --open_watches_;
          lock.unlock();
          httplib::Request where;
          where.local_port = local_port;
          where.remote_port = remote_port;
          drop_connection(where);
          return false;
        }
        std::string out = std::move(state->pending);
        state->pending.clear();
        for (const auto& event : events_) {
          if (event.resource_version <= state->cursor) continue;
          const bool now_matches = event.type != "DELETED" && matches(event.key, event.object);
          const bool matched = event.old && matches(event.key, *event.old);
          if (now_matches) {
            out += line(matched ? "MODIFIED" : "ADDED", event.object);
          } else if (matched) {
            out += line("DELETED", event.object);
          }
          state->cursor = event.resource_version;
        }
        if (bookmark_generation_ != state->bookmark) {
          state->bookmark = bookmark_generation_;
          if (bookmarks) {
            state->cursor = std::max(state->cursor, resource_version_);
            out += line("BOOKMARK", Json{{"kind", "Status"},
                                        {"metadata", {{"resourceVersion", std::to_string(resource_version_)}}}});
          }
        }
        const bool finished = stopping_ || state->gone || end_generation_ != state->end ||
                              std::chrono::steady_clock::now() >= deadline;
        if (finished) --open_watches_;
        const bool heartbeats = heartbeats_;
        lock.unlock();
        // A newline now and then finds a client that went away (real streams send bookmarks).
        const auto now = std::chrono::steady_clock::now();
        if (out.empty() && !finished && heartbeats && now - state->last_write > std::chrono::seconds(1)) out = "\n";
        if (!out.empty()) {
          state->last_write = now;
          if (!sink.write(out.data(), out.size())) {
            if (!finished) {
              std::lock_guard relock(mutex_);
              --open_watches_;
            }
            return false;
          }
        }
        if (finished) sink.done();
        return true;
      });
}

KubeConfig FakeApiServer::client_config(std::chrono::milliseconds timeout) const {
  KubeConfig config;
  config.server = url();
  config.ca_pem = ca_pem();
  config.token = token();
  config.timeout = timeout;
  config.source = "fake apiserver " + url();
  return config;
}

}  // namespace sizeguard::test
