#include "webhook/connection_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_set>
#include <vector>

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include "kube/metrics.h"
#include "webhook/admission_core.h"
#include "webhook/http_framing.h"
#include "webhook/large_review_lane.h"
#include "webhook/logging.h"
#include "webhook/thread_name.h"
#include "webhook/tls_context.h"
#include "webhook/worker_pool.h"

namespace sizeguard {
namespace {

// Reason phrases for the status lines the event loop writes itself.
std::string_view http_reason(int code) {
  switch (code) {
    case 400: return "Bad Request";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default: return "Error";
  }
}

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

// How long the loop keeps discarding an oversize body after its 413 (also bounded by the
// read timeout and by the declared length).
constexpr milliseconds kMaxLinger{5'000};
// When shutdown starts, idle keep-alive connections stay open this long (or until their
// idle timeout, if sooner) before they are closed. A client may have written a request on
// one a moment ago; closing at once would drop it unanswered, which the apiserver does not
// retry for a POST. A request in that moment is answered with "Connection: close".
constexpr milliseconds kDrainIdleGrace{1'000};

// How long a worker that answered a keep-alive request waits on that connection for the next
// one before giving it back to the loop (see ConnectionServer::await_next_request), and how
// many other workers must be idle meanwhile.
constexpr milliseconds kWorkerLinger{20};
constexpr std::size_t kMinIdleWorkersToLinger = 2;

// Non-blocking read of up to `size` bytes: > 0 bytes read, 0 at EOF, kWouldBlock (with
// `events` set to what to wait for), or kFailed.
constexpr ssize_t kWouldBlock = -1, kFailed = -2;
ssize_t read_some(int fd, SSL* ssl, char* ptr, std::size_t size, short& events) {
  if (ssl) {
    ERR_clear_error();
    std::size_t got = 0;
    int rc = SSL_read_ex(ssl, ptr, size, &got);
    if (rc == 1) return static_cast<ssize_t>(got);
    int error = SSL_get_error(ssl, rc);
    if (error == SSL_ERROR_ZERO_RETURN) return 0;
    events = error == SSL_ERROR_WANT_READ ? POLLIN : error == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    return events ? kWouldBlock : kFailed;
  }
  for (;;) {
    ssize_t n = ::recv(fd, ptr, size, 0);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    events = POLLIN;
    return errno == EAGAIN || errno == EWOULDBLOCK ? kWouldBlock : kFailed;
  }
}

// Appends what the socket has (one chunk, through the caller's scratch buffer) to c.in.
// Connections only hold what they received.
ssize_t receive(Connection& c, char (&scratch)[kReadChunk], short& events) {
  ssize_t n = read_some(c.fd, c.ssl.get(), scratch, sizeof scratch, events);
  if (n > 0) c.in.append(scratch, static_cast<std::size_t>(n));
  return n;
}

// The byte stream httplib's request parser and response writer use in a worker: first
// the bytes the loop buffered, then (for handed-over requests) the socket, bounded by
// the per-request deadline. Writes are buffered and flushed as one TLS record per
// response, each flush bounded by the write timeout.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, milliseconds write_timeout) : c_(c), write_timeout_(write_timeout) {}

  void start_request(Clock::time_point read_deadline) { read_deadline_ = read_deadline; }

  bool has_buffered_input() const {
    return c_.pos < c_.in.size() || c_.skipped > 0 || (c_.ssl && SSL_has_pending(c_.ssl.get()) == 1);
  }

  bool is_readable() const override { return has_buffered_input() || wait_fd(c_.fd, POLLIN, read_deadline_); }
  bool is_writable() const override { return wait_fd(c_.fd, POLLOUT, Clock::now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (!out_.empty() && !flush()) return -1;  // e.g. "100 Continue" must go out first
    // The oversize body is not there: httplib, skipping it, meets the end of the stream
    // and answers 413 (the connection closes afterwards).
    if (c_.skipped > 0 && c_.pos == c_.skip_at) return 0;
    std::size_t limit = c_.skipped > 0 ? c_.skip_at : c_.in.size();
    if (c_.pos < limit) {
      std::size_t n = std::min(size, limit - c_.pos);
      std::memcpy(ptr, c_.in.data() + c_.pos, n);
      c_.pos += n;
      return static_cast<ssize_t>(n);
    }
    // Everything buffered is parsed: this request was handed over before it was complete.
    c_.in.clear();
    c_.pos = 0;
    if (size >= kReadChunk) return read_blocking(ptr, size);
    c_.in.resize(kReadChunk);
    ssize_t n = read_blocking(c_.in.data(), kReadChunk);
    c_.in.resize(static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
    if (n <= 0) return n;
    c_.pos = std::min(size, c_.in.size());
    std::memcpy(ptr, c_.in.data(), c_.pos);
    return static_cast<ssize_t>(c_.pos);
  }

  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    if (out_.size() >= kFlushThreshold && !flush()) return -1;
    return static_cast<ssize_t>(size);
  }

  bool flush() {
    auto deadline = Clock::now() + write_timeout_;
    size_t done = 0;
    SSL* ssl = c_.ssl.get();
    while (done < out_.size()) {
      if (ssl) {
        ERR_clear_error();
        size_t written = 0;
        int rc = SSL_write_ex(ssl, out_.data() + done, out_.size() - done, &written);
        if (rc == 1) {
          done += written;
          continue;
        }
        int error = SSL_get_error(ssl, rc);
        short events = error == SSL_ERROR_WANT_WRITE ? POLLOUT : error == SSL_ERROR_WANT_READ ? POLLIN : 0;
        if (events == 0 || !wait_fd(c_.fd, events, deadline)) return fail_output();
      } else {
        ssize_t n = ::send(c_.fd, out_.data() + done, out_.size() - done, MSG_NOSIGNAL);
        if (n >= 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        if (errno == EINTR) continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || !wait_fd(c_.fd, POLLOUT, deadline)) {
          return fail_output();
        }
      }
    }
    out_.clear();
    return true;
  }

  bool healthy() const { return !c_.broken; }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.remote_ip;
    port = c_.remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  socket_t socket() const override { return c_.fd; }

 private:
  static constexpr size_t kFlushThreshold = 16 * 1024;

  bool fail_output() {
    out_.clear();
    c_.broken = true;
    return false;
  }

  ssize_t read_blocking(char* ptr, size_t size) {
    for (;;) {
      short events = 0;
      ssize_t n = read_some(c_.fd, c_.ssl.get(), ptr, size, events);
      if (n >= 0) return n;
      if (n == kFailed || !wait_fd(c_.fd, events, read_deadline_)) {
        c_.broken = true;
        return -1;
      }
    }
  }

  Connection& c_;
  milliseconds write_timeout_;
  Clock::time_point read_deadline_ = Clock::now();
  std::string out_;
};


}  // namespace

// The `path` label of sizeguard_http_errors_total: one of the listener's known paths, or
// "other" (arbitrary paths would make unbounded series).
std::string error_path_label(std::string_view path, std::initializer_list<std::string_view> known_paths) {
  for (auto known : known_paths) {
    if (path == known) return std::string(known);
  }
  return "other";
}

ConnectionServer::ConnectionServer(std::string listener, const TlsContext* tls, ConnectionLimits limits,
                                   const DrainSignal& drain, Metrics& metrics, spdlog::logger& log)
    : listener_(std::move(listener)), tls_(tls), limits_(limits), drain_(drain), metrics_(metrics), log_(log) {
  // Only for the Keep-Alive header httplib writes; the loop below enforces both.
  set_keep_alive_timeout(std::max<time_t>(1, std::chrono::duration_cast<std::chrono::seconds>(limits.idle_timeout).count()));
  set_keep_alive_max_count(kMaxRequestsPerConnection);
  // httplib's default adds SO_REUSEPORT, which lets a second process bind the same port
  // and silently share its traffic; a busy port must be a startup error instead.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (wake_fd_ < 0 || epoll_fd_ < 0) {
    throw std::runtime_error(std::string("cannot create the event loop: ") + std::strerror(errno));
  }
  const MetricLabels labels{{"listener", listener_}};
  metrics_.set(kWorkers, labels, static_cast<double>(limits.workers));
  metrics_.set(kOpenConnections, labels, 0);
  metrics_.set(kBusyWorkers, labels, 0);
  metrics_.increment(kRejectedConnections, labels, 0);
}

ConnectionServer::~ConnectionServer() {
  close_listener();
  ::close(wake_fd_);
  ::close(epoll_fd_);
}

void ConnectionServer::stop() {
  stopping_ = true;
  wake();
}

void ConnectionServer::run() {
  block_sigpipe();  // a peer closing mid-handshake must not kill the process
  name_this_thread("sg-" + listener_);
  WorkerPool pool(limits_.workers, "sg-" + listener_ + "-w");
  pool_ = &pool;
  std::optional<LargeReviewLane> lane;
  if (limits_.large_request_bytes > 0) {
    lane.emplace(limits_.large_request_queue, LanePriority::Idle, [this](std::size_t waiting) {
      metrics_.set(kLargeReviewsWaiting, {}, static_cast<double>(waiting));
    });
    lane_ = &*lane;
  }
  listen_fd_ = svr_sock_;
  ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  watch(listen_fd_, &listen_marker_, EPOLLIN, EPOLL_CTL_ADD);
  watch(wake_fd_, &wake_marker_, EPOLLIN, EPOLL_CTL_ADD);
  watch(drain_.fd(), &drain_marker_, EPOLLIN, EPOLL_CTL_ADD);
  running_ = true;
  auto next_sweep = Clock::now();
  std::vector<epoll_event> events(256);
  for (;;) {
    if (stopping_ && listen_fd_ >= 0) close_listener();
    if (stopping_ && owned_.empty() && busy_ == 0) break;
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) {
      log_.error("{}: epoll_wait failed: {}", listener_, std::strerror(errno));
      std::this_thread::sleep_for(milliseconds(10));
    }
    // Idle connections workers re-armed without waking the loop: owned again before
    // their next request's event is looked at below.
    if (returned_waiting_.load(std::memory_order_acquire)) take_back();
    for (int i = 0; i < n; ++i) {
      void* what = events[i].data.ptr;
      if (what == &listen_marker_) accept_connections();
      else if (what == &wake_marker_) {
        std::uint64_t count;
        [[maybe_unused]] auto got = ::read(wake_fd_, &count, sizeof count);
        take_back();
      }
      else if (what == &drain_marker_) start_drain();
      else {
        auto* c = static_cast<Connection*>(what);
        if (owned_.count(c)) on_ready(c);
      }
    }
    auto now = Clock::now();
    if (now >= next_sweep) {
      sweep(now);
      next_sweep = now + milliseconds(100);
    }
  }
  pool.shutdown();  // every job already ran: nothing is busy
  pool_ = nullptr;
  lane_ = nullptr;
  lane.reset();
  running_ = false;
}

void ConnectionServer::block_sigpipe() {
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
}

void ConnectionServer::wake() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof one);
}

void ConnectionServer::watch(int fd, void* tag, std::uint32_t events, int op) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = tag;
  ::epoll_ctl(epoll_fd_, op, fd, &event);
}

void ConnectionServer::close_listener() {
  int fd = svr_sock_.exchange(INVALID_SOCKET);
  if (fd == INVALID_SOCKET) return;
  if (running_) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  listen_fd_ = -1;
}

void ConnectionServer::accept_connections() {
  for (int batch = 0; batch < 64 && listen_fd_ >= 0; ++batch) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of descriptors or memory: stop accepting for a moment instead of spinning.
      log_.warn("{}: accept failed: {}; pausing accepts for 100 ms", listener_, std::strerror(errno));
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
      accept_paused_until_ = Clock::now() + milliseconds(100);
      return;
    }
    if (owned_.size() + busy_ >= limits_.max_connections) {
      metrics_.increment(kRejectedConnections, {{"listener", listener_}});  // before the peer sees EOF
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->remote_ip = numeric_address(address, length, c->remote_port);
    length = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      c->local_ip = numeric_address(address, length, c->local_port);
    }
    c->deadline = Clock::now() + limits_.read_timeout;  // handshake, then the first request
    if (tls_) {
      c->ssl.reset(SSL_new(tls_->current().get()));  // the SSL keeps its own reference
      if (!c->ssl || SSL_set_fd(c->ssl.get(), fd) != 1) {
        metrics_.increment(kHandshakeFailures);
        log_.warn("{}: cannot set up TLS for a connection: {}", listener_, openssl_errors());
        ::close(fd);
        continue;
      }
      SSL_set_accept_state(c->ssl.get());
      c->phase = Connection::Phase::Handshake;
    }
    metrics_.increment(kConnectionsTotal, {{"listener", listener_}});
    metrics_.increment(kOpenConnections, {{"listener", listener_}}, 1);
    watch(fd, c.get(), EPOLLIN, EPOLL_CTL_ADD);
    owned_.insert(c.release());
  }
}

void ConnectionServer::on_ready(Connection* c) {
  if (c->phase == Connection::Phase::Lingering) {
    discard_input(c);
    return;
  }
  if (c->writing && c->phase != Connection::Phase::Handshake) {
    watch(c->fd, c, EPOLLIN, EPOLL_CTL_MOD);
    c->writing = false;
  }
  if (c->phase == Connection::Phase::Handshake) {
    ERR_clear_error();
    int rc = SSL_accept(c->ssl.get());
    if (rc != 1) {
      int error = SSL_get_error(c->ssl.get(), rc);
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        bool writing = error == SSL_ERROR_WANT_WRITE;
        if (writing != c->writing) watch(c->fd, c, writing ? EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
        c->writing = writing;
        return;
      }
      metrics_.increment(kHandshakeFailures);
      log_.debug("{}: TLS handshake failed: {}", listener_, openssl_errors());
      c->broken = true;
      close_connection(c);
      return;
    }
    if (c->writing) watch(c->fd, c, EPOLLIN, EPOLL_CTL_MOD);
    c->writing = false;
    c->phase = Connection::Phase::AwaitFirst;
    c->deadline = Clock::now() + limits_.read_timeout;
  }
  // Bounded per wake-up, so one fast sender cannot monopolise the loop.
  for (int round = 0; round < 16; ++round) {
    short events = 0;
    const std::size_t before = c->in.size();
    ssize_t n = receive(*c, scratch_, events);
    buffered_ += c->in.size() - before;
    if (n == kWouldBlock) {
      bool writing = events == POLLOUT;  // OpenSSL must write first (rare)
      if (writing != c->writing) watch(c->fd, c, writing ? EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
      c->writing = writing;
      return;
    }
    if (n <= 0) {
      c->broken = n < 0;
      close_connection(c);
      return;
    }
    if (c->phase != Connection::Phase::Receiving) {
      c->phase = Connection::Phase::Receiving;
      c->request_started = Clock::now();
      c->deadline = c->request_started + limits_.read_timeout;
    }
    if (!advance(c)) return;
  }
}

bool ConnectionServer::advance(Connection* c) {
  const std::size_t before = c->in.size();
  Framing framing = frame_request(*c, limits_.max_body_bytes);
  // Body bytes over the limit were dropped, or a chunked body was decoded.
  buffered_ = buffered_ - before + c->in.size();
  if (framing == Framing::Refused) {
    refuse_request(c);
    return false;
  }
  // Owed even when a worker receives the rest: httplib no longer sees the Expect header.
  if (c->continue_due) {
    c->continue_due = false;
    if (!write_now(*c, "HTTP/1.1 100 Continue\r\n\r\n")) {
      c->broken = true;
      close_connection(c);
      return false;
    }
  }
  // Past the buffer budget a worker receives the rest, as a worker used to receive
  // every request: memory stays bounded by the workers, not by the connections.
  if (framing == Framing::Complete || buffered_ > limits_.max_buffered_bytes) {
    hand_over(c, framing);
    return false;
  }
  return true;
}

bool ConnectionServer::write_now(Connection& c, std::string_view bytes) {
  if (c.ssl) {
    ERR_clear_error();
    std::size_t written = 0;
    return SSL_write_ex(c.ssl.get(), bytes.data(), bytes.size(), &written) == 1 && written == bytes.size();
  }
  while (!bytes.empty()) {
    ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

void ConnectionServer::refuse_request(Connection* c) {
  const int status = c->refuse_status;
  std::string_view target(c->in.data(), std::min(c->in.size(), c->in.find('\n')));
  target.remove_prefix(std::min(target.size(), target.find(' ') + 1));
  target = target.substr(0, target.find_first_of(" ?"));
  metrics_.increment(kHttpErrors, {{"listener", listener_},
                                   {"path", limits_.json_errors ? error_path_label(target, {"/mutate", "/validate"})
                                                                       : error_path_label(target, {"/healthz", "/readyz", "/metrics"})},
                                   {"code", std::to_string(status)}});
  const std::string body = limits_.json_errors ? status_body(status, c->refuse_message) : c->refuse_message + "\n";
  const std::string answer = "HTTP/1.1 " + std::to_string(status) + " " + std::string(http_reason(status)) +
                             "\r\nContent-Type: " + (limits_.json_errors ? kJsonType : kTextType) +
                             "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  c->writing = false;
  if (!write_now(*c, answer)) {
    c->broken = true;
    close_connection(c);
    return;
  }
  c->linger_budget = limits_.max_body_bytes + 64 * 1024;
  start_lingering(c, Clock::now());
}

bool ConnectionServer::is_large(const Connection& c) const {
  return lane_ && c.body_bytes > limits_.large_request_bytes;
}

void ConnectionServer::hand_over(Connection* c, Framing framing) {
  buffered_ -= c->in.size();
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c->fd, nullptr);
  owned_.erase(c);
  ++busy_;
  // Complete large requests only: one still arriving (over the buffer budget) would hold
  // the single lane thread while its client sends.
  if (framing == Framing::Complete && is_large(*c)) {
    if (!lane_->try_post([this, c] { serve_requests(c, true); })) {
      pool_->enqueue([this, c] { refuse_large(c); });
    }
    return;
  }
  pool_->enqueue([this, c] { serve_requests(c, false); });
}

void ConnectionServer::serve_requests(Connection* c, bool on_lane) {
  metrics_.increment(kBusyWorkers, {{"listener", listener_}}, 1);
  try {
    ConnectionStream stream(*c, limits_.write_timeout);
    for (;;) {
      stream.start_request(c->request_started + limits_.read_timeout);
      // After an oversize body (c->skipped) the connection ends: staying in step would
      // mean decrypting the whole body.
      bool close_after = drain_.triggered() || c->served + 1 >= kMaxRequestsPerConnection || c->skipped > 0;
      bool client_closed = false;
      bool ok = process_request(stream, close_after, client_closed, setup_request);
      if (on_lane) metrics_.increment(kLargeReviews, {{"outcome", "decided"}});  // before the client sees it
      ++c->served;
      close_after = close_after || drain_.triggered();  // shutdown began while answering
      if (!stream.flush() || !ok || !stream.healthy() || client_closed || close_after) {
        c->close = true;
        break;
      }
      c->consume();
      if (on_lane) break;  // the loop hands on whatever follows
      if (c->in.empty()) {
        metrics_.increment(kBusyWorkers, {{"listener", listener_}}, -1);  // waiting is not answering
        const bool next = await_next_request(*c);
        metrics_.increment(kBusyWorkers, {{"listener", listener_}}, 1);
        if (!next) break;
      }
      if (frame_request(*c, limits_.max_body_bytes) != Framing::Complete) break;
      if (is_large(*c)) break;  // the loop hands it to the lane
      c->request_started = Clock::now();
    }
  } catch (const std::exception& e) {
    log_.error("{} connection failed: {}", listener_, e.what());
    c->close = c->broken = true;
  } catch (...) {
    log_.error("{} connection failed with an unknown exception", listener_);
    c->close = c->broken = true;
  }
  metrics_.increment(kBusyWorkers, {{"listener", listener_}}, -1);
  give_back(c);
}

bool ConnectionServer::await_next_request(Connection& c) {
  // The apiserver keeps one keep-alive connection per webhook and sends the next review on
  // it within milliseconds at a steady rate. Waiting for it here, on the socket (as a
  // thread-per-connection server does), saves handing the connection back to the loop and
  // the next request over to a worker: two cross-thread wake-ups and two epoll_ctl per
  // request, a tenth of the CPU per review at that rate. Only while other workers are idle
  // (a waiting worker never delays another connection's request) and not while draining.
  if (drain_.triggered() || pool_->idle() < kMinIdleWorkersToLinger) return false;
  const bool pending = c.ssl && SSL_has_pending(c.ssl.get()) == 1;
  if (!pending && !wait_fd(c.fd, POLLIN, Clock::now() + kWorkerLinger)) return false;
  if (drain_.triggered()) return false;  // the loop answers it, or closes the connection
  c.request_started = Clock::now();
  // What has arrived (whole TLS records); a partial request goes back to the loop, which
  // receives the rest under its buffer budget and its read deadline.
  char scratch[kReadChunk];
  for (int round = 0; round < 4; ++round) {
    short events = 0;
    const ssize_t n = receive(c, scratch, events);
    if (n == kWouldBlock) break;
    if (n <= 0) {  // the client closed it, or it failed
      c.close = true;
      c.broken = n < 0;
      return false;
    }
    if (!(c.ssl && SSL_has_pending(c.ssl.get()) == 1)) break;
  }
  return !c.in.empty();
}

void ConnectionServer::refuse_large(Connection* c) {
  metrics_.increment(kLargeReviews, {{"outcome", "refused"}});
  // The target of the request line "POST /mutate?timeout=10s HTTP/1.1", without its query.
  std::string_view target(c->in.data(), std::min(c->in.size(), c->in.find('\n')));
  target.remove_prefix(std::min(target.size(), target.find(' ') + 1));
  target = target.substr(0, target.find_first_of(" ?"));
  metrics_.increment(kHttpErrors, {{"listener", listener_},
                                   {"path", error_path_label(target, {"/mutate", "/validate"})},
                                   {"code", "429"}});
  const std::string body =
      status_body(429, "too many large reviews waiting (" + std::to_string(limits_.large_request_queue) +
                           " queued behind one running); bodies over " + std::to_string(limits_.large_request_bytes) +
                           " bytes are answered one at a time (--large-review-bytes)");
  const bool close_after = drain_.triggered();
  const std::string head = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + (close_after ? "\r\nConnection: close" : "") + "\r\n\r\n";
  ConnectionStream stream(*c, limits_.write_timeout);
  stream.write(head.data(), head.size());
  stream.write(body.data(), body.size());
  if (!stream.flush() || close_after) c->close = true;
  c->pos = c->needed;
  c->consume();
  give_back(c);
}

void ConnectionServer::give_back(Connection* c) {
  // The common case, a keep-alive connection with nothing more buffered, goes straight
  // back into the epoll set from here: the loop is not woken (an eventfd write, a
  // context switch and an epoll_ctl per request at the apiserver's rate) and takes it
  // back when it next wakes, at the latest for its next request. It is added before it
  // is listed, so the loop never closes (frees) a connection this thread still touches;
  // an event seen before the listing just fires again (level-triggered).
  const bool quiet = !c->close && c->in.empty() && !(c->ssl && SSL_has_pending(c->ssl.get()) == 1);
  if (quiet) {
    const auto now = Clock::now();
    std::string().swap(c->in);  // idle connections hold no buffer
    c->phase = Connection::Phase::Idle;
    c->deadline = now + (drain_.triggered() ? std::min(limits_.idle_timeout, kDrainIdleGrace) : limits_.idle_timeout);
    c->rearmed = true;
    watch(c->fd, c, EPOLLIN, EPOLL_CTL_ADD);
  }
  bool first;
  {
    std::lock_guard lock(returned_mutex_);
    first = returned_.empty();
    returned_.push_back(c);
    returned_waiting_.store(true, std::memory_order_release);
  }
  if (first && !quiet) wake();
}

void ConnectionServer::take_back() {
  std::vector<Connection*> back;
  {
    std::lock_guard lock(returned_mutex_);
    back.swap(returned_);
    returned_waiting_.store(false, std::memory_order_relaxed);
  }
  const auto now = Clock::now();
  for (Connection* c : back) {
    --busy_;
    owned_.insert(c);
    buffered_ += c->in.size();
    if (c->rearmed) {  // already idle and watched (give_back)
      c->rearmed = false;
      if (drain_.triggered()) c->deadline = std::min(c->deadline, now + kDrainIdleGrace);
      continue;
    }
    if (c->close && c->linger_budget > 0 && !c->broken && !drain_.triggered()) {
      start_lingering(c, now);
      continue;
    }
    if (c->close) {
      close_connection(c);
      continue;
    }
    if (c->in.empty()) {
      std::string().swap(c->in);  // idle connections hold no buffer
      c->phase = Connection::Phase::Idle;
      c->deadline = now + (drain_.triggered() ? std::min(limits_.idle_timeout, kDrainIdleGrace) : limits_.idle_timeout);
    } else {  // part of the next request is already here
      c->phase = Connection::Phase::Receiving;
      c->request_started = now;
      c->deadline = now + limits_.read_timeout;
    }
    watch(c->fd, c, EPOLLIN, EPOLL_CTL_ADD);
    // A request already buffered whole (behind a large one, or a large one behind
    // ordinary ones) goes out again at once.
    if (!c->in.empty() && !advance(c)) continue;
    // Bytes OpenSSL already holds never make the socket readable again.
    if (c->ssl && SSL_has_pending(c->ssl.get()) == 1) on_ready(c);
  }
}

void ConnectionServer::start_lingering(Connection* c, Clock::time_point now) {
  if (c->ssl) {
    ERR_clear_error();
    SSL_shutdown(c->ssl.get());  // close_notify after the answer, never waiting for the peer's
  }
  ::shutdown(c->fd, SHUT_WR);
  buffered_ -= c->in.size();
  std::string().swap(c->in);
  c->phase = Connection::Phase::Lingering;
  c->deadline = now + std::min<milliseconds>(limits_.read_timeout, kMaxLinger);
  watch(c->fd, c, EPOLLIN, EPOLL_CTL_ADD);
  discard_input(c);
}

void ConnectionServer::discard_input(Connection* c) {
  for (int round = 0; round < 64; ++round) {  // bounded per wake-up, like on_ready
    ssize_t n = ::recv(c->fd, scratch_, sizeof scratch_, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0 || static_cast<std::uint64_t>(n) >= c->linger_budget) {
      close_connection(c);
      return;
    }
    c->linger_budget -= static_cast<std::uint64_t>(n);
  }
}

void ConnectionServer::start_drain() {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, drain_.fd(), nullptr);  // it stays readable
  const auto grace_end = Clock::now() + std::min(limits_.idle_timeout, kDrainIdleGrace);
  std::vector<Connection*> lingering;
  for (Connection* c : owned_) {
    if (c->phase == Connection::Phase::Idle) c->deadline = std::min(c->deadline, grace_end);
    if (c->phase == Connection::Phase::Lingering) lingering.push_back(c);
  }
  for (Connection* c : lingering) close_connection(c);
}

void ConnectionServer::sweep(Clock::time_point now) {
  if (listen_fd_ >= 0 && accept_paused_until_ && now >= *accept_paused_until_) {
    accept_paused_until_.reset();
    watch(listen_fd_, &listen_marker_, EPOLLIN, EPOLL_CTL_ADD);
  }
  std::vector<Connection*> expired;
  for (Connection* c : owned_) {
    if (now >= c->deadline) expired.push_back(c);
  }
  for (Connection* c : expired) {
    if (c->phase == Connection::Phase::Handshake) metrics_.increment(kHandshakeFailures);
    if (c->phase != Connection::Phase::Idle && c->phase != Connection::Phase::Lingering) {
      c->broken = true;  // no close_notify mid-request
    }
    close_connection(c);
  }
}

void ConnectionServer::close_connection(Connection* c) {
  owned_.erase(c);
  buffered_ -= c->in.size();
  if (c->ssl && !c->broken && c->phase != Connection::Phase::Handshake && c->phase != Connection::Phase::Lingering) {
    ERR_clear_error();
    SSL_shutdown(c->ssl.get());  // best effort close_notify; never wait for the peer's
  }
  ::close(c->fd);  // also removes it from the epoll set
  metrics_.increment(kOpenConnections, {{"listener", listener_}}, -1);
  delete c;
}

}  // namespace sizeguard
