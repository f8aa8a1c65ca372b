// AdmissionReview codec: the request parsed once into a typed view (with the raw
// object JSON kept), and the response encoded in the apiVersion the request used.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace sizeguard {

using Json = nlohmann::json;

struct GroupVersionKind {
  std::string group, version, kind;
};
struct GroupVersionResource {
  std::string group, version, resource;
};

struct UserInfo {
  std::string username;
  std::string uid;
  std::vector<std::string> groups;
  std::map<std::string, std::vector<std::string>> extra;
};

enum class Operation { Create, Update, Delete, Connect };
std::string_view to_string(Operation op);

struct AdmissionRequest {
  std::string api_version;  // "admission.k8s.io/v1" or "admission.k8s.io/v1beta1"
  std::string uid;
  GroupVersionKind kind;
  GroupVersionResource resource;
  std::string sub_resource;
  GroupVersionKind request_kind;
  GroupVersionResource request_resource;
  std::string request_sub_resource;
  std::string name;       // empty for Pods created from generateName
  std::string namespace_;
  Operation operation = Operation::Create;
  UserInfo user_info;
  Json object;      // null on DELETE; without metadata.managedFields (see decode_admission_review)
  Json old_object;  // null on CREATE/CONNECT; without metadata.managedFields
  Json options;
  bool dry_run = false;

  // name, or generateName for objects the apiserver has not named yet, or "".
  std::string display_name() const;
  // object on CREATE/UPDATE, old_object on DELETE.
  const Json& subject() const;
};

struct DecodeError {
  std::string message;  // says exactly what is wrong, e.g. "request.uid is missing"
};

// Parses an AdmissionReview body. Never throws. object and oldObject come without their
// metadata.managedFields: no policy, right-sizing step or answer reads them (the apiserver
// keeps them; a patch never touches them), and building them cost a quarter of the decode.
std::variant<AdmissionRequest, DecodeError> decode_admission_review(std::string_view body);

// A Kubernetes metav1.StatusCause: `reason` holds our stable reason code.
struct StatusCause {
  std::string reason;   // e.g. "ReplicasBelowMin"
  std::string message;
  std::string field;    // e.g. "spec.replicas"
};

struct Status {
  int32_t code = 403;
  std::string reason = "Forbidden";  // metav1.StatusReason
  std::string message;
  std::vector<StatusCause> causes;
};

struct AdmissionResponse {
  std::string uid;
  bool allowed = true;
  Json patch;  // a JSONPatch array, or null for no patch
  std::optional<Status> status;
  std::vector<std::string> warnings;
  std::map<std::string, std::string> audit_annotations;
};

// A metav1.Status as the apiserver expects it (causes under details.causes).
Json status_to_json(const Status& status, bool allowed = false);

// Encodes the full AdmissionReview answer (apiVersion, kind, response). patchType and
// the base64 patch appear only when there is a non-empty patch.
std::string encode_admission_review(const AdmissionResponse& response, std::string_view api_version);

}  // namespace sizeguard
