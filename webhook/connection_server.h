// The event loop and connections behind each listener (ConnectionServer): an httplib::Server
// whose connections one epoll thread owns while they handshake, wait or receive, and a
// worker pool (webhook/worker_pool.h) that answers complete requests. Used by
// webhook/server.cpp.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "kube/metrics.h"
#include "webhook/http_framing.h"
#include "webhook/server_internal.h"

namespace sizeguard {

class LargeReviewLane;
class TlsContext;
class WorkerPool;

// The `path` label of sizeguard_http_errors_total: one of the listener's known paths, or
// "other" (arbitrary paths would make unbounded series).
std::string error_path_label(std::string_view path, std::initializer_list<std::string_view> known_paths);

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
                   const DrainSignal& drain, Metrics& metrics, spdlog::logger& log);

  ~ConnectionServer() override;

  std::function<void(httplib::Request&)> setup_request;

  // httplib listens with a backlog of 5; under a burst of new connections the kernel then
  // drops SYNs and clients wait a 1 s retransmit. Linux lets listen() raise it in place.
  void raise_listen_backlog() { ::listen(svr_sock_, SOMAXCONN); }

  bool running() const { return running_.load(); }

  // Stops accepting; run() returns once every open connection is done.
  void stop();

  // The event loop; returns after stop() once all connections are closed.
  void run();

 private:
  static void block_sigpipe();

  void wake();

  void watch(int fd, void* tag, std::uint32_t events, int op);

  void close_listener();

  void accept_connections();

  void on_ready(Connection* c);

  // In the loop, for a connection it owns with request bytes buffered: hands a whole
  // request to a worker, answers a refused one, or sends an owed "100 Continue". Returns
  // whether the loop still holds the connection, receiving.
  bool advance(Connection* c);

  // A short write from the loop on a connection with nothing else outgoing (its socket
  // buffer is empty), so it either goes out at once or the connection is given up.
  static bool write_now(Connection& c, std::string_view bytes);

  // In the loop: answers a request refused on its framing alone (c->refuse_status) and
  // ends the connection, lingering so the answer is not lost to a reset while the client
  // still sends. No worker is involved.
  void refuse_request(Connection* c);

  bool is_large(const Connection& c) const;

  void hand_over(Connection* c, Framing framing);

  // In a worker (or, for one large request, the lane): answers the buffered request and
  // any further complete ordinary request already buffered behind it, then gives the
  // connection back to the loop.
  void serve_requests(Connection* c, bool on_lane);
  // In a worker, after answering a keep-alive request with nothing buffered behind it:
  // waits up to kWorkerLinger for the next request on the connection and reads what
  // arrives. True if bytes of it are in c.in (framed by the caller; a partial request goes
  // back to the loop); false to give the connection back (nothing came, the client closed
  // it, draining, or too few idle workers to keep one waiting).
  bool await_next_request(Connection& c);

  // In a worker: the lane's queue is full. The request is already buffered whole, so a
  // 429 keeps the connection in step without reading anything.
  void refuse_large(Connection* c);

  void give_back(Connection* c);

  // In the loop: connections coming back from workers.
  void take_back();

  // The answer is out; what the client still sends of an oversize body is read raw and
  // dropped until it stops (EOF), the budget is spent or the deadline passes.
  void start_lingering(Connection* c, Clock::time_point now);

  void discard_input(Connection* c);

  void start_drain();

  void sweep(Clock::time_point now);

  void close_connection(Connection* c);

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

}  // namespace sizeguard
