// sizeguard-loadgen: replays the real kube-apiserver AdmissionReview fixtures against a webhook
// over TLS keep-alive, at a fixed rate (open loop) or at the maximum rate (closed loop), and
// reports throughput, latency percentiles, errors, client CPU and, given --server-pid and
// --metrics-url, the server's CPU, RSS and server-side latency histogram.
//
// The client shares the machine with the server, so it is lean: one thread and one blocking
// TLS connection per --connections, request bytes built once per fixture (only the uid is
// rewritten per request, so every answer can be matched to its request), and a response
// parser that reads the status line, Content-Length and the body, nothing else.
//
// Fixed rate: each connection has its own schedule (rate / connections) and latency is measured
// from the intended send time, so a stalled server is not hidden by the client waiting for it
// (no coordinated omission); the service time (from the actual send) is reported too.
//
// --hostile KIND turns it into a misbehaving client for tests/soak/hostile.sh: slowloris
// (connections trickling one byte a second), oversize bodies, 100,000-deep JSON, a Pod with
// 10,000 containers, invalid UTF-8.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

using json = nlohmann::json;

// ------------------------------------------------------------------------------------------
// Time: CLOCK_MONOTONIC nanoseconds, absolute sleeps (no drift over a long schedule).

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until_ns(int64_t t) {
  timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

double seconds(int64_t ns) { return double(ns) / 1e9; }

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    text += text.empty() ? "" : "; ";
    text += buffer;
  }
  return text.empty() ? std::string(std::strerror(errno)) : text;
}

// ------------------------------------------------------------------------------------------
// Target and TLS.

struct Target {
  std::string host;
  int port = 0;
  sockaddr_storage address{};
  socklen_t address_length = 0;
};

Target parse_https_url(const std::string& url) {
  const std::string prefix = "https://";
  if (url.rfind(prefix, 0) != 0) throw std::invalid_argument("--url must start with https://: " + url);
  std::string rest = url.substr(prefix.size());
  rest = rest.substr(0, rest.find('/'));
  Target t;
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos) throw std::invalid_argument("--url: unbalanced [ in " + url);
    t.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    t.host = rest.substr(0, colon);
    if (colon != std::string::npos) port = rest.substr(colon + 1);
  }
  t.port = port.empty() ? 443 : std::stoi(port);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(t.host.c_str(), std::to_string(t.port).c_str(), &hints, &found); rc != 0) {
    throw std::invalid_argument("--url: cannot resolve " + t.host + ": " + gai_strerror(rc));
  }
  std::memcpy(&t.address, found->ai_addr, found->ai_addrlen);
  t.address_length = found->ai_addrlen;
  freeaddrinfo(found);
  return t;
}

SSL_CTX* make_client_context(const std::string& ca_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) throw std::runtime_error("SSL_CTX_new: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // AES-128-GCM first, as sizeguard's server preference, so the floor (which takes the client's
  // order) negotiates the same suite and the comparison is like for like.
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  // Like the apiserver's Go client: no session resumption, so a reconnect is a full handshake.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx) != 1
                      : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    throw std::runtime_error("cannot load CA " + ca_file + ": " + openssl_errors());
  }
  return ctx;
}

enum class ReadStatus { Ok, Closed, Timeout, Broken };

// One blocking TLS connection; every call is bounded by the socket timeouts.
class Connection {
 public:
  ~Connection() { close(); }

  bool open(const Target& target, SSL_CTX* ctx, int timeout_ms, std::string& error, bool& timed_out) {
    close();
    timed_out = false;
    fd_ = ::socket(target.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return fail(error, std::string("socket: ") + std::strerror(errno));
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&target.address), target.address_length) != 0) {
      timed_out = errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT;
      return fail(error, std::string("connect: ") + std::strerror(errno));
    }
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, target.host.c_str());
    SSL_set1_host(ssl_, target.host.c_str());
    ERR_clear_error();
    if (SSL_connect(ssl_) != 1) {
      timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
      return fail(error, "TLS handshake: " + openssl_errors());
    }
    return true;
  }

  void close() {
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    ssl_ = nullptr;
    fd_ = -1;
    buffer_.clear();
  }

  bool is_open() const { return ssl_ != nullptr; }
  // The server has closed its side (FIN or reset seen), without reading anything.
  bool peer_closed() const {
    pollfd p{fd_, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
  }
  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }

  bool write_all(const char* data, size_t size) {
    size_t done = 0;
    while (done < size) {
      size_t written = 0;
      ERR_clear_error();
      if (SSL_write_ex(ssl_, data + done, size - done, &written) != 1) return false;
      done += written;
    }
    return true;
  }

  // Reads one HTTP/1.1 response with a Content-Length body. `body` points into the buffer
  // and stays valid until the next call.
  ReadStatus read_response(int& status, std::string_view& body, bool& server_closes, bool& encoded) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
    size_t header_end = std::string::npos;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (auto rs = fill(); rs != ReadStatus::Ok) return buffer_.empty() ? rs : (rs == ReadStatus::Timeout ? rs : ReadStatus::Broken);
      if (buffer_.size() > 64 * 1024) return ReadStatus::Broken;
    }
    std::string_view head(buffer_.data(), header_end);
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/") return ReadStatus::Broken;
    status = std::atoi(std::string(head.substr(9, 3)).c_str());
    long content_length = -1;
    server_closes = false;
    encoded = false;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      size_t next = head.find("\r\n", pos + 2);
      std::string_view line = head.substr(pos + 2, (next == std::string_view::npos ? head.size() : next) - pos - 2);
      auto colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string name(line.substr(0, colon));
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (name == "content-length") content_length = std::atol(std::string(value).c_str());
        else if (name == "connection" && (value == "close" || value == "Close")) server_closes = true;
        else if (name == "content-encoding") encoded = true;
        else if (name == "transfer-encoding") return ReadStatus::Broken;  // never sent by the servers we test
      }
      pos = next;
    }
    if (content_length < 0) return ReadStatus::Broken;
    const size_t total = header_end + 4 + static_cast<size_t>(content_length);
    while (buffer_.size() < total) {
      if (auto rs = fill(); rs != ReadStatus::Ok) return rs == ReadStatus::Timeout ? rs : ReadStatus::Broken;
    }
    body = std::string_view(buffer_.data() + header_end + 4, static_cast<size_t>(content_length));
    consumed_ = total;
    return ReadStatus::Ok;
  }

 private:
  bool fail(std::string& error, std::string text) {
    error = std::move(text);
    close();
    return false;
  }

  ReadStatus fill() {
    char chunk[16 * 1024];
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl_, chunk, sizeof chunk, &got) == 1) {
      buffer_.append(chunk, got);
      return ReadStatus::Ok;
    }
    int error = SSL_get_error(ssl_, 0);
    if (error == SSL_ERROR_ZERO_RETURN) return ReadStatus::Closed;
    // SO_RCVTIMEO expiring: OpenSSL sees EAGAIN and reports WANT_READ on a blocking socket.
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE ||
        (error == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))) {
      return ReadStatus::Timeout;
    }
    return ReadStatus::Closed;
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string buffer_;
  size_t consumed_ = 0;
};

// ------------------------------------------------------------------------------------------
// Requests: one template per (fixture, path), the uid rewritten in place per request.

struct RequestTemplate {
  std::string name;  // "<fixture>|<path>"
  std::string bytes;  // request line, headers, body
  std::vector<size_t> uid_offsets;  // where the uid's last 12 characters start (every occurrence)
  std::string uid;  // the fixture's uid
};

constexpr size_t kUidTail = 12;

std::string http_request(const std::string& path, const std::string& host, const std::string& body,
                         const std::string& extra_headers = "") {
  // The headers a kube-apiserver 1.28 sends (request-headers.txt of the fixtures).
  return "POST /" + path + "?timeout=10s HTTP/1.1\r\nHost: " + host +
         "\r\nUser-Agent: kube-apiserver-admission\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nAccept: application/json, */*\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n" +
         extra_headers + "\r\n" + body;
}

RequestTemplate make_template(const std::string& name, const std::string& path, const std::string& host,
                              const std::string& body, const std::string& uid) {
  RequestTemplate t;
  t.name = name + "|" + path;
  t.bytes = http_request(path, host, body);
  t.uid = uid;
  if (uid.size() >= kUidTail) {
    for (size_t at = t.bytes.find(uid); at != std::string::npos; at = t.bytes.find(uid, at + uid.size())) {
      t.uid_offsets.push_back(at + uid.size() - kUidTail);
    }
  }
  return t;
}

// Writes a per-request uid (thread and sequence number in the last 12 hex digits) into the
// template and returns it.
std::string stamp_uid(RequestTemplate& t, uint64_t tag) {
  if (t.uid_offsets.empty()) return t.uid;
  char hex[kUidTail + 1];
  std::snprintf(hex, sizeof hex, "%012llx", static_cast<unsigned long long>(tag & 0xffffffffffffULL));
  for (size_t at : t.uid_offsets) std::memcpy(t.bytes.data() + at, hex, kUidTail);
  return t.uid.substr(0, t.uid.size() - kUidTail) + hex;
}

struct Fixture {
  std::string name, body, uid;
};

std::vector<Fixture> load_fixtures(const std::filesystem::path& dir) {
  std::vector<Fixture> out;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    Fixture f{file.stem().string(), read_file(file), ""};
    auto parsed = json::parse(f.body, nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("request") || !parsed["request"].contains("uid")) {
      throw std::runtime_error(file.string() + ": not an AdmissionReview with request.uid");
    }
    f.uid = parsed["request"]["uid"].get<std::string>();
    out.push_back(std::move(f));
  }
  if (out.empty()) throw std::runtime_error(dir.string() + ": no *.json fixtures");
  return out;
}

// ------------------------------------------------------------------------------------------
// Hostile bodies.

std::string hostile_body(const std::string& kind, const std::vector<Fixture>& fixtures, size_t oversize_bytes,
                         int containers_count) {
  const Fixture* pod = &fixtures.front();
  for (const auto& f : fixtures) {
    if (f.name == "pod-create-from-replicaset") pod = &f;
  }
  if (kind == "oversize") {
    // A valid review padded with a huge annotation, larger than --max-body-bytes.
    json review = json::parse(pod->body);
    review["request"]["object"]["metadata"]["annotations"]["padding"] = std::string(oversize_bytes, 'x');
    return review.dump();
  }
  if (kind == "deep-json") {
    const size_t depth = 100'000;
    return R"({"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":")" + pod->uid +
           R"(","object":)" + std::string(depth, '[') + std::string(depth, ']') + "}}";
  }
  if (kind == "many-containers") {
    json review = json::parse(pod->body);
    json containers = json::array();
    for (int i = 0; i < containers_count; ++i) {
      containers.push_back({{"name", "c" + std::to_string(i)},
                            {"image", "nginx:1.25"},
                            {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "64Mi"}}}}}});
    }
    review["request"]["object"]["spec"]["containers"] = std::move(containers);
    return review.dump();
  }
  if (kind == "bad-utf8") {
    std::string body = pod->body;
    // A label value with bytes that are not UTF-8 (a lone continuation byte, an overlong form).
    auto at = body.find("\"labels\"");
    if (at == std::string::npos) throw std::runtime_error("bad-utf8: the Pod fixture has no labels");
    at = body.find('{', at) + 1;
    body.insert(at, "\"bad\": \"\x80\xc0\xaf\xff\",");
    return body;
  }
  throw std::invalid_argument("--hostile: unknown kind " + kind + " (slowloris, oversize, deep-json, many-containers, bad-utf8)");
}

// ------------------------------------------------------------------------------------------
// Answers.

struct Expected {
  bool allowed = false;
  std::string patch;  // base64 JSONPatch, empty when none
};

struct Answer {
  bool valid = false;
  std::string uid;
  bool allowed = false;
  std::string patch;
  std::string problem;
};

Answer decode_answer(std::string_view body) {
  Answer a;
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    a.problem = "response is not JSON";
    return a;
  }
  if (j.value("kind", "") != "AdmissionReview" || !j.contains("response") || !j["response"].is_object()) {
    a.problem = "not an AdmissionReview with a response";
    return a;
  }
  const auto& r = j["response"];
  if (!r.contains("uid") || !r["uid"].is_string() || !r.contains("allowed") || !r["allowed"].is_boolean()) {
    a.problem = "response.uid or response.allowed missing";
    return a;
  }
  a.valid = true;
  a.uid = r["uid"].get<std::string>();
  a.allowed = r["allowed"].get<bool>();
  if (r.contains("patch") && r["patch"].is_string()) a.patch = r["patch"].get<std::string>();
  return a;
}

// ------------------------------------------------------------------------------------------
// Server-side measurements: /proc and /metrics.

struct ProcSample {
  bool ok = false;
  double cpu_s = 0;
  long rss_kib = 0, hwm_kib = 0;
};

ProcSample sample_proc(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  auto paren = text.rfind(')');
  if (paren == std::string::npos) return s;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(field);
    if (i == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  s.cpu_s = double(utime + stime) / double(sysconf(_SC_CLK_TCK));
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::atol(line.c_str() + 6);
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_kib = std::atol(line.c_str() + 6);
  }
  s.ok = true;
  return s;
}

double client_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Cumulative bucket counts of sizeguard_admission_duration_seconds, summed over webhooks.
struct Histogram {
  bool ok = false;
  std::map<double, double> buckets;  // le -> cumulative count
  double count = 0;
};

Histogram scrape_histogram(const std::string& metrics_url) {
  Histogram h;
  if (metrics_url.empty()) return h;
  httplib::Client client(metrics_url);
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return h;
  const std::string family = "sizeguard_admission_duration_seconds";
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(family, 0) != 0) continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    double value = std::atof(line.c_str() + space + 1);
    if (line.rfind(family + "_bucket{", 0) == 0) {
      auto le = line.find("le=\"");
      if (le == std::string::npos) continue;
      std::string bound = line.substr(le + 4, line.find('"', le + 4) - le - 4);
      double b = bound == "+Inf" ? std::numeric_limits<double>::infinity() : std::atof(bound.c_str());
      h.buckets[b] += value;
    } else if (line.rfind(family + "_count", 0) == 0) {
      h.count += value;
    }
  }
  h.ok = !h.buckets.empty();
  return h;
}

// Like Prometheus' histogram_quantile: linear interpolation inside the bucket.
double histogram_quantile(const std::map<double, double>& buckets, double total, double q) {
  double rank = q * total, lower = 0, below = 0;
  for (const auto& [le, count] : buckets) {
    if (count >= rank) {
      if (std::isinf(le)) return lower;
      return lower + (le - lower) * (count - below == 0 ? 0 : (rank - below) / (count - below));
    }
    lower = le;
    below = count;
  }
  return lower;
}

// ------------------------------------------------------------------------------------------
// Load.

struct Options {
  std::string url, ca, fixtures_dir = SIZEGUARD_APISERVER_FIXTURES;
  std::string paths = "mutate,validate";
  int connections = 16;
  double rate = 0;
  double duration = 10, warmup = 2;
  uint64_t requests = 0;
  int server_pid = 0;
  std::string metrics_url;
  bool json_output = false, expect = false;
  std::string expect_file, save_expect;
  int timeout_ms = 10'000;
  double progress = 0;
  std::string hostile;
  size_t oversize_bytes = 4 * 1024 * 1024;
  int containers = 10'000;
  std::string label;
  std::string pattern;
};

struct Counters {
  uint64_t sent = 0, ok = 0, status_errors = 0, mismatches = 0, connect_failures = 0, timeouts = 0,
           unanswered = 0, broken = 0, reconnects = 0, server_closes = 0, stale = 0, missed = 0;
  std::map<int, uint64_t> statuses;
  void add(const Counters& o) {
    sent += o.sent, ok += o.ok, status_errors += o.status_errors, mismatches += o.mismatches;
    connect_failures += o.connect_failures, timeouts += o.timeouts, unanswered += o.unanswered;
    broken += o.broken, reconnects += o.reconnects, server_closes += o.server_closes, stale += o.stale;
    missed += o.missed;
    for (auto [k, v] : o.statuses) statuses[k] += v;
  }
  // Missed sends count: at a fixed rate, a request never sent because the server held the
  // connection too long is a client not served (and would otherwise hide from the latencies).
  uint64_t errors() const { return status_errors + mismatches + connect_failures + timeouts + unanswered + broken + missed; }
};

struct WorkerResult {
  Counters counters;
  std::vector<int64_t> latency_ns, service_ns;
  int64_t last_done_ns = 0;
  std::vector<std::string> first_errors;
  std::string tls_version, tls_cipher;
};

struct Shared {
  const Options& options;
  const Target& target;
  SSL_CTX* ctx;
  std::vector<RequestTemplate> templates;
  std::map<std::string, Expected> expected;  // by template name; empty = only status and uid checked
  bool check_answers = true;  // hostile bodies: count statuses only
  int64_t start_ns = 0, window_start_ns = 0, window_end_ns = 0;  // window_end 0 = --requests mode
  std::atomic<uint64_t> progress_sent{0}, progress_errors{0};
};

void note_error(WorkerResult& r, const Shared& s, int64_t t, const std::string& text) {
  if (r.first_errors.size() < 5) {
    char prefix[64];
    std::snprintf(prefix, sizeof prefix, "t=%.3fs ", seconds(t - s.start_ns));
    r.first_errors.push_back(prefix + text);
  }
}

constexpr int64_t kMissedGraceNs = 1'000'000'000;

void run_worker(Shared& s, int index, WorkerResult& r) {
  const Options& o = s.options;
  std::vector<RequestTemplate> templates = s.templates;  // own copy: uids are stamped in place
  Connection conn;
  const int n = o.connections;
  const bool fixed = o.rate > 0;
  const int64_t interval = fixed ? int64_t(1e9 * n / o.rate) : 0;
  const int64_t offset = fixed ? int64_t(1e9 * index / o.rate) : 0;
  uint64_t quota = 0;
  if (o.requests > 0) quota = o.requests / n + (uint64_t(index) < o.requests % n ? 1 : 0);
  uint64_t counted = 0;
  const size_t expected_samples = o.requests ? quota : size_t(fixed ? o.duration * o.rate / n * 1.05 + 16 : 100'000);
  r.latency_ns.reserve(expected_samples);
  r.service_ns.reserve(expected_samples);
  uint64_t seq = 0;
  for (uint64_t k = 0;; ++k) {
    int64_t intended = fixed ? s.start_ns + offset + int64_t(k) * interval : now_ns();
    if (fixed && intended > now_ns()) sleep_until_ns(intended);
    if (!fixed) intended = now_ns();
    const bool in_window = intended >= s.window_start_ns;
    if (s.window_end_ns ? intended >= s.window_end_ns : (in_window && counted >= quota)) break;
    if (s.window_end_ns && now_ns() >= s.window_end_ns + kMissedGraceNs) {
      // Time is up (with a grace for late sends, which count through their latency) but the
      // schedule is still behind (a stalled server): the sends still due count as missed.
      if (fixed) r.counters.missed += uint64_t((s.window_end_ns - intended + interval - 1) / interval);
      break;
    }

    RequestTemplate& t = templates[(size_t(index) + k) % templates.size()];
    // Like Go's transport (the apiserver's client), whose reader notices an idle connection the
    // server closed: never write on a connection whose FIN has already arrived, reconnect.
    if (conn.is_open() && conn.peer_closed()) {
      ++r.counters.stale;
      conn.close();
    }
    if (!conn.is_open()) {
      std::string error;
      bool timed_out = false;
      if (!conn.open(s.target, s.ctx, o.timeout_ms, error, timed_out)) {
        ++r.counters.connect_failures;
        s.progress_errors.fetch_add(1, std::memory_order_relaxed);
        note_error(r, s, now_ns(), error);
        if (!fixed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (in_window) ++counted;
        continue;
      }
      ++r.counters.reconnects;
      if (r.tls_version.empty()) {
        r.tls_version = SSL_get_version(conn.ssl());
        r.tls_cipher = SSL_get_cipher_name(conn.ssl());
      }
    }
    const std::string uid = stamp_uid(t, (uint64_t(index) << 40) | (++seq & 0xffffffffffULL));
    const int64_t sent = now_ns();
    ++r.counters.sent;
    s.progress_sent.fetch_add(1, std::memory_order_relaxed);
    int status = 0;
    std::string_view body;
    bool closes = false, encoded = false;
    ReadStatus rs = conn.write_all(t.bytes.data(), t.bytes.size()) ? conn.read_response(status, body, closes, encoded)
                                                                   : ReadStatus::Closed;
    const int64_t done = now_ns();
    r.last_done_ns = std::max(r.last_done_ns, done);
    bool good = false;
    if (rs == ReadStatus::Ok) {
      ++r.counters.statuses[status];
      if (!s.check_answers) {
        good = true;
      } else if (status != 200) {
        ++r.counters.status_errors;
        note_error(r, s, done, t.name + ": HTTP " + std::to_string(status) + ": " + std::string(body.substr(0, 200)));
      } else if (encoded) {
        ++r.counters.mismatches;
        note_error(r, s, done, t.name + ": compressed response (Content-Encoding)");
      } else if (s.expected.empty()) {
        // Cheap check without parsing: the answer carries this request's uid.
        good = body.find(uid) != std::string_view::npos;
        if (!good) {
          ++r.counters.mismatches;
          note_error(r, s, done, t.name + ": response does not carry uid " + uid);
        }
      } else {
        Answer a = decode_answer(body);
        const Expected& e = s.expected.at(t.name);
        std::string problem = !a.valid           ? a.problem
                              : a.uid != uid     ? "response.uid " + a.uid + " != " + uid
                              : a.allowed != e.allowed ? std::string("allowed=") + (a.allowed ? "true" : "false") + ", expected " + (e.allowed ? "true" : "false")
                              : a.patch != e.patch     ? "patch differs from the first pass"
                                                       : "";
        good = problem.empty();
        if (!good) {
          ++r.counters.mismatches;
          note_error(r, s, done, t.name + ": " + problem);
        }
      }
      if (closes) {
        ++r.counters.server_closes;
        conn.close();
      }
    } else {
      if (rs == ReadStatus::Timeout) ++r.counters.timeouts;
      else if (rs == ReadStatus::Broken) ++r.counters.broken;
      else ++r.counters.unanswered;
      note_error(r, s, done,
                 t.name + (rs == ReadStatus::Timeout  ? ": timed out waiting for the response"
                           : rs == ReadStatus::Broken ? ": malformed or partial response"
                                                      : ": connection closed before any response byte"));
      conn.close();
    }
    if (good) ++r.counters.ok;
    else s.progress_errors.fetch_add(1, std::memory_order_relaxed);
    if (in_window && (s.window_end_ns == 0 || intended < s.window_end_ns)) {
      ++counted;
      r.latency_ns.push_back(done - intended);
      r.service_ns.push_back(done - sent);
    }
  }
}

// First pass on one connection: every template once; records allowed and patch per template.
std::map<std::string, Expected> first_pass(Shared& s) {
  std::map<std::string, Expected> out;
  Connection conn;
  for (auto& t : s.templates) {
    std::string error;
    bool timed_out = false;
    if (!conn.is_open() && !conn.open(s.target, s.ctx, s.options.timeout_ms, error, timed_out)) {
      throw std::runtime_error("first pass: " + error);
    }
    const std::string uid = stamp_uid(t, 0xfffffffffffULL);
    int status = 0;
    std::string_view body;
    bool closes = false, encoded = false;
    if (!conn.write_all(t.bytes.data(), t.bytes.size()) ||
        conn.read_response(status, body, closes, encoded) != ReadStatus::Ok) {
      throw std::runtime_error("first pass: " + t.name + ": no response");
    }
    if (status != 200) throw std::runtime_error("first pass: " + t.name + ": HTTP " + std::to_string(status) + ": " + std::string(body));
    Answer a = decode_answer(body);
    if (!a.valid || a.uid != uid) throw std::runtime_error("first pass: " + t.name + ": bad answer: " + a.problem);
    out[t.name] = Expected{a.allowed, a.patch};
    if (closes) conn.close();
  }
  return out;
}

json percentiles_ms(std::vector<int64_t>& v) {
  if (v.empty()) return json::object();
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return double(v[std::min(v.size() - 1, size_t(q * double(v.size())))]) / 1e6; };
  double sum = 0;
  for (auto x : v) sum += double(x);
  return {{"p50", at(0.5)}, {"p90", at(0.9)}, {"p99", at(0.99)}, {"p999", at(0.999)},
          {"max", double(v.back()) / 1e6}, {"mean", sum / double(v.size()) / 1e6}};
}

// ------------------------------------------------------------------------------------------
// Slowloris: connections that send a request one byte a second, reconnecting when closed.

json run_slowloris(const Options& o, const Target& target, SSL_CTX* ctx) {
  const std::string request = "POST /validate?timeout=10s HTTP/1.1\r\nHost: " + target.host +
                              "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" +
                              std::string(100000, ' ');
  struct Slow {
    Connection conn;
    size_t pos = 0;
    int64_t opened = 0;
  };
  std::atomic<uint64_t> opened{0}, failed{0}, closed_by_server{0}, bytes{0};
  std::atomic<int64_t> lifetime_ns{0};
  std::atomic<int64_t> open_now{0};
  const int threads = std::min(o.connections, 16);
  const int64_t end = now_ns() + int64_t(o.duration * 1e9);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<Slow> mine(size_t(o.connections / threads + (t < o.connections % threads ? 1 : 0)));
      for (int64_t tick = now_ns(); tick < end; tick += 1'000'000'000) {
        for (auto& c : mine) {
          if (now_ns() >= end) break;
          if (!c.conn.is_open()) {
            std::string error;
            bool timed_out = false;
            if (!c.conn.open(target, ctx, 3000, error, timed_out)) {
              ++failed;
              continue;
            }
            ++opened;
            ++open_now;
            ::fcntl(c.conn.fd(), F_SETFL, ::fcntl(c.conn.fd(), F_GETFL) | O_NONBLOCK);
            c.pos = 0;
            c.opened = now_ns();
            continue;
          }
          // The server may have answered (408/400) or closed: then start over. Readable data
          // can also be a TLS 1.3 session ticket, which SSL_read consumes (WANT_READ).
          bool closed = false;
          pollfd p{c.conn.fd(), POLLIN, 0};
          if (::poll(&p, 1, 0) > 0) {
            char scratch[4096];
            int n = SSL_read(c.conn.ssl(), scratch, sizeof scratch);
            closed = n > 0 || SSL_get_error(c.conn.ssl(), n) != SSL_ERROR_WANT_READ;
          }
          if (!closed) {
            ERR_clear_error();
            int n = SSL_write(c.conn.ssl(), request.data() + c.pos, 1);
            closed = n <= 0 && SSL_get_error(c.conn.ssl(), n) != SSL_ERROR_WANT_WRITE;
            if (n <= 0 && !closed) continue;  // send buffer full: try again next second
          }
          if (closed) {
            ++closed_by_server;
            lifetime_ns += now_ns() - c.opened;
            --open_now;
            c.conn.close();
            continue;
          }
          ++bytes;
          c.pos = (c.pos + 1) % request.size();
        }
        sleep_until_ns(std::min(tick + 1'000'000'000, end));
      }
      for (auto& c : mine) {
        if (c.conn.is_open()) --open_now;
      }
    });
  }
  for (auto& th : pool) th.join();
  const uint64_t closes = closed_by_server.load();
  return {{"hostile", "slowloris"}, {"connections", o.connections}, {"duration_s", o.duration},
          {"opened", opened.load()}, {"connect_failures", failed.load()}, {"closed_by_server", closes},
          {"bytes_sent", bytes.load()},
          {"mean_lifetime_s", closes ? seconds(lifetime_ns.load()) / double(closes) : 0.0}};
}

// ------------------------------------------------------------------------------------------
// --pattern apiserver: what a kube-apiserver does for each Pod CREATE with sizeguard registered
// as a mutating and a validating webhook. One keep-alive connection per webhook, one object at a
// time (open loop at --rate objects/s, latency from the intended send), /mutate first, then
// /validate with the object after the mutation's patch (as the apiserver sends it). Each
// response's bytes are counted: the apiserver reads, decodes and applies all of them.

std::string base64_decode(std::string_view in) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : in) {
    if (c == '=') break;
    auto at = alphabet.find(c);
    if (at == std::string::npos) throw std::runtime_error("patch is not base64");
    bits = (bits << 6) | uint32_t(at);
    if ((count += 6) >= 8) {
      count -= 8;
      out.push_back(char((bits >> count) & 0xff));
    }
  }
  return out;
}

struct CallStats {
  std::vector<int64_t> latency_ns;  // service time: from writing the request to the whole answer
  uint64_t response_bytes = 0, patch_bytes = 0, patched = 0, warnings = 0, calls = 0;
};

json call_summary(CallStats& c) {
  const double n = double(std::max<uint64_t>(1, c.calls));
  return {{"calls", c.calls},
          {"latency_ms", percentiles_ms(c.latency_ns)},
          {"response_bytes_mean", double(c.response_bytes) / n},
          {"patch_bytes_mean", double(c.patch_bytes) / n},
          {"patched_fraction", double(c.patched) / n},
          {"warnings_per_call", double(c.warnings) / n}};
}

int run_apiserver_pattern(const Options& o, const Target& target, SSL_CTX* ctx) {
  if (o.rate <= 0) throw std::invalid_argument("--pattern apiserver needs --rate (objects per second)");
  struct Object {
    RequestTemplate mutate, validate;
  };
  std::vector<Object> objects;
  Connection mutate_conn, validate_conn;
  std::string closing_body;
  std::string error;
  bool timed_out = false;
  if (!mutate_conn.open(target, ctx, o.timeout_ms, error, timed_out) ||
      !validate_conn.open(target, ctx, o.timeout_ms, error, timed_out)) {
    throw std::runtime_error("connect: " + error);
  }
  uint64_t reconnects = 0;
  // Like Go's transport: a connection the server closed (Connection: close after its
  // per-connection request limit, or an idle close) is replaced before the next request.
  auto exchange = [&](Connection& conn, RequestTemplate& t, std::string_view& body, size_t& bytes) {
    if (!conn.is_open() || conn.peer_closed()) {
      if (!conn.open(target, ctx, o.timeout_ms, error, timed_out)) throw std::runtime_error("reconnect: " + error);
      ++reconnects;
    }
    int status = 0;
    bool closes = false, encoded = false;
    if (!conn.write_all(t.bytes.data(), t.bytes.size()) ||
        conn.read_response(status, body, closes, encoded) != ReadStatus::Ok) {
      throw std::runtime_error(t.name + ": no response");
    }
    if (status != 200 || encoded) throw std::runtime_error(t.name + ": HTTP " + std::to_string(status));
    bytes = body.size();
    if (closes) {
      // The body points into the connection's buffer: keep it until the caller is done.
      closing_body.assign(body);
      body = closing_body;
      conn.close();
    }
  };
  // First pass: the patched object each Pod becomes, so /validate gets what the apiserver sends.
  for (const auto& f : load_fixtures(o.fixtures_dir)) {
    json review = json::parse(f.body);
    const json& request = review["request"];
    if (request.value("operation", "") != "CREATE" || request["kind"].value("kind", "") != "Pod") continue;
    Object obj;
    obj.mutate = make_template(f.name, "mutate", target.host, f.body, f.uid);
    std::string_view body;
    size_t bytes = 0;
    exchange(mutate_conn, obj.mutate, body, bytes);
    Answer a = decode_answer(body);
    if (!a.valid) throw std::runtime_error(f.name + ": " + a.problem);
    if (!a.patch.empty()) {
      review["request"]["object"] = review["request"]["object"].patch(json::parse(base64_decode(a.patch)));
    }
    obj.validate = make_template(f.name, "validate", target.host, review.dump(), f.uid);
    exchange(validate_conn, obj.validate, body, bytes);
    objects.push_back(std::move(obj));
  }
  if (objects.empty()) throw std::runtime_error(o.fixtures_dir + ": no Pod CREATE fixtures");

  CallStats mutate, validate;
  std::vector<int64_t> object_ns;
  const int64_t interval = int64_t(1e9 / o.rate);
  const int64_t start = now_ns();
  const int64_t window_start = start + int64_t(o.warmup * 1e9), window_end = window_start + int64_t(o.duration * 1e9);
  ProcSample proc0, proc1;
  double cpu0 = 0, cpu1 = 0;
  int64_t t0 = 0, t1 = 0;
  uint64_t late = 0;
  for (uint64_t k = 0;; ++k) {
    const int64_t intended = start + int64_t(k) * interval;
    if (intended >= window_end) break;
    if (intended > now_ns()) sleep_until_ns(intended);
    const bool in_window = intended >= window_start;
    if (in_window && t0 == 0) {
      proc0 = sample_proc(o.server_pid);
      cpu0 = client_cpu_s();
      t0 = now_ns();
    }
    Object& obj = objects[k % objects.size()];
    stamp_uid(obj.mutate, k);
    const std::string uid = stamp_uid(obj.validate, k);
    std::string_view body;
    size_t bytes = 0;
    const int64_t sent = now_ns();
    exchange(mutate_conn, obj.mutate, body, bytes);
    const int64_t mutated = now_ns();
    Answer a = decode_answer(body);
    if (!a.valid || a.uid != uid) throw std::runtime_error(obj.mutate.name + ": bad answer " + a.problem);
    if (in_window) {
      ++mutate.calls;
      mutate.latency_ns.push_back(mutated - sent);
      mutate.response_bytes += bytes;
      if (!a.patch.empty()) ++mutate.patched, mutate.patch_bytes += base64_decode(a.patch).size();
      if (body.find("\"warnings\"") != std::string_view::npos) ++mutate.warnings;
    }
    exchange(validate_conn, obj.validate, body, bytes);
    const int64_t done = now_ns();
    a = decode_answer(body);
    if (!a.valid || a.uid != uid) throw std::runtime_error(obj.validate.name + ": bad answer " + a.problem);
    if (in_window) {
      ++validate.calls;
      validate.latency_ns.push_back(done - mutated);
      validate.response_bytes += bytes;
      if (body.find("\"warnings\"") != std::string_view::npos) ++validate.warnings;
      object_ns.push_back(done - intended);
      if (done - intended > interval) ++late;
    }
  }
  proc1 = sample_proc(o.server_pid);
  cpu1 = client_cpu_s();
  t1 = now_ns();
  const double window = std::max(1e-9, seconds(t1 - t0));
  const double reviews = double(mutate.calls + validate.calls);
  json out;
  if (!o.label.empty()) out["label"] = o.label;
  out["url"] = o.url;
  out["mode"] = "apiserver";
  out["rate_objects_per_s"] = o.rate;
  out["objects"] = object_ns.size();
  out["fixtures"] = objects.size();
  out["window_s"] = window;
  out["reviews_per_s"] = reviews / window;
  out["reconnects"] = reconnects;
  out["late_objects"] = late;  // took longer than the interval: the next object waited
  // From the object's intended send (open loop: a stall delays the objects behind it).
  out["object_latency_ms"] = percentiles_ms(object_ns);
  out["mutate"] = call_summary(mutate);
  out["validate"] = call_summary(validate);
  std::vector<int64_t> all = mutate.latency_ns;
  all.insert(all.end(), validate.latency_ns.begin(), validate.latency_ns.end());
  out["review_latency_ms"] = percentiles_ms(all);
  out["client_cpu_s"] = cpu1 - cpu0;
  out["tls"] = {{"version", SSL_get_version(mutate_conn.ssl())}, {"cipher", SSL_get_cipher_name(mutate_conn.ssl())}};
  if (proc0.ok && proc1.ok) {
    const double cpu = proc1.cpu_s - proc0.cpu_s;
    out["server"] = {{"pid", o.server_pid},
                     {"cpu_s", cpu},
                     {"cpu_us_per_review", reviews > 0 ? cpu / reviews * 1e6 : 0.0},
                     {"rss_kib_end", proc1.rss_kib}};
  }
  std::cout << (o.json_output ? out.dump() : out.dump(2)) << std::endl;
  return 0;
}

int run(const Options& o) {
  ::signal(SIGPIPE, SIG_IGN);
  const Target target = parse_https_url(o.url);
  SSL_CTX* ctx = make_client_context(o.ca);
  if (o.pattern == "apiserver") return run_apiserver_pattern(o, target, ctx);
  if (!o.pattern.empty()) throw std::invalid_argument("--pattern: only apiserver is known, not " + o.pattern);
  if (o.hostile == "slowloris") {
    json result = run_slowloris(o, target, ctx);
    if (!o.label.empty()) result["label"] = o.label;
    std::cout << result.dump() << std::endl;
    return 0;
  }

  Shared s{o, target, ctx, {}, {}, true, 0, 0, 0, {}, {}};
  const auto fixtures = load_fixtures(o.fixtures_dir);
  std::vector<std::string> paths;
  for (std::stringstream in(o.paths); in.good();) {
    std::string p;
    std::getline(in, p, ',');
    if (!p.empty()) paths.push_back(p);
  }
  if (paths.empty()) throw std::invalid_argument("--paths: none given");
  if (!o.hostile.empty()) {
    const std::string body = hostile_body(o.hostile, fixtures, o.oversize_bytes, o.containers);
    const std::string uid = o.hostile == "deep-json" ? "" : fixtures.front().uid;
    for (const auto& p : paths) s.templates.push_back(make_template(o.hostile, p, target.host, body, uid));
    s.check_answers = false;
  } else {
    for (const auto& f : fixtures) {
      for (const auto& p : paths) s.templates.push_back(make_template(f.name, p, target.host, f.body, f.uid));
    }
  }

  if (o.expect) {
    if (!o.expect_file.empty()) {
      json j = json::parse(read_file(o.expect_file));
      for (const auto& [name, e] : j.items()) s.expected[name] = Expected{e.at("allowed").get<bool>(), e.value("patch", "")};
      for (const auto& t : s.templates) {
        if (!s.expected.count(t.name)) throw std::runtime_error(o.expect_file + ": no expectation for " + t.name);
      }
    } else {
      s.expected = first_pass(s);
    }
    if (!o.save_expect.empty()) {
      json j = json::object();
      for (const auto& [name, e] : s.expected) j[name] = {{"allowed", e.allowed}, {"patch", e.patch}};
      std::ofstream(o.save_expect) << j.dump(1) << "\n";
    }
  }

  s.start_ns = now_ns();
  s.window_start_ns = s.start_ns + int64_t(o.warmup * 1e9);
  s.window_end_ns = o.requests ? 0 : s.window_start_ns + int64_t(o.duration * 1e9);
  std::vector<WorkerResult> results(size_t(o.connections));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i) threads.emplace_back(run_worker, std::ref(s), i, std::ref(results[size_t(i)]));

  // Measurement window: sample at its start, and at its end (or when every thread is done).
  auto wait_until = [&](int64_t t, const std::function<bool()>& done) {
    int64_t next_progress = o.progress > 0 ? now_ns() + int64_t(o.progress * 1e9) : INT64_MAX;
    while (!done() && now_ns() < t) {
      sleep_until_ns(std::min({t, now_ns() + 100'000'000, next_progress}));
      if (now_ns() >= next_progress) {
        std::cerr << "loadgen: t=" << int(seconds(now_ns() - s.start_ns)) << "s sent=" << s.progress_sent.load()
                  << " errors=" << s.progress_errors.load() << std::endl;
        next_progress += int64_t(o.progress * 1e9);
      }
    }
  };
  std::atomic<int> finished{0};  // joined in the background so the window end can be seen
  std::thread joiner([&] {
    for (auto& t : threads) t.join();
    finished = 1;
  });
  wait_until(s.window_start_ns, [&] { return finished.load() == 1; });
  const ProcSample proc0 = sample_proc(o.server_pid);
  const Histogram hist0 = scrape_histogram(o.metrics_url);
  const double cpu0 = client_cpu_s();
  const int64_t t0 = now_ns();
  wait_until(s.window_end_ns ? s.window_end_ns : INT64_MAX, [&] { return finished.load() == 1; });
  int64_t t1 = now_ns();
  const ProcSample proc1 = sample_proc(o.server_pid);
  const Histogram hist1 = scrape_histogram(o.metrics_url);
  const double cpu1 = client_cpu_s();
  joiner.join();

  Counters total;
  std::vector<int64_t> latency, service;
  std::vector<std::string> errors;
  std::string tls_version, tls_cipher;
  int64_t last_done = 0;
  for (auto& r : results) {
    total.add(r.counters);
    latency.insert(latency.end(), r.latency_ns.begin(), r.latency_ns.end());
    service.insert(service.end(), r.service_ns.begin(), r.service_ns.end());
    for (auto& e : r.first_errors) {
      if (errors.size() < 10) errors.push_back(e);
    }
    if (tls_version.empty()) tls_version = r.tls_version, tls_cipher = r.tls_cipher;
    last_done = std::max(last_done, r.last_done_ns);
  }
  if (!s.window_end_ns) t1 = std::max(t0, last_done);
  const double window = std::max(1e-9, seconds(t1 - t0));
  const double counted = double(latency.size());

  json out;
  if (!o.label.empty()) out["label"] = o.label;
  out["url"] = o.url;
  out["mode"] = o.rate > 0 ? "fixed" : "max";
  out["rate"] = o.rate;
  out["connections"] = o.connections;
  out["paths"] = paths;
  out["templates"] = s.templates.size();
  if (!o.hostile.empty()) out["hostile"] = o.hostile;
  out["window_s"] = window;
  out["requests"] = latency.size();
  out["throughput_rps"] = counted / window;
  out["sent_total"] = total.sent;
  out["ok_total"] = total.ok;
  out["errors"] = {{"total", total.errors()},          {"status", total.status_errors},
                   {"mismatch", total.mismatches},     {"connect", total.connect_failures},
                   {"timeout", total.timeouts},        {"unanswered", total.unanswered},
                   {"broken", total.broken},           {"missed_schedule", total.missed}};
  json statuses = json::object();
  for (auto [k, v] : total.statuses) statuses[std::to_string(k)] = v;
  out["statuses"] = statuses;
  out["first_errors"] = errors;
  out["connections_opened"] = total.reconnects;
  out["server_closes"] = total.server_closes;  // answers with Connection: close
  out["idle_closed_by_server"] = total.stale;  // connections found closed before a request was written
  out["expect"] = !s.expected.empty();
  out["latency_ms"] = percentiles_ms(latency);
  out["service_ms"] = percentiles_ms(service);
  out["client_cpu_s"] = cpu1 - cpu0;
  out["client_cpu_cores"] = (cpu1 - cpu0) / window;
  out["tls"] = {{"version", tls_version}, {"cipher", tls_cipher}};
  if (proc0.ok && proc1.ok) {
    const double cpu = proc1.cpu_s - proc0.cpu_s;
    out["server"] = {{"pid", o.server_pid},
                     {"cpu_s", cpu},
                     {"cpu_cores", cpu / window},
                     {"cpu_us_per_review", counted > 0 ? cpu / counted * 1e6 : 0.0},
                     {"rss_kib_start", proc0.rss_kib},
                     {"rss_kib_end", proc1.rss_kib},
                     {"hwm_kib_end", proc1.hwm_kib}};
  }
  if (hist0.ok && hist1.ok) {
    std::map<double, double> delta;
    for (const auto& [le, c] : hist1.buckets) delta[le] = c - (hist0.buckets.count(le) ? hist0.buckets.at(le) : 0);
    const double n = hist1.count - hist0.count;
    const double bound = delta.count(0.002) ? 0.002 : 0.0025;
    out["server_histogram"] = {{"reviews", n},
                               {"le_s", bound},
                               {"fraction_le", n > 0 && delta.count(bound) ? delta[bound] / n : 0.0},
                               {"p50_ms_est", n > 0 ? histogram_quantile(delta, n, 0.5) * 1e3 : 0.0},
                               {"p99_ms_est", n > 0 ? histogram_quantile(delta, n, 0.99) * 1e3 : 0.0},
                               {"p999_ms_est", n > 0 ? histogram_quantile(delta, n, 0.999) * 1e3 : 0.0}};
  }

  if (o.json_output) {
    std::cout << out.dump() << std::endl;
  } else {
    std::cout << out.dump(2) << std::endl;
  }
  for (const auto& e : errors) std::cerr << "loadgen: error: " << e << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"sizeguard-loadgen: replay the apiserver fixtures against a webhook over TLS keep-alive"};
  app.add_option("--url", o.url, "https://HOST:PORT of the webhook")->required();
  app.add_option("--ca", o.ca, "PEM CA file to verify the server (default: the system store)");
  app.add_option("--fixtures", o.fixtures_dir, "directory of AdmissionReview *.json bodies")->capture_default_str();
  app.add_option("--paths", o.paths, "webhook paths, each fixture is sent to each, round-robin")->capture_default_str();
  app.add_option("--connections", o.connections, "connections, one thread each")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--rate", o.rate, "requests per second in total; 0 = as fast as possible (closed loop)")->capture_default_str();
  app.add_option("--duration", o.duration, "measured seconds (after --warmup)")->capture_default_str();
  app.add_option("--requests", o.requests, "measured requests instead of --duration");
  app.add_option("--warmup", o.warmup, "seconds sent but not measured")->capture_default_str();
  app.add_option("--server-pid", o.server_pid, "server process: CPU from /proc/PID/stat, VmRSS/VmHWM from /proc/PID/status");
  app.add_option("--metrics-url", o.metrics_url, "http://HOST:PORT of the server's metrics listener (latency histogram)");
  app.add_flag("--json", o.json_output, "print one JSON line");
  app.add_flag("--expect", o.expect, "check every answer: 200, AdmissionReview, uid, allowed and patch as in the first pass");
  app.add_option("--expect-file", o.expect_file, "with --expect: expectations from this file instead of a first pass");
  app.add_option("--save-expect", o.save_expect, "with --expect: write the expectations used to this file");
  app.add_option("--timeout", o.timeout_ms, "connect/handshake/response timeout, milliseconds")->capture_default_str();
  app.add_option("--progress", o.progress, "print progress to stderr every S seconds");
  app.add_option("--hostile", o.hostile, "misbehave: slowloris, oversize, deep-json, many-containers, bad-utf8");
  app.add_option("--oversize-bytes", o.oversize_bytes, "body size for --hostile oversize")->capture_default_str();
  app.add_option("--containers", o.containers, "containers in the Pod for --hostile many-containers")->capture_default_str();
  app.add_option("--label", o.label, "copied into the JSON output");
  app.add_option("--pattern", o.pattern,
                 "apiserver: one connection per webhook, each Pod CREATE fixture sent to /mutate then, patched, "
                 "to /validate, at --rate objects/s (--connections is ignored)");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "sizeguard-loadgen: " << e.what() << std::endl;
    return 2;
  }
}
