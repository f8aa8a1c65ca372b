// The review core: admission review body bytes -> HTTP status + body, with no HTTP in it.
// `serve` (through the server's routes), `review`, fuzzers and benchmarks share it, and the
// decision records it hands to observers (decision log, metrics).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "kube/metrics.h"
#include "kube/review.h"

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

}  // namespace sizeguard
