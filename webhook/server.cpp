#include "webhook/server.h"

#include "webhook/large_review_lane.h"
#include "webhook/thread_name.h"

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
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_set>
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
    case 429: return "TooManyRequests";
    case 503: return "ServiceUnavailable";
    default: return code >= 500 ? "InternalError" : "BadRequest";
  }
}

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

// 0.002 is there so the p99 ≤ 2 ms goal can be read off the histogram.
const std::vector<double> kDurationBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0025, 0.005,
                                              0.01,   0.025,   0.05,   0.1,   0.25,  0.5,    1};

constexpr const char* kRequestsTotal = "sizeguard_admission_requests_total";
constexpr const char* kDurationSeconds = "sizeguard_admission_duration_seconds";
constexpr const char* kHttpErrors = "sizeguard_http_errors_total";
constexpr const char* kHandshakeFailures = "sizeguard_tls_handshake_failures_total";
constexpr const char* kOpenConnections = "sizeguard_http_open_connections";
constexpr const char* kWorkers = "sizeguard_http_workers";
constexpr const char* kBusyWorkers = "sizeguard_http_busy_workers";
constexpr const char* kRejectedConnections = "sizeguard_http_rejected_connections_total";
constexpr const char* kLargeReviews = "sizeguard_large_reviews_total";
constexpr const char* kLargeReviewsWaiting = "sizeguard_large_reviews_waiting";
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
// Worker pool: answers complete requests. Unlike httplib::ThreadPool it blocks SIGPIPE in
// its threads (a peer closing mid-write must not kill the process), and it hands a job to
// the worker that went idle last (a stack, each worker waiting on its own condition
// variable): at the apiserver's rate, one request at a time, the same one or two threads
// answer every request with warm caches and a warm malloc arena, instead of a condition
// variable shared by all waking whichever of the 128 threads has slept longest.

class WorkerPool final : public httplib::TaskQueue {
 public:
  WorkerPool(std::size_t count, std::string thread_name) : thread_name_(std::move(thread_name)) {
    for (std::size_t i = 0; i < std::max<std::size_t>(count, 1); ++i) {
      threads_.emplace_back([this] { run(); });
    }
  }
  ~WorkerPool() override { shutdown(); }

  void enqueue(std::function<void()> job) override {
    std::unique_lock lock(mutex_);
    if (idle_.empty()) {  // every worker busy: the first to finish takes it
      jobs_.push_back(std::move(job));
      return;
    }
    Idle* worker = idle_.back();
    idle_.pop_back();
    worker->job = std::move(job);
    lock.unlock();
    worker->wake.notify_one();
  }

  // Runs every queued job (accepted connections are served, not dropped), then joins.
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      for (Idle* worker : idle_) worker->wake.notify_one();
    }
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  struct Idle {
    std::condition_variable wake;
    std::function<void()> job;  // set by enqueue when it picks this worker
  };

  void run() {
    name_this_thread(thread_name_);
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    Idle self;
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        if (!jobs_.empty()) {
          job = std::move(jobs_.front());
          jobs_.pop_front();
        } else if (stopping_) {
          return;
        } else {
          idle_.push_back(&self);
          self.wake.wait(lock, [&] { return self.job || stopping_; });
          if (!self.job) {  // stopping, and never picked: leave the idle stack
            idle_.erase(std::find(idle_.begin(), idle_.end(), &self));
            continue;  // queued jobs still run before the thread ends
          }
          job = std::move(self.job);
          self.job = nullptr;
        }
      }
      job();
    }
  }

  std::string thread_name_;
  std::mutex mutex_;
  std::deque<std::function<void()>> jobs_;
  std::vector<Idle*> idle_;  // most recently idle last
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// The `path` label of sizeguard_http_errors_total: one of the listener's known paths, or
// "other" (arbitrary paths would make unbounded series).
std::string error_path_label(std::string_view path, std::initializer_list<std::string_view> known_paths) {
  for (auto known : known_paths) {
    if (path == known) return std::string(known);
  }
  return "other";
}

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

// Header sections larger than this are refused (431): the loop does not buffer more while
// looking for the end of the headers (a worker given them would wait for the rest).
constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
constexpr std::size_t kReadChunk = 16 * 1024;  // one TLS record's worth of plaintext
// How long the loop keeps discarding an oversize body after its 413 (also bounded by the
// read timeout and by the declared length).
constexpr milliseconds kMaxLinger{5'000};
// When shutdown starts, idle keep-alive connections stay open this long (or until their
// idle timeout, if sooner) before they are closed. A client may have written a request on
// one a moment ago; closing at once would drop it unanswered, which the apiserver does not
// retry for a POST. A request in that moment is answered with "Connection: close".
constexpr milliseconds kDrainIdleGrace{1'000};

// One client connection. The listener's event loop owns it while it handshakes, waits
// for a request or receives one; a worker owns it from the moment a complete request is
// buffered until the answer is written. Ownership moves through queues, never shared.
struct Connection {
  enum class Phase { Handshake, AwaitFirst, Idle, Receiving, Lingering };
  int fd = -1;
  SslPtr ssl;
  Phase phase = Phase::AwaitFirst;
  Clock::time_point deadline;         // of the current phase
  Clock::time_point request_started;  // first byte of the request being received
  std::size_t served = 0;
  bool close = false;  // set by the worker: close once back in the loop
  bool broken = false;  // I/O failed: no close_notify
  bool writing = false;  // the handshake waits for the socket to become writable
  bool rearmed = false;  // the worker put it back in the epoll set, idle (give_back)

  // Received bytes; `pos` is how far the worker's parser has read. Requests are framed
  // here (headers end + Content-Length) without copying the body.
  std::string in;
  std::size_t pos = 0;
  std::size_t scanned = 0;  // where the search for the end of the headers resumes
  std::size_t needed = 0;   // bytes of the whole current request, once its headers are in
  std::uint64_t body_bytes = 0;  // its declared Content-Length
  // A request declaring a body over the size limit goes to a worker as soon as its headers
  // are in: the parser's stream ends at offset `skip_at`, where the `skipped` body bytes
  // would start, so httplib answers 413. The connection then closes, and the loop discards what the
  // client still sends as raw TCP bytes (Phase::Lingering), never decrypting them, so
  // the 413 is not lost to a reset and an oversize sender costs the loop almost nothing.
  std::uint64_t skipped = 0;  // the declared body length the parser never sees
  std::size_t skip_at = 0;
  std::uint64_t linger_budget = 0;  // raw bytes still discarded before closing anyway
  // A chunked body being received: where the next chunk-size (or trailer) line starts,
  // the data bytes before it, and where the body starts.
  std::size_t chunk_pos = 0, body_start = 0;
  std::uint64_t chunk_data = 0;
  bool chunk_trailers = false;
  bool continue_due = false;  // "Expect: 100-continue": the loop owes "100 Continue"
  // Framing the loop refuses itself (status, message), answered with Connection: close.
  int refuse_status = 0;
  std::string refuse_message;

  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;

  void consume() {
    in.erase(0, pos);
    pos = scanned = needed = skip_at = chunk_pos = body_start = 0;
    body_bytes = chunk_data = 0;
    chunk_trailers = continue_due = false;
  }
};

enum class Framing { Incomplete, Complete, Refused };

bool header_is(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

bool equals_ignoring_case(std::string_view a, std::string_view lower) {
  return a.size() == lower.size() &&
         std::equal(a.begin(), a.end(), lower.begin(), [](char x, char y) { return std::tolower(static_cast<unsigned char>(x)) == y; });
}

std::string_view header_value(std::string_view line, std::size_t name_size) {
  std::string_view value = line.substr(name_size + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// A header line httplib parses as an empty "X" header: hides a header the loop already
// acted on (Expect) or replaced (Transfer-Encoding, Content-Length of a decoded chunked
// body) without moving the bytes behind it.
void blank_header_line(std::string& in, std::size_t start, std::size_t end_before_cr) {
  in[start] = 'X';
  in[start + 1] = ':';
  std::fill(in.begin() + static_cast<std::ptrdiff_t>(start + 2), in.begin() + static_cast<std::ptrdiff_t>(end_before_cr), ' ');
}

Framing refuse(Connection& c, int status, std::string message) {
  c.refuse_status = status;
  c.refuse_message = std::move(message);
  return Framing::Refused;
}

// Chunk-size lines (with extensions) and trailer lines longer than this are refused, as
// Go's server does at 4 KiB.
constexpr std::size_t kMaxChunkLine = 4096;

// Follows a chunked body from c.chunk_pos as it arrives. Once it is whole, the request is
// rewritten in place as a Content-Length request (chunks decoded, trailers dropped), so a
// worker never waits for a chunk and the large-review lane sees the real size.
Framing frame_chunks(Connection& c, std::size_t max_body) {
  std::string& in = c.in;
  for (;;) {
    const std::size_t line_end = in.find("\r\n", c.chunk_pos);
    if (line_end == std::string::npos) {
      if (in.size() - c.chunk_pos > kMaxChunkLine) return refuse(c, 400, "chunk or trailer line too long");
      if (in.find('\n', c.chunk_pos) != std::string::npos) return refuse(c, 400, "malformed chunked body: bare LF");
      return Framing::Incomplete;
    }
    std::string_view line(in.data() + c.chunk_pos, line_end - c.chunk_pos);
    if (line.size() > kMaxChunkLine) return refuse(c, 400, "chunk or trailer line too long");
    if (c.chunk_trailers) {
      c.chunk_pos = line_end + 2;
      if (!line.empty()) continue;  // a trailer field, dropped
      break;
    }
    std::string_view size_text = line.substr(0, line.find(';'));
    while (!size_text.empty() && (size_text.back() == ' ' || size_text.back() == '\t')) size_text.remove_suffix(1);
    std::uint64_t size = 0;
    auto [stop, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || stop != size_text.data() + size_text.size() || size_text.front() == '+' ||
        size_text.front() == '-') {
      return refuse(c, 400, "malformed chunked body: bad chunk size");
    }
    if (ec != std::errc() || size > max_body - c.chunk_data) {  // chunk_data <= max_body
      return refuse(c, 413, "request body is larger than the limit of " + std::to_string(max_body) +
                                " bytes (--max-body-bytes)");
    }
    if (size == 0) {
      c.chunk_trailers = true;
      c.chunk_pos = line_end + 2;
      continue;
    }
    const std::size_t data_end = line_end + 2 + static_cast<std::size_t>(size);
    if (in.size() < data_end + 2) return Framing::Incomplete;  // resumes at this chunk line
    if (in[data_end] != '\r' || in[data_end + 1] != '\n') return refuse(c, 400, "malformed chunked body: no CRLF after a chunk");
    c.chunk_data += size;
    c.chunk_pos = data_end + 2;
  }
  // Whole: headers (Transfer-Encoding and Content-Length blanked) + Content-Length + data.
  std::string rewritten;
  rewritten.reserve(c.body_start + 32 + static_cast<std::size_t>(c.chunk_data) + (in.size() - c.chunk_pos));
  std::string head = in.substr(0, c.body_start - 2);
  for (std::size_t start = head.find('\n') + 1; start < head.size();) {
    std::size_t end = head.find("\r\n", start);
    if (end == std::string::npos) end = head.size();
    std::string_view line(head.data() + start, end - start);
    if (header_is(line, "transfer-encoding") || header_is(line, "content-length")) blank_header_line(head, start, end);
    start = end + 2;
  }
  rewritten += head;
  rewritten += "Content-Length: " + std::to_string(c.chunk_data) + "\r\n\r\n";
  for (std::size_t at = c.body_start;;) {
    const std::size_t line_end = in.find("\r\n", at);
    std::uint64_t size = 0;
    std::from_chars(in.data() + at, in.data() + line_end, size, 16);
    if (size == 0) break;
    rewritten.append(in, line_end + 2, static_cast<std::size_t>(size));
    at = line_end + 2 + static_cast<std::size_t>(size) + 2;
  }
  const std::size_t body_start = rewritten.size() - static_cast<std::size_t>(c.chunk_data);
  rewritten.append(in, c.chunk_pos, std::string::npos);
  in.swap(rewritten);
  c.needed = body_start + static_cast<std::size_t>(c.chunk_data);
  c.body_bytes = c.chunk_data;
  c.chunk_pos = c.chunk_data = 0;
  c.chunk_trailers = false;
  return Framing::Complete;
}

// Whether `c.in` holds a whole request. The loop holds every request until it is whole,
// Content-Length and chunked bodies alike, so a worker never waits for a client; framing
// a worker could not parse without waiting, or that Go's server refuses (bad, signed,
// hexadecimal, overflowing or conflicting Content-Length, transfer codings other than
// chunked, bare LF line ends, header sections over 64 KiB), is refused (c.refuse_status)
// as soon as it is seen. "Expect: 100-continue" asks the loop for "100 Continue"
// (c.continue_due) when the body is not already here.
Framing frame_request(Connection& c, std::size_t max_body) {
  if (c.refuse_status != 0) return Framing::Refused;
  if (c.needed > 0) return c.in.size() >= c.needed ? Framing::Complete : Framing::Incomplete;
  if (c.chunk_pos > 0) return frame_chunks(c, max_body);
  const char* data = c.in.data();
  const std::size_t size = c.in.size();
  std::size_t end = 0;
  for (std::size_t i = c.scanned; i < size;) {
    const void* found = std::memchr(data + i, '\n', size - i);
    if (!found) break;
    i = static_cast<std::size_t>(static_cast<const char*>(found) - data);
    // httplib's parser refuses lines without CR anyway: refused here, without a worker.
    if (i == 0 || data[i - 1] != '\r') return refuse(c, 400, "malformed HTTP request: line ends with a bare LF");
    if (i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n') {
      end = i + 3;
      break;
    }
    ++i;
  }
  if (end == 0) {
    c.scanned = size >= 2 ? size - 2 : 0;
    if (size > kMaxHeaderBytes) return refuse(c, 431, "request header fields are larger than 65536 bytes");
    return Framing::Incomplete;
  }
  if (end > kMaxHeaderBytes) return refuse(c, 431, "request header fields are larger than 65536 bytes");
  std::uint64_t length = 0;
  std::string_view first_length;
  bool has_length = false, chunked = false, expect_continue = false;
  int transfer_encodings = 0;
  std::string_view headers(data, end);
  for (std::size_t line_start = headers.find('\n') + 1; line_start < end;) {
    std::size_t line_end = headers.find('\n', line_start);
    std::string_view line = headers.substr(line_start, line_end - line_start);
    const std::size_t at = line_start;
    line_start = line_end + 1;
    if (header_is(line, "transfer-encoding")) {
      ++transfer_encodings;
      chunked = equals_ignoring_case(header_value(line, 17), "chunked");
      if (!chunked || transfer_encodings > 1) {
        return refuse(c, 501, "unsupported Transfer-Encoding: only a single \"chunked\" is accepted");
      }
    } else if (header_is(line, "expect")) {
      if (!equals_ignoring_case(header_value(line, 6), "100-continue")) {
        return refuse(c, 417, "unsupported Expect: only \"100-continue\" is accepted");
      }
      expect_continue = true;
      blank_header_line(c.in, at, line_end - 1);  // answered here; httplib must not answer it again
      data = c.in.data();
      headers = std::string_view(data, end);
    } else if (header_is(line, "content-length")) {
      // As Go's server: 1*DIGIT within int64; repeats must agree.
      std::string_view value = header_value(line, 14);
      if (has_length) {
        if (value != first_length) return refuse(c, 400, "conflicting Content-Length headers");
        continue;
      }
      auto [stop, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || value.front() == '+' || value.front() == '-' || ec != std::errc() ||
          stop != value.data() + value.size() || length > static_cast<std::uint64_t>(INT64_MAX)) {
        return refuse(c, 400, "invalid Content-Length");
      }
      first_length = value;
      has_length = true;
    }
  }
  if (chunked) {  // Transfer-Encoding overrides Content-Length (RFC 9112 6.3)
    c.body_start = c.chunk_pos = end;
    c.chunk_data = 0;
    c.chunk_trailers = false;
    Framing framing = frame_chunks(c, max_body);
    c.continue_due = expect_continue && framing == Framing::Incomplete;
    return framing;
  }
  if (length > max_body) {
    // Drop what already arrived of the body; the rest is discarded after the answer.
    std::size_t here = static_cast<std::size_t>(std::min<std::uint64_t>(size - end, length));
    c.in.erase(end, here);
    c.skipped = length;
    c.skip_at = end;
    c.needed = end;
    // Counted in bytes on the wire: TLS adds a header and tag to every record of up to
    // 16 KiB, and reaching the budget with bytes still arriving would reset the connection
    // (losing the 413), so the allowance is generous.
    const std::uint64_t rest = length - here;
    c.linger_budget = rest == 0 ? 0 : rest + rest / 16 + 64 * 1024;
    return Framing::Complete;
  }
  c.needed = end + static_cast<std::size_t>(length);
  c.body_bytes = length;
  if (size >= c.needed) return Framing::Complete;
  c.continue_due = expect_continue;
  c.in.reserve(c.needed);
  return Framing::Incomplete;
}

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

// Appends what the socket has (one chunk, through the loop's scratch buffer) to c.in.
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

struct ConnectionLimits {
  milliseconds read_timeout, write_timeout, idle_timeout;
  std::size_t workers;
  std::size_t max_connections;
  std::size_t max_body_bytes;  // bodies declared larger are dropped by the loop (413)
  std::size_t max_buffered_bytes;
  // Requests with a larger body go to the large-review lane (0: no lane), at most
  // large_request_queue waiting for it.
  std::size_t large_request_bytes = 0;
  std::size_t large_request_queue = 0;
  bool json_errors = false;  // refusals as Status JSON (the webhook) or plain text
};

// httplib::Server for routing and request parsing, with our own connection handling: one
// event-loop thread (epoll, non-blocking sockets and TLS) owns every connection while it
// handshakes, waits between requests or receives a request, so slow or idle clients cost
// a buffer, not a thread. Only a connection with a complete request buffered goes to a
// worker, which answers it (and any further request already buffered) and gives the
// connection back. Deadlines per phase, a bound on open connections, TLS from a swappable
// TlsContext, and drain on shutdown (idle connections close after a 1 s grace, every
// request arriving until then is answered with "Connection: close").
class ConnectionServer final : public httplib::Server {
 public:
  ConnectionServer(std::string listener, const TlsContext* tls, ConnectionLimits limits,
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

  ~ConnectionServer() override {
    close_listener();
    ::close(wake_fd_);
    ::close(epoll_fd_);
  }

  std::function<void(httplib::Request&)> setup_request;

  // httplib listens with a backlog of 5; under a burst of new connections the kernel then
  // drops SYNs and clients wait a 1 s retransmit. Linux lets listen() raise it in place.
  void raise_listen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

  bool running() const { return running_.load(); }

  // Stops accepting; run() returns once every open connection is done.
  void stop() {
    stopping_ = true;
    wake();
  }

  // The event loop; returns after stop() once all connections are closed.
  void run() {
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

 private:
  static void block_sigpipe() {
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  }

  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(wake_fd_, &one, sizeof one);
  }

  void watch(int fd, void* tag, std::uint32_t events, int op) {
    epoll_event event{};
    event.events = events;
    event.data.ptr = tag;
    ::epoll_ctl(epoll_fd_, op, fd, &event);
  }

  void close_listener() {
    int fd = svr_sock_.exchange(INVALID_SOCKET);
    if (fd == INVALID_SOCKET) return;
    if (running_) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    listen_fd_ = -1;
  }

  void accept_connections() {
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

  void on_ready(Connection* c) {
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

  // In the loop, for a connection it owns with request bytes buffered: hands a whole
  // request to a worker, answers a refused one, or sends an owed "100 Continue". Returns
  // whether the loop still holds the connection, receiving.
  bool advance(Connection* c) {
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

  // A short write from the loop on a connection with nothing else outgoing (its socket
  // buffer is empty), so it either goes out at once or the connection is given up.
  static bool write_now(Connection& c, std::string_view bytes) {
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

  // In the loop: answers a request refused on its framing alone (c->refuse_status) and
  // ends the connection, lingering so the answer is not lost to a reset while the client
  // still sends. No worker is involved.
  void refuse_request(Connection* c) {
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

  bool is_large(const Connection& c) const {
    return lane_ && c.body_bytes > limits_.large_request_bytes;
  }

  void hand_over(Connection* c, Framing framing) {
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

  // In a worker (or, for one large request, the lane): answers the buffered request and
  // any further complete ordinary request already buffered behind it, then gives the
  // connection back to the loop.
  void serve_requests(Connection* c, bool on_lane) {
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
        if (c->in.empty() || frame_request(*c, limits_.max_body_bytes) != Framing::Complete) break;
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

  // In a worker: the lane's queue is full. The request is already buffered whole, so a
  // 429 keeps the connection in step without reading anything.
  void refuse_large(Connection* c) {
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

  void give_back(Connection* c) {
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

  // In the loop: connections coming back from workers.
  void take_back() {
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

  // The answer is out; what the client still sends of an oversize body is read raw and
  // dropped until it stops (EOF), the budget is spent or the deadline passes.
  void start_lingering(Connection* c, Clock::time_point now) {
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

  void discard_input(Connection* c) {
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

  void start_drain() {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, drain_.fd(), nullptr);  // it stays readable
    const auto grace_end = Clock::now() + std::min(limits_.idle_timeout, kDrainIdleGrace);
    std::vector<Connection*> lingering;
    for (Connection* c : owned_) {
      if (c->phase == Connection::Phase::Idle) c->deadline = std::min(c->deadline, grace_end);
      if (c->phase == Connection::Phase::Lingering) lingering.push_back(c);
    }
    for (Connection* c : lingering) close_connection(c);
  }

  void sweep(Clock::time_point now) {
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

  void close_connection(Connection* c) {
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

  std::string listener_;
  const TlsContext* tls_;
  ConnectionLimits limits_;
  const DrainSignal& drain_;
  Metrics& metrics_;
  spdlog::logger& log_;

  int epoll_fd_ = -1, wake_fd_ = -1, listen_fd_ = -1;
  char listen_marker_ = 0, wake_marker_ = 0, drain_marker_ = 0;
  std::atomic<bool> running_{false}, stopping_{false};
  WorkerPool* pool_ = nullptr;
  LargeReviewLane* lane_ = nullptr;  // null on listeners without one
  // Loop thread only.
  std::unordered_set<Connection*> owned_;
  char scratch_[kReadChunk];
  std::size_t busy_ = 0;      // handed to workers, not back yet
  std::size_t buffered_ = 0;  // request bytes held by connections the loop owns
  std::optional<Clock::time_point> accept_paused_until_;
  // Workers to loop.
  std::mutex returned_mutex_;
  std::vector<Connection*> returned_;
  std::atomic<bool> returned_waiting_{false};  // returned_ is not empty
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
  metrics.describe(kOpenConnections, MetricType::Gauge, "Open connections per listener.");
  metrics.describe(kWorkers, MetricType::Gauge, "Worker threads per listener.");
  metrics.describe(kBusyWorkers, MetricType::Gauge,
                   "Worker threads per listener that are answering a request right now.");
  metrics.describe(kRejectedConnections, MetricType::Counter,
                   "Connections closed at accept because the listener already held --max-connections.");
  metrics.describe(kConnectionsTotal, MetricType::Counter, "Connections accepted per listener.");
  metrics.describe(kLargeReviews, MetricType::Counter,
                   "Reviews over --large-review-bytes: decided on the low-priority lane, or refused (429) when its queue was full.");
  metrics.increment(kLargeReviews, {{"outcome", "decided"}}, 0);
  metrics.increment(kLargeReviews, {{"outcome", "refused"}}, 0);
  metrics.describe(kLargeReviewsWaiting, MetricType::Gauge,
                   "Large reviews queued behind the one being decided (at most --large-review-queue).");
  metrics.set(kLargeReviewsWaiting, {}, 0);
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
  // Idle connections (up to --max-connections of them) then hold no TLS record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
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
  // Workers only run complete requests (idle and slow connections wait in the event
  // loop), but a handler may block on I/O and a slow reader may hold one for up to the
  // write timeout, so many per core: a small stack each.
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
    metrics.increment(kHttpErrors, {{"listener", listener},
                                    {"path", error_path_label(request.path, known_paths)},
                                    {"code", std::to_string(status)}});
  }

  void observe(const DecisionRecord& record) {
    record_decision(metrics, record);
    log_decision(*logger, record);
  }

  void configure_webhook_server() {
    ConnectionLimits limits{options.read_timeout,    options.write_timeout,   options.idle_timeout,
                            options.workers,         options.max_connections, options.max_body_bytes,
                            options.max_buffered_bytes};
    limits.large_request_bytes = options.large_review_bytes;
    limits.large_request_queue = options.large_review_queue;
    limits.json_errors = true;
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
        HttpAnswer answer =
            handle_admission(webhook, body, handler, [this](const DecisionRecord& record) { observe(record); });
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
    // Probes and scrapes: few, short, bodyless.
    ConnectionLimits limits{options.read_timeout, options.write_timeout, options.idle_timeout,
                            std::size_t{8},       options.max_connections, std::size_t{64 * 1024},
                            options.max_buffered_bytes};
    metrics_server = std::make_unique<ConnectionServer>("metrics", nullptr, limits, drain, metrics, *logger);
    auto& server = *metrics_server;
    server.set_payload_max_length(limits.max_body_bytes);
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
    std::packaged_task<void()> task([&server] { server.run(); });
    done = task.get_future();
    std::thread thread(std::move(task));
    for (int i = 0; i < 10'000 && !server.running(); ++i) {
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
             {"workers", std::to_string(impl.options.workers), true},
             {"max_connections", std::to_string(impl.options.max_connections), true}});
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
  impl.webhook_server->stop();  // stop accepting; open connections are still served
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
