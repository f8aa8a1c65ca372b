// What the server's own .cpp files share (not for other code): the clock, content types,
// the per-connection request cap, the names of the server's metrics, OpenSSL errors as text.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace sizeguard {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kJsonType = "application/json";
// Requests served per connection before closing it, so that long-lived apiserver
// connections get spread again over replicas now and then.
constexpr std::size_t kMaxRequestsPerConnection = 1000;
constexpr const char* kTextType = "text/plain; charset=utf-8";

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

// The calling thread's OpenSSL error queue as one line (and empties it).
std::string openssl_errors();

}  // namespace sizeguard
