// The admission server: an HTTP-free review core (body bytes -> HTTP status + body) that
// `serve`, `review`, fuzzers and benchmarks share, and the network side around it — an
// HTTPS listener for POST /mutate and /validate plus a plain-HTTP listener for /healthz,
// /readyz, /metrics and any GET routes later code adds.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <openssl/types.h>

#include "kube/metrics.h"
#include "kube/review.h"

namespace spdlog {
class logger;
}

namespace sizeguard {

enum class Webhook { Mutate, Validate };
std::string_view to_string(Webhook webhook);  // "mutate" | "validate"

// The decision function behind one webhook. May throw: the core answers 500 then, so the
// apiserver applies the webhook's failurePolicy instead of seeing a made-up decision.
using AdmissionHandler = std::function<AdmissionResponse(const AdmissionRequest&)>;

struct AdmissionHandlers {
  AdmissionHandler mutate;
  AdmissionHandler validate;
};

struct HttpAnswer {
  int status = 200;
  std::string content_type;
  std::string body;
};

// What one review came to, handed to observers (decision log, metrics) before the answer
// is sent. Pointers are valid only during the observer call.
struct DecisionRecord {
  Webhook webhook = Webhook::Mutate;
  const AdmissionRequest* request = nullptr;    // null when the body was not a valid review
  const AdmissionResponse* response = nullptr;  // null unless the handler answered
  int http_status = 200;
  std::string_view error;  // why the body was rejected or the handler failed
  std::chrono::nanoseconds latency{0};
};

// "allowed", "patched" (allowed with a non-empty patch), "denied", "invalid" (400) or
// "error" (the handler threw).
std::string_view decision_label(const DecisionRecord& record);

using DecisionObserver = std::function<void(const DecisionRecord&)>;

// The review core. 200 + the encoded AdmissionReview (same apiVersion as the request,
// response.uid forced to request.uid) for a valid review; 400 + a metav1.Status JSON body
// naming what is wrong otherwise; 500 + Status if the handler throws. Never throws.
HttpAnswer handle_admission(Webhook webhook, std::string_view body, const AdmissionHandler& handler,
                            const DecisionObserver& observer = {});

// A metav1.Status JSON body ({"kind":"Status","status":"Failure","code":..,"message":..}),
// the form the apiserver understands in error answers.
std::string status_body(int http_status, std::string_view message);

// Declares the server's metric families and sets sizeguard_build_info{version}.
void describe_server_metrics(Metrics& metrics, std::string_view version);
// Counts one decision in sizeguard_admission_requests_total / _duration_seconds.
void record_decision(Metrics& metrics, const DecisionRecord& record);

// Readiness as a set of named components (the webhook listener now; policies, model,
// recommendations later). Ready when at least one component is registered and all are
// ready; a component that is not ready carries the reason shown by /readyz.
class Readiness {
 public:
  void set(const std::string& component, bool ready, std::string reason = {});
  struct Report {
    bool ready = false;
    std::string text;  // one "component: ok" / "component: not ready: reason" line each
  };
  Report report() const;

 private:
  struct State {
    bool ready = false;
    std::string reason;
  };
  mutable std::mutex mutex_;
  std::map<std::string, State> components_;
};

// The serving certificate as an immutable SSL_CTX snapshot. Each new connection takes the
// current snapshot; reload() swaps in a new one (existing connections keep theirs), so a
// rotated cert/key pair is picked up without dropping connections. TLS 1.2 minimum, ECDHE
// with AES-GCM or ChaCha20 for TLS 1.2, the standard TLS 1.3 suites.
class TlsContext {
 public:
  // Throws std::runtime_error naming the file and the OpenSSL reason.
  TlsContext(std::string cert_path, std::string key_path);
  // Re-reads both files; on failure throws and keeps serving the previous snapshot.
  void reload();
  std::shared_ptr<SSL_CTX> current() const;
  // notAfter of the current serving certificate (for expiry metrics and warnings).
  std::chrono::system_clock::time_point not_after() const;
  const std::string& cert_path() const { return cert_path_; }
  const std::string& key_path() const { return key_path_; }

 private:
  std::string cert_path_, key_path_;
  mutable std::mutex mutex_;
  std::shared_ptr<SSL_CTX> context_;
};

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
