// The admission server: an HTTPS listener for POST /mutate and /validate (answered by the
// review core, webhook/admission_core.h) plus a plain-HTTP listener for /healthz, /readyz,
// /metrics and any GET routes later code adds. Where its parts live: the event loop and
// connections in connection_server.*, the workers that answer requests in worker_pool.*,
// HTTP framing and limits in http_framing.*, the certificate in tls_context.*, readiness
// in readiness.*, the routes here (server.cpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "kube/metrics.h"
#include "webhook/admission_core.h"
#include "webhook/readiness.h"
#include "webhook/tls_context.h"

namespace spdlog {
class logger;
}

namespace sizeguard {

struct ListenAddress {
  std::string host;  // "0.0.0.0" when the text had no host
  int port = 0;      // 0 = any free port
};
// Parses "host:port", ":port" or "[v6addr]:port". Throws std::invalid_argument.
ListenAddress parse_listen_address(std::string_view text);

// Worker threads for the webhook listener when --workers is not given. A worker holds a
// connection only while it answers one complete request; waiting connections do not.
std::size_t default_worker_count();

struct ServerOptions {
  std::string listen = ":8443";
  std::string metrics_listen = ":9090";
  std::string tls_cert, tls_key;
  std::size_t max_body_bytes = 3 * 1024 * 1024;
  // The TLS handshake, the first request's arrival, and reading one whole request
  // (headers + body) must each finish within read_timeout.
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{10'000};
  // A keep-alive connection with no request for this long is closed. Longer than Go's
  // 90 s client idle timeout, so the apiserver closes idle connections first: a POST it
  // sends just as the server closes would not be retried.
  std::chrono::milliseconds idle_timeout{120'000};
  std::size_t workers = default_worker_count();
  // Open connections per listener (each costs a descriptor and its buffered bytes); more
  // are closed at accept and counted in sizeguard_http_rejected_connections_total.
  std::size_t max_connections = 10'000;
  // Request bytes all waiting connections of a listener may hold. Beyond it, a connection
  // still receiving is handed to a worker, which reads the rest (bounded by
  // read_timeout), so memory is bounded by workers x max_body_bytes plus this.
  std::size_t max_buffered_bytes = 64 * 1024 * 1024;
  std::chrono::milliseconds drain_timeout{30'000};
  // Reviews with a larger body (a Pod with hundreds of containers) are decided one at a
  // time on a lower-priority thread (webhook/large_review_lane.h); at most
  // large_review_queue wait for it, more are answered 429. 0 = every review inline.
  std::size_t large_review_bytes = 256 * 1024;
  std::size_t large_review_queue = 4;
};

// GET routes on the metrics listener: query parameters in, answer out.
using GetRouteHandler = std::function<HttpAnswer(const std::multimap<std::string, std::string>& query)>;

class AdmissionServer {
 public:
  // Loads the certificate (throws std::runtime_error on a bad cert/key). A null logger
  // means spdlog's default logger.
  AdmissionServer(ServerOptions options, AdmissionHandlers handlers, Metrics& metrics,
                  Readiness& readiness, std::shared_ptr<spdlog::logger> logger = nullptr);
  ~AdmissionServer();  // shuts down (waiting as long as connections take) if still running
  AdmissionServer(const AdmissionServer&) = delete;
  AdmissionServer& operator=(const AdmissionServer&) = delete;

  // Adds a GET route to the metrics listener; only before start().
  void add_get_route(const std::string& path, GetRouteHandler handler);

  // Binds both listeners and serves in background threads; returns once both accept
  // connections (readiness component "webhook-listener" becomes ready). Throws
  // std::runtime_error if an address cannot be bound.
  void start();
  int webhook_port() const;
  int metrics_port() const;

  // Graceful shutdown: /readyz turns not ready, the listeners stop accepting, idle
  // keep-alive connections close after a 1 s grace (a request the client was already
  // sending is answered), every accepted request is answered (with "Connection: close"). Returns false if connections were still busy after the drain
  // timeout (the caller then exits without waiting further).
  bool shutdown();

  TlsContext& tls();
  // tls().reload() plus sizeguard_tls_cert_expiry_timestamp_seconds; throws like reload().
  void reload_tls();

 private:
  void record_cert_expiry();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sizeguard
