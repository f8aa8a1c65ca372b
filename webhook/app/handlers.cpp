#include "webhook/app/handlers.h"

namespace sizeguard {

AdmissionResponse mutate(const AdmissionRequest& request, AdmissionContext&) {
  AdmissionResponse response;
  response.uid = request.uid;
  return response;
}

AdmissionResponse validate(const AdmissionRequest& request, AdmissionContext&) {
  AdmissionResponse response;
  response.uid = request.uid;
  return response;
}

}  // namespace sizeguard
