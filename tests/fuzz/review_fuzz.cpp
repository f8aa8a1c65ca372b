// AdmissionReview decoding and answer encoding: any bytes give a request or a clear
// error, never a crash; an encoded answer is valid JSON with the uid echoed.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "webhook/review.h"
#include "webhook/workload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto decoded = sizeguard::decode_admission_review(body);
  if (auto* error = std::get_if<sizeguard::DecodeError>(&decoded)) {
    if (error->message.empty()) std::abort();
    return 0;
  }
  const auto& request = std::get<sizeguard::AdmissionRequest>(decoded);
  const auto kind = sizeguard::workload_kind_from(request.kind.kind);
  for (const auto& c : sizeguard::containers(request.subject(), kind)) (void)c.name;
  (void)sizeguard::replicas(request.subject(), kind);
  sizeguard::AdmissionResponse response;
  response.uid = request.uid;
  response.warnings.push_back(request.name);
  const auto answer = sizeguard::Json::parse(sizeguard::encode_admission_review(response, request.api_version), nullptr, false);
  if (answer.is_discarded() || answer["response"]["uid"] != request.uid) std::abort();
  return 0;
}
