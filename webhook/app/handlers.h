// The two admission decisions. Pure functions of the request and the context (policies,
// recommendations, cluster state, clock) so that `serve`, `review` and tests share them.
#pragma once

#include "webhook/review.h"

namespace sizeguard {

// Everything a decision reads besides the request. Later issues add the policy snapshot,
// the recommendations snapshot, cluster state, clock, metrics and audit sink.
struct AdmissionContext {};

AdmissionResponse mutate(const AdmissionRequest& request, AdmissionContext& context);
AdmissionResponse validate(const AdmissionRequest& request, AdmissionContext& context);

}  // namespace sizeguard
