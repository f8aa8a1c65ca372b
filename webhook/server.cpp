#include "webhook/server.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include "webhook/logging.h"

namespace sizeguard {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kJsonType = "application/json";
// Requests served per connection before closing it, so that long-lived apiserver
// connections get spread again over replicas now and then.
constexpr std::size_t kMaxRequestsPerConnection = 1000;
constexpr const char* kTextType = "text/plain; charset=utf-8";

// ---------------------------------------------------------------------------------------
// Status bodies and metric names.

std::string_view status_reason(int code) {
  switch (code) {
    case 400: return "BadRequest";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 408: return "Timeout";
    case 411: return "BadRequest";
    case 413: return "RequestEntityTooLarge";
    case 414: return "RequestURITooLong";
    case 415: return "UnsupportedMediaType";
    case 503: return "ServiceUnavailable";
    default: return code >= 500 ? "InternalError" : "BadRequest";
  }
}

// 0.002 is there so the p99 ≤ 2 ms goal can be read off the histogram.
const std::vector<double> kDurationBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0025, 0.005,
                                              0.01,   0.025,   0.05,   0.1,   0.25,  0.5,    1};

constexpr const char* kRequestsTotal = "sizeguard_admission_requests_total";
constexpr const char* kDurationSeconds = "sizeguard_admission_duration_seconds";
constexpr const char* kHttpErrors = "sizeguard_http_errors_total";
constexpr const char* kHandshakeFailures = "sizeguard_tls_handshake_failures_total";
constexpr const char* kOpenConnections = "sizeguard_http_open_connections";
constexpr const char* kWorkers = "sizeguard_http_workers";
constexpr const char* kConnectionsTotal = "sizeguard_http_connections_total";
constexpr const char* kCertExpiry = "sizeguard_tls_cert_expiry_timestamp_seconds";

std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

// ---------------------------------------------------------------------------------------
// Worker pool: runs connections. Unlike httplib::ThreadPool it blocks SIGPIPE in its
// threads (a peer closing mid-write must not kill the process) and counts busy workers.

class WorkerPool final : public httplib::TaskQueue {
 public:
  explicit WorkerPool(std::size_t count) {
    for (std::size_t i = 0; i < std::max<std::size_t>(count, 1); ++i) {
      threads_.emplace_back([this] { run(); });
    }
  }
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> job) override {
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

  // Runs every queued job (accepted connections are served, not dropped), then joins.
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  void run() {
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Becomes readable forever once triggered, so every connection waiting in poll() for its
// next keep-alive request wakes up when shutdown starts.
class DrainSignal {
 public:
  DrainSignal() {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::runtime_error(std::string("cannot create the shutdown pipe: ") + std::strerror(errno));
    }
  }
  ~DrainSignal() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  DrainSignal(const DrainSignal&) = delete;
  DrainSignal& operator=(const DrainSignal&) = delete;

  void trigger() {
    if (!triggered_.exchange(true)) {
      [[maybe_unused]] auto written = ::write(fds_[1], "x", 1);
    }
  }
  bool triggered() const { return triggered_.load(); }
  int fd() const { return fds_[0]; }

 private:
  int fds_[2] = {-1, -1};
  std::atomic<bool> triggered_{false};
};

// Waits until `fd` is ready for `events` or the deadline passes.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto remaining = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (remaining < 0) return false;
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(remaining + 1, 1 << 30)));
    if (rc > 0) return true;  // ready, or an error the next I/O call reports
    if (rc == 0) continue;    // re-check the deadline
    if (errno != EINTR) return false;
  }
}

std::string numeric_address(const sockaddr_storage& address, socklen_t length, int& port) {
  char host[NI_MAXHOST] = "";
  char service[NI_MAXSERV] = "";
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof host, service,
                    sizeof service, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    port = 0;
    return {};
  }
  port = std::atoi(service);
  return host;
}

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// One connection's byte stream for httplib's request parser, over TLS or plain TCP on a
// non-blocking socket. Reads are bounded by a per-request deadline (slowloris cannot
// stretch a request by trickling bytes); writes are buffered and flushed as one TLS
// record per response, each flush bounded by the write timeout.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int fd, SSL* ssl, milliseconds write_timeout)
      : fd_(fd), ssl_(ssl), write_timeout_(write_timeout) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      remote_ip_ = numeric_address(address, length, remote_port_);
    }
    length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      local_ip_ = numeric_address(address, length, local_port_);
    }
  }

  void start_request(Clock::time_point read_deadline) { read_deadline_ = read_deadline; }
  bool has_buffered_input() const {
    return in_pos_ < in_len_ || (ssl_ && SSL_has_pending(ssl_) == 1);  // decrypted or read-ahead bytes
  }

  bool is_readable() const override {
    return has_buffered_input() || wait_fd(fd_, POLLIN, read_deadline_);
  }
  bool is_writable() const override { return wait_fd(fd_, POLLOUT, Clock::now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (!out_.empty() && !flush()) return -1;  // e.g. "100 Continue" must go out first
    if (in_pos_ < in_len_) {
      size_t n = std::min(size, in_len_ - in_pos_);
      std::memcpy(ptr, in_ + in_pos_, n);
      in_pos_ += n;
      return static_cast<ssize_t>(n);
    }
    if (size >= sizeof in_) return read_raw(ptr, size);
    ssize_t n = read_raw(in_, sizeof in_);
    if (n <= 0) return n;
    in_len_ = static_cast<size_t>(n);
    in_pos_ = std::min(size, in_len_);
    std::memcpy(ptr, in_, in_pos_);
    return static_cast<ssize_t>(in_pos_);
  }

  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    if (out_.size() >= kFlushThreshold && !flush()) return -1;
    return static_cast<ssize_t>(size);
  }

  bool flush() {
    auto deadline = Clock::now() + write_timeout_;
    size_t done = 0;
    while (done < out_.size()) {
      if (ssl_) {
        ERR_clear_error();
        size_t written = 0;
        int rc = SSL_write_ex(ssl_, out_.data() + done, out_.size() - done, &written);
        if (rc == 1) {
          done += written;
          continue;
        }
        int error = SSL_get_error(ssl_, rc);
        short events = error == SSL_ERROR_WANT_WRITE ? POLLOUT : error == SSL_ERROR_WANT_READ ? POLLIN : 0;
        if (events == 0 || !wait_fd(fd_, events, deadline)) return fail_output();
      } else {
        ssize_t n = ::send(fd_, out_.data() + done, out_.size() - done, MSG_NOSIGNAL);
        if (n >= 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        if (errno == EINTR) continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait_fd(fd_, POLLOUT, deadline)) {
          return fail_output();
        }
      }
    }
    out_.clear();
    return true;
  }

  bool healthy() const { return healthy_; }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = remote_ip_;
    port = remote_port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = local_ip_;
    port = local_port_;
  }
  socket_t socket() const override { return fd_; }

 private:
  static constexpr size_t kFlushThreshold = 16 * 1024;

  bool fail_output() {
    out_.clear();
    healthy_ = false;
    return false;
  }

  ssize_t read_raw(char* ptr, size_t size) {
    for (;;) {
      if (ssl_) {
        ERR_clear_error();
        size_t got = 0;
        int rc = SSL_read_ex(ssl_, ptr, size, &got);
        if (rc == 1) return static_cast<ssize_t>(got);
        int error = SSL_get_error(ssl_, rc);
        if (error == SSL_ERROR_ZERO_RETURN) return 0;
        short events = error == SSL_ERROR_WANT_READ ? POLLIN : error == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (events == 0 || !wait_fd(fd_, events, read_deadline_)) {
          healthy_ = false;
          return -1;
        }
      } else {
        ssize_t n = ::recv(fd_, ptr, size, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait_fd(fd_, POLLIN, read_deadline_)) {
          healthy_ = false;
          return -1;
        }
      }
    }
  }

  int fd_;
  SSL* ssl_;
  milliseconds write_timeout_;
  Clock::time_point read_deadline_ = Clock::now();
  char in_[16 * 1024];
  size_t in_pos_ = 0, in_len_ = 0;
  std::string out_;
  bool healthy_ = true;
  std::string remote_ip_, local_ip_;
  int remote_port_ = 0, local_port_ = 0;
};

struct ConnectionLimits {
  milliseconds read_timeout, write_timeout, idle_timeout;
  std::size_t workers;
};

// httplib::Server with our own connection loop: TLS from a swappable TlsContext, request
// deadlines, idle timeout, and drain on shutdown (idle connections close at once, a
// request already arriving is answered with "Connection: close").
class ConnectionServer final : public httplib::Server {
 public:
  ConnectionServer(std::string listener, const TlsContext* tls, ConnectionLimits limits,
                   const DrainSignal& drain, Metrics& metrics, spdlog::logger& log)
      : listener_(std::move(listener)), tls_(tls), limits_(limits), drain_(drain), metrics_(metrics), log_(log) {
    new_task_queue = [workers = limits.workers] { return new WorkerPool(workers); };
    // Only for the Keep-Alive header httplib writes; the loop below enforces both.
    set_keep_alive_timeout(std::max<time_t>(1, std::chrono::duration_cast<std::chrono::seconds>(limits.idle_timeout).count()));
    set_keep_alive_max_count(kMaxRequestsPerConnection);
    // httplib's default adds SO_REUSEPORT, which lets a second process bind the same port
    // and silently share its traffic; a busy port must be a startup error instead.
    set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    metrics_.set(kWorkers, {{"listener", listener_}}, static_cast<double>(limits.workers));
    metrics_.set(kOpenConnections, {{"listener", listener_}}, 0);
  }

  std::function<void(httplib::Request&)> setup_request;

  // httplib listens with a backlog of 5; under a burst of new connections the kernel then
  // drops SYNs and clients wait a 1 s retransmit. Linux lets listen() raise it in place.
  void raise_listen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

 private:
  enum class Wait { Request, Close };

  bool process_and_close_socket(socket_t fd) override {
    try {
      serve_connection(fd);
    } catch (const std::exception& e) {
      log_.error("{} connection failed: {}", listener_, e.what());
    } catch (...) {
      log_.error("{} connection failed with an unknown exception", listener_);
    }
    ::close(fd);
    return true;
  }

  void serve_connection(int fd) {
    struct OpenGauge {
      Metrics& metrics;
      const std::string& listener;
      OpenGauge(Metrics& m, const std::string& l) : metrics(m), listener(l) {
        metrics.increment(kOpenConnections, {{"listener", listener}}, 1);
      }
      ~OpenGauge() { metrics.increment(kOpenConnections, {{"listener", listener}}, -1); }
    } open_gauge(metrics_, listener_);
    metrics_.increment(kConnectionsTotal, {{"listener", listener_}});

    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    SslPtr ssl;
    if (tls_) {
      ssl.reset(SSL_new(tls_->current().get()));  // the SSL keeps its own reference
      if (!ssl || SSL_set_fd(ssl.get(), fd) != 1 || !handshake(ssl.get(), fd)) {
        metrics_.increment(kHandshakeFailures);
        log_.debug("{}: TLS handshake failed: {}", listener_, openssl_errors());
        return;
      }
    }

    ConnectionStream stream(fd, ssl.get(), limits_.write_timeout);
    for (std::size_t served = 0;; ++served) {
      const bool first = served == 0;
      // The first request of an accepted connection is always awaited; later ones only
      // while not draining.
      if (wait_for_request(stream, fd, first) != Wait::Request) break;
      stream.start_request(Clock::now() + limits_.read_timeout);
      bool close_after = drain_.triggered() || served + 1 >= kMaxRequestsPerConnection;
      bool client_closed = false;
      bool ok = process_request(stream, close_after, client_closed, setup_request);
      close_after = close_after || drain_.triggered();  // shutdown began while answering
      if (!stream.flush() || !ok || !stream.healthy() || client_closed || close_after) break;
    }
    if (ssl && stream.healthy()) {
      ERR_clear_error();
      SSL_shutdown(ssl.get());  // best effort close_notify; never wait for the peer's
    }
  }

  bool handshake(SSL* ssl, int fd) {
    auto deadline = Clock::now() + limits_.read_timeout;
    for (;;) {
      ERR_clear_error();
      int rc = SSL_accept(ssl);
      if (rc == 1) return true;
      int error = SSL_get_error(ssl, rc);
      short events = error == SSL_ERROR_WANT_READ ? POLLIN : error == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (events == 0 || !wait_fd(fd, events, deadline)) return false;
    }
  }

  Wait wait_for_request(const ConnectionStream& stream, int fd, bool first) {
    if (stream.has_buffered_input()) return Wait::Request;
    auto timeout = first ? limits_.read_timeout : limits_.idle_timeout;
    auto deadline = Clock::now() + timeout;
    for (;;) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {drain_.fd(), POLLIN, 0}};
      auto remaining = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (remaining < 0) return Wait::Close;
      int rc = ::poll(fds, first ? 1 : 2, static_cast<int>(std::min<long long>(remaining + 1, 1 << 30)));
      if (rc < 0 && errno != EINTR) return Wait::Close;
      if (rc <= 0) continue;
      if (fds[0].revents != 0) return Wait::Request;  // data, or EOF/error the parser sees
      if (!first && fds[1].revents != 0) return Wait::Close;  // draining and idle
    }
  }

  std::string listener_;
  const TlsContext* tls_;
  ConnectionLimits limits_;
  const DrainSignal& drain_;
  Metrics& metrics_;
  spdlog::logger& log_;
};

bool body_expected_without_length(const httplib::Request& request) {
  static constexpr std::string_view kWithBody[] = {"POST", "PUT", "PATCH", "DELETE", "PRI"};
  if (std::find(std::begin(kWithBody), std::end(kWithBody), request.method) == std::end(kWithBody)) return false;
  if (request.has_header("Content-Length")) return false;
  return request.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The review core.

std::string_view to_string(Webhook webhook) { return webhook == Webhook::Mutate ? "mutate" : "validate"; }

std::string_view decision_label(const DecisionRecord& record) {
  if (!record.request) return "invalid";
  if (!record.response) return "error";
  if (!record.response->allowed) return "denied";
  const Json& patch = record.response->patch;
  if (patch.is_array() && !patch.empty()) return "patched";
  return "allowed";
}

std::string status_body(int http_status, std::string_view message) {
  Json status = {{"kind", "Status"},
                 {"apiVersion", "v1"},
                 {"metadata", Json::object()},
                 {"status", "Failure"},
                 {"message", std::string(message)},
                 {"reason", std::string(status_reason(http_status))},
                 {"code", http_status}};
  return status.dump(-1, ' ', false, Json::error_handler_t::replace);
}

HttpAnswer handle_admission(Webhook webhook, std::string_view body, const AdmissionHandler& handler,
                            const DecisionObserver& observer) {
  const auto started = Clock::now();
  auto notify = [&](DecisionRecord record) {
    record.webhook = webhook;
    record.latency = Clock::now() - started;
    if (!observer) return;
    try {
      observer(record);
    } catch (...) {
      // Logging or metrics trouble must never change the answer.
    }
  };
  auto fail = [&](int status, const std::string& message, const AdmissionRequest* request) {
    DecisionRecord record;
    record.request = request;
    record.http_status = status;
    record.error = message;
    notify(record);
    return HttpAnswer{status, kJsonType, status_body(status, message)};
  };

  std::variant<AdmissionRequest, DecodeError> decoded;
  try {
    decoded = decode_admission_review(body);
  } catch (const std::exception& e) {
    return fail(400, std::string("invalid AdmissionReview: ") + e.what(), nullptr);
  }
  if (const auto* error = std::get_if<DecodeError>(&decoded)) {
    return fail(400, "invalid AdmissionReview: " + error->message, nullptr);
  }
  const auto& request = std::get<AdmissionRequest>(decoded);
  if (request.uid.empty()) return fail(400, "invalid AdmissionReview: request.uid is missing or empty", nullptr);
  if (!handler) return fail(500, "no handler is configured for /" + std::string(to_string(webhook)), &request);

  try {
    AdmissionResponse response = handler(request);
    response.uid = request.uid;  // the apiserver rejects answers for another uid
    HttpAnswer answer{200, kJsonType, encode_admission_review(response, request.api_version)};
    DecisionRecord record;
    record.request = &request;
    record.response = &response;
    notify(record);
    return answer;
  } catch (const std::exception& e) {
    return fail(500, "the " + std::string(to_string(webhook)) + " handler failed: " + e.what(), &request);
  } catch (...) {
    return fail(500, "the " + std::string(to_string(webhook)) + " handler failed with an unknown error", &request);
  }
}

void describe_server_metrics(Metrics& metrics, std::string_view version) {
  metrics.describe("sizeguard_build_info", MetricType::Gauge, "Build information; the value is always 1.");
  metrics.set("sizeguard_build_info", {{"version", std::string(version)}}, 1);
  metrics.describe(kRequestsTotal, MetricType::Counter,
                   "Admission reviews answered, by webhook, operation, kind and decision "
                   "(allowed, patched, denied, error).");
  metrics.describe(kDurationSeconds, MetricType::Histogram,
                   "Time to decode, decide and encode one admission review, in seconds.", kDurationBuckets);
  metrics.describe(kHttpErrors, MetricType::Counter,
                   "HTTP answers with a 4xx or 5xx status, by listener, path and status code.");
  metrics.describe(kHandshakeFailures, MetricType::Counter, "TLS handshakes that failed or timed out.");
  metrics.increment(kHandshakeFailures, {}, 0);
  metrics.describe(kOpenConnections, MetricType::Gauge,
                   "Open connections per listener; each holds a worker thread while open.");
  metrics.describe(kWorkers, MetricType::Gauge, "Worker threads per listener.");
  metrics.describe(kConnectionsTotal, MetricType::Counter, "Connections accepted per listener.");
  metrics.describe(kCertExpiry, MetricType::Gauge, "notAfter of the serving certificate, as a Unix timestamp.");
}

void record_decision(Metrics& metrics, const DecisionRecord& record) {
  if (!record.request) return;  // invalid bodies are counted in sizeguard_http_errors_total
  const std::string webhook(to_string(record.webhook));
  metrics.increment(kRequestsTotal, {{"webhook", webhook},
                                     {"operation", std::string(to_string(record.request->operation))},
                                     {"kind", record.request->kind.kind},
                                     {"decision", std::string(decision_label(record))}});
  metrics.observe(kDurationSeconds, {{"webhook", webhook}},
                  std::chrono::duration<double>(record.latency).count());
}

// ---------------------------------------------------------------------------------------
// Readiness.

void Readiness::set(const std::string& component, bool ready, std::string reason) {
  std::lock_guard lock(mutex_);
  components_[component] = State{ready, std::move(reason)};
}

Readiness::Report Readiness::report() const {
  std::lock_guard lock(mutex_);
  Report report;
  report.ready = !components_.empty();
  for (const auto& [name, state] : components_) {
    report.ready = report.ready && state.ready;
    // A ready component may still carry a reason: it is serving but degraded.
    if (state.ready) report.text += name + (state.reason.empty() ? ": ok" : ": ok (degraded: " + state.reason + ")");
    else report.text += name + ": not ready: " + (state.reason.empty() ? "starting" : state.reason);
    report.text += '\n';
  }
  if (components_.empty()) report.text = "not ready: nothing registered yet\n";
  return report;
}

// ---------------------------------------------------------------------------------------
// TLS.

namespace {

std::shared_ptr<SSL_CTX> make_server_context(const std::string& cert_path, const std::string& key_path) {
  for (const auto& [what, path] : {std::pair{"certificate", &cert_path}, std::pair{"private key", &key_path}}) {
    std::error_code ec;
    if (path->empty()) throw std::runtime_error(std::string("no TLS ") + what + " file given");
    if (!std::filesystem::is_regular_file(*path, ec)) {
      throw std::runtime_error(std::string("TLS ") + what + " file " + *path + " does not exist or is not a file");
    }
  }
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> context(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!context) throw std::runtime_error("cannot create a TLS context: " + openssl_errors());
  SSL_CTX* ctx = context.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set_cipher_list(ctx,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1 ||
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
    throw std::runtime_error("cannot configure TLS ciphers: " + openssl_errors());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_path.c_str()) != 1) {
    throw std::runtime_error("cannot load the TLS certificate chain from " + cert_path + ": " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("cannot load the TLS private key from " + key_path + ": " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    throw std::runtime_error("TLS private key " + key_path + " does not match certificate " + cert_path + ": " +
                             openssl_errors());
  }
  return context;
}

}  // namespace

TlsContext::TlsContext(std::string cert_path, std::string key_path)
    : cert_path_(std::move(cert_path)), key_path_(std::move(key_path)) {
  context_ = make_server_context(cert_path_, key_path_);
}

void TlsContext::reload() {
  auto fresh = make_server_context(cert_path_, key_path_);
  std::lock_guard lock(mutex_);
  context_ = std::move(fresh);
}

std::shared_ptr<SSL_CTX> TlsContext::current() const {
  std::lock_guard lock(mutex_);
  return context_;
}

std::chrono::system_clock::time_point TlsContext::not_after() const {
  auto context = current();
  const X509* cert = SSL_CTX_get0_certificate(context.get());
  std::tm tm{};
  if (!cert || ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// ---------------------------------------------------------------------------------------
// Addresses and sizing.

ListenAddress parse_listen_address(std::string_view text) {
  ListenAddress address;
  std::string_view port_text;
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("bad listen address '" + std::string(text) + "': " + why +
                                 " (expected HOST:PORT, :PORT or [IPV6]:PORT)");
  };
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    address.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') throw bad("missing ':PORT' after ']'");
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw bad("missing ':PORT'");
    address.host = std::string(text.substr(0, colon));
    if (address.host.find(':') != std::string::npos) throw bad("IPv6 addresses need brackets");
    port_text = text.substr(colon + 1);
  }
  if (address.host.empty()) address.host = "0.0.0.0";
  int port = -1;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port < 0 ||
      port > 65535) {
    throw bad("port must be a number from 0 to 65535");
  }
  address.port = port;
  return address;
}

std::size_t default_worker_count() {
  // Mostly they wait on idle keep-alive connections (each apiserver may keep tens of
  // them), which costs a small stack each, not CPU.
  std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max<std::size_t>(128, 32 * cores);
}

// ---------------------------------------------------------------------------------------
// AdmissionServer.

struct AdmissionServer::Impl {
  Impl(ServerOptions opts, AdmissionHandlers h, Metrics& m, Readiness& r, std::shared_ptr<spdlog::logger> l)
      : options(std::move(opts)),
        handlers(std::move(h)),
        metrics(m),
        readiness(r),
        logger(l ? std::move(l) : spdlog::default_logger()),
        tls(options.tls_cert, options.tls_key) {}

  ServerOptions options;
  AdmissionHandlers handlers;
  Metrics& metrics;
  Readiness& readiness;
  std::shared_ptr<spdlog::logger> logger;
  TlsContext tls;
  DrainSignal drain;
  std::unique_ptr<ConnectionServer> webhook_server, metrics_server;
  std::thread webhook_thread, metrics_thread;
  std::future<void> webhook_done, metrics_done;
  std::vector<std::pair<std::string, GetRouteHandler>> extra_routes;
  int webhook_port = 0, metrics_port = 0;
  bool started = false, stopped = false;

  void count_error(const std::string& listener, const httplib::Request& request, int status,
                   std::initializer_list<std::string_view> known_paths) {
    std::string path = "other";
    for (auto known : known_paths) {
      if (request.path == known) path = std::string(known);
    }
    metrics.increment(kHttpErrors, {{"listener", listener}, {"path", path}, {"code", std::to_string(status)}});
  }

  void observe(const DecisionRecord& record) {
    record_decision(metrics, record);
    log_decision(*logger, record);
  }

  void configure_webhook_server() {
    ConnectionLimits limits{options.read_timeout, options.write_timeout, options.idle_timeout, options.workers};
    webhook_server = std::make_unique<ConnectionServer>("webhook", &tls, limits, drain, metrics, *logger);
    auto& server = *webhook_server;
    // Answers stay plain: an AdmissionReview response is small, so gzip would cost more
    // CPU than it saves, and plain is always acceptable to the apiserver.
    server.setup_request = [](httplib::Request& request) { request.headers.erase("Accept-Encoding"); };
    server.set_payload_max_length(options.max_body_bytes);

    for (Webhook webhook : {Webhook::Mutate, Webhook::Validate}) {
      const std::string path = "/" + std::string(to_string(webhook));
      const AdmissionHandler& handler = webhook == Webhook::Mutate ? handlers.mutate : handlers.validate;
      server.Post(path, [this, webhook, &handler](const httplib::Request& request, httplib::Response& response,
                                                  const httplib::ContentReader& read_content) {
        std::string body;
        bool too_large = false;
        // A compressed body could inflate without bound, so reading stops at the limit
        // (and the connection then closes); a plain one is read through and discarded so
        // the connection stays in step, bounded by the per-request read deadline.
        const bool compressed = !request.get_header_value("Content-Encoding").empty() &&
                                request.get_header_value("Content-Encoding") != "identity";
        bool complete = read_content([&](const char* data, size_t length) {
          if (too_large || body.size() + length > options.max_body_bytes) {
            too_large = true;
            std::string().swap(body);
            return !compressed;
          }
          body.append(data, length);
          return true;
        });
        if (too_large || response.status == 413) {
          if (compressed) response.set_header("Connection", "close");
          response.status = 413;
          response.set_content(status_body(413, "request body is larger than the limit of " +
                                                    std::to_string(options.max_body_bytes) +
                                                    " bytes (--max-body-bytes)"),
                               kJsonType);
          return;
        }
        if (!complete) {
          response.status = 400;
          response.set_content(status_body(400, "could not read the request body (malformed chunked or "
                                                "compressed content, or the client stopped sending)"),
                               kJsonType);
          return;
        }
        HttpAnswer answer = handle_admission(webhook, body, handler,
                                             [this](const DecisionRecord& record) { observe(record); });
        response.status = answer.status;
        response.set_content(std::move(answer.body), answer.content_type);
        // Shutdown began while deciding: tell the client this connection ends here.
        if (drain.triggered()) response.set_header("Connection", "close");
      });
      auto not_allowed = [path](const httplib::Request& request, httplib::Response& response) {
        response.status = 405;
        response.set_header("Allow", "POST");
        response.set_content(
            status_body(405, "method " + request.method + " is not allowed on " + path + ": the webhook accepts POST only"),
            kJsonType);
      };
      server.Get(path, not_allowed).Put(path, not_allowed).Patch(path, not_allowed);
      server.Delete(path, not_allowed).Options(path, not_allowed);
    }

    server.set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!body_expected_without_length(request)) return httplib::Server::HandlerResponse::Unhandled;
      // httplib would read such a body until EOF; answer before reading anything instead.
      bool webhook_path = request.path == "/mutate" || request.path == "/validate";
      int status = request.method == "POST" ? 411 : webhook_path ? 405 : 404;
      response.status = status;
      if (status == 405) response.set_header("Allow", "POST");
      response.set_content(status_body(status, status == 411 ? "Content-Length or chunked Transfer-Encoding is required"
                                                             : "no " + request.method + " endpoint at " + request.path),
                           kJsonType);
      return httplib::Server::HandlerResponse::Handled;
    });

    server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& request, httplib::Response& response) {
      count_error("webhook", request, response.status, {"/mutate", "/validate"});
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message;
      switch (response.status) {
        case 404:
          message = "no endpoint at " + request.path + ": this listener serves POST /mutate and POST /validate";
          break;
        case 413:
          message = "request body is larger than the limit of " + std::to_string(options.max_body_bytes) +
                    " bytes (--max-body-bytes)";
          break;
        case 414: message = "request URI is too long"; break;
        default: message = "malformed HTTP request (status " + std::to_string(response.status) + ")";
      }
      response.set_content(status_body(response.status, message), kJsonType);
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  void configure_metrics_server() {
    ConnectionLimits limits{options.read_timeout, options.write_timeout, options.idle_timeout,
                            std::size_t{8}};  // probes and scrapes: few, short
    metrics_server = std::make_unique<ConnectionServer>("metrics", nullptr, limits, drain, metrics, *logger);
    auto& server = *metrics_server;
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
      response.set_content("ok\n", kTextType);
    });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& response) {
      auto report = readiness.report();
      response.status = report.ready ? 200 : 503;
      response.set_content(report.text, kTextType);
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    for (const auto& [path, handler] : extra_routes) {
      // An init-capture: clang 14 cannot capture a structured binding directly.
      server.Get(path, [handler = handler](const httplib::Request& request, httplib::Response& response) {
        HttpAnswer answer = handler(request.params);
        response.status = answer.status;
        response.set_content(std::move(answer.body),
                             answer.content_type.empty() ? std::string(kTextType) : answer.content_type);
      });
    }
    server.set_pre_routing_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!body_expected_without_length(request)) return httplib::Server::HandlerResponse::Unhandled;
      response.status = 405;
      response.set_content("this listener serves GET only\n", kTextType);
      return httplib::Server::HandlerResponse::Handled;
    });
    server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& request, httplib::Response& response) {
      count_error("metrics", request, response.status, {"/healthz", "/readyz", "/metrics"});
      if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      response.set_content(response.status == 404 ? "no endpoint at " + request.path + "\n"
                                                  : "HTTP " + std::to_string(response.status) + "\n",
                           kTextType);
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  static int bind(ConnectionServer& server, const std::string& text) {
    ListenAddress address = parse_listen_address(text);
    errno = 0;
    int port = address.port == 0 ? server.bind_to_any_port(address.host)
                                 : (server.bind_to_port(address.host, address.port) ? address.port : -1);
    if (port <= 0) {
      throw std::runtime_error("cannot listen on " + text + (errno ? std::string(": ") + std::strerror(errno) : ""));
    }
    server.raise_listen_backlog();
    return port;
  }

  static std::thread serve(ConnectionServer& server, std::future<void>& done) {
    std::packaged_task<void()> task([&server] { server.listen_after_bind(); });
    done = task.get_future();
    std::thread thread(std::move(task));
    for (int i = 0; i < 10'000 && !server.is_running(); ++i) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    return thread;
  }

  bool wait(std::future<void>& done, Clock::time_point deadline) {
    return !done.valid() || done.wait_until(deadline) == std::future_status::ready;
  }
};

AdmissionServer::AdmissionServer(ServerOptions options, AdmissionHandlers handlers, Metrics& metrics,
                                 Readiness& readiness, std::shared_ptr<spdlog::logger> logger)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handlers), metrics, readiness, std::move(logger))) {
  describe_server_metrics(metrics, SIZEGUARD_VERSION);
  readiness.set("webhook-listener", false, "not started");
  record_cert_expiry();
}

void AdmissionServer::record_cert_expiry() {
  auto not_after = impl_->tls.not_after();
  impl_->metrics.set(kCertExpiry, {}, static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                           not_after.time_since_epoch()).count()));
}

void AdmissionServer::reload_tls() {
  impl_->tls.reload();
  record_cert_expiry();
}

AdmissionServer::~AdmissionServer() {
  try {
    shutdown();
  } catch (...) {
  }
  if (impl_->webhook_thread.joinable()) impl_->webhook_thread.join();
  if (impl_->metrics_thread.joinable()) impl_->metrics_thread.join();
}

void AdmissionServer::add_get_route(const std::string& path, GetRouteHandler handler) {
  if (impl_->started) throw std::logic_error("add_get_route(" + path + ") called after start()");
  impl_->extra_routes.emplace_back(path, std::move(handler));
}

void AdmissionServer::start() {
  Impl& impl = *impl_;
  if (impl.started) return;
  impl.configure_webhook_server();
  impl.configure_metrics_server();
  impl.webhook_port = Impl::bind(*impl.webhook_server, impl.options.listen);
  impl.metrics_port = Impl::bind(*impl.metrics_server, impl.options.metrics_listen);
  impl.started = true;
  impl.webhook_thread = Impl::serve(*impl.webhook_server, impl.webhook_done);
  impl.metrics_thread = Impl::serve(*impl.metrics_server, impl.metrics_done);
  impl.readiness.set("webhook-listener", true);
  log_event(*impl.logger, spdlog::level::info, "listening",
            {{"webhook", impl.options.listen},
             {"webhook_port", std::to_string(impl.webhook_port), true},
             {"metrics", impl.options.metrics_listen},
             {"metrics_port", std::to_string(impl.metrics_port), true},
             {"workers", std::to_string(impl.options.workers), true}});
}

int AdmissionServer::webhook_port() const { return impl_->webhook_port; }
int AdmissionServer::metrics_port() const { return impl_->metrics_port; }

bool AdmissionServer::shutdown() {
  Impl& impl = *impl_;
  if (!impl.started || impl.stopped) return true;
  impl.stopped = true;
  const auto deadline = Clock::now() + impl.options.drain_timeout;
  impl.drain.trigger();
  impl.readiness.set("webhook-listener", false, "shutting down");
  impl.webhook_server->stop();  // stop accepting; queued connections are still served
  bool drained = impl.wait(impl.webhook_done, deadline);
  impl.metrics_server->stop();
  drained = impl.wait(impl.metrics_done, std::max(deadline, Clock::now() + milliseconds(1000))) && drained;
  if (drained) {
    impl.webhook_thread.join();
    impl.metrics_thread.join();
  }
  log_event(*impl.logger, drained ? spdlog::level::info : spdlog::level::warn,
            drained ? "drained" : "drain timeout: connections still busy", {});
  return drained;
}

TlsContext& AdmissionServer::tls() { return impl_->tls; }

}  // namespace sizeguard
