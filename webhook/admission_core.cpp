#include "webhook/admission_core.h"

#include <exception>
#include <variant>
#include <vector>

#include "webhook/server_internal.h"

namespace sizeguard {
namespace {

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

// 0.002 is there so the p99 ≤ 2 ms goal can be read off the histogram.
const std::vector<double> kDurationBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.0025, 0.005,
                                              0.01,   0.025,   0.05,   0.1,   0.25,  0.5,    1};

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

}  // namespace sizeguard
