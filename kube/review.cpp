#include "kube/review.h"

#include "kube/json_read.h"

#include <openssl/evp.h>

#include <array>
#include <string>

namespace sizeguard {

namespace {

constexpr std::string_view kV1 = "admission.k8s.io/v1";
constexpr std::string_view kV1beta1 = "admission.k8s.io/v1beta1";

std::string json_type_name(const Json& value) {
  return value.is_null() ? "null" : std::string(value.type_name());
}

// Reads an optional string member; a present member of another type is an error, because
// a silently ignored field would make a decision on the wrong data.
bool read_string(const Json& parent, const char* key, const std::string& where, std::string& out,
                 std::string& error) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return true;
  if (!it->is_string()) {
    error = where + "." + key + " must be a string, got " + json_type_name(*it);
    return false;
  }
  out = it->get<std::string>();
  return true;
}

bool read_gvk(const Json& request, const char* key, GroupVersionKind& out, std::string& error) {
  auto it = request.find(key);
  if (it == request.end() || it->is_null()) return true;
  if (!it->is_object()) {
    error = std::string("request.") + key + " must be an object, got " + json_type_name(*it);
    return false;
  }
  const std::string where = std::string("request.") + key;
  return read_string(*it, "group", where, out.group, error) &&
         read_string(*it, "version", where, out.version, error) &&
         read_string(*it, "kind", where, out.kind, error);
}

bool read_gvr(const Json& request, const char* key, GroupVersionResource& out, std::string& error) {
  auto it = request.find(key);
  if (it == request.end() || it->is_null()) return true;
  if (!it->is_object()) {
    error = std::string("request.") + key + " must be an object, got " + json_type_name(*it);
    return false;
  }
  const std::string where = std::string("request.") + key;
  return read_string(*it, "group", where, out.group, error) &&
         read_string(*it, "version", where, out.version, error) &&
         read_string(*it, "resource", where, out.resource, error);
}

bool read_user_info(const Json& request, UserInfo& out, std::string& error) {
  auto it = request.find("userInfo");
  if (it == request.end() || it->is_null()) return true;
  if (!it->is_object()) {
    error = "request.userInfo must be an object, got " + json_type_name(*it);
    return false;
  }
  const Json& info = *it;
  if (!read_string(info, "username", "request.userInfo", out.username, error) ||
      !read_string(info, "uid", "request.userInfo", out.uid, error)) {
    return false;
  }
  if (auto groups = info.find("groups"); groups != info.end() && !groups->is_null()) {
    if (!groups->is_array()) {
      error = "request.userInfo.groups must be an array of strings";
      return false;
    }
    for (const auto& group : *groups) {
      if (!group.is_string()) {
        error = "request.userInfo.groups must be an array of strings";
        return false;
      }
      out.groups.push_back(group.get<std::string>());
    }
  }
  if (auto extra = info.find("extra"); extra != info.end() && !extra->is_null()) {
    if (!extra->is_object()) {
      error = "request.userInfo.extra must be an object of string arrays";
      return false;
    }
    for (const auto& [key, values] : extra->items()) {
      if (!values.is_array()) {
        error = "request.userInfo.extra." + key + " must be an array of strings";
        return false;
      }
      auto& list = out.extra[key];
      for (const auto& value : values) {
        if (!value.is_string()) {
          error = "request.userInfo.extra." + key + " must be an array of strings";
          return false;
        }
        list.push_back(value.get<std::string>());
      }
    }
  }
  return true;
}

std::optional<Operation> parse_operation(std::string_view text) {
  if (text == "CREATE") return Operation::Create;
  if (text == "UPDATE") return Operation::Update;
  if (text == "DELETE") return Operation::Delete;
  if (text == "CONNECT") return Operation::Connect;
  return std::nullopt;
}

// Takes an embedded object out of the parsed document without copying it.
bool take_object(Json& request, const char* key, Json& out, std::string& error) {
  auto it = request.find(key);
  if (it == request.end() || it->is_null()) return true;
  if (!it->is_object()) {
    error = std::string("request.") + key + " must be an object, got " + json_type_name(*it);
    return false;
  }
  out = std::move(*it);
  return true;
}

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(data.data()),
                                      static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(written));
  return out;
}

}  // namespace

std::string_view to_string(Operation op) {
  switch (op) {
    case Operation::Create: return "CREATE";
    case Operation::Update: return "UPDATE";
    case Operation::Delete: return "DELETE";
    case Operation::Connect: return "CONNECT";
  }
  return "UNKNOWN";
}

std::string AdmissionRequest::display_name() const {
  if (!name.empty()) return name;
  const Json& subject_object = subject();
  if (subject_object.is_object()) {
    auto metadata = subject_object.find("metadata");
    if (metadata != subject_object.end() && metadata->is_object()) {
      for (const char* key : {"name", "generateName"}) {
        auto it = metadata->find(key);
        if (it != metadata->end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
          return it->get<std::string>();
        }
      }
    }
  }
  return "";
}

const Json& AdmissionRequest::subject() const {
  return operation == Operation::Delete ? old_object : object;
}

std::variant<AdmissionRequest, DecodeError> decode_admission_review(std::string_view body) {
  // metadata.managedFields (the apiserver's field ownership records: a quarter of a Pod's bytes,
  // and most of its JSON nodes) is read by no decision: it is never built.
  const auto omit = {std::string_view("/request/object/metadata/managedFields"),
                     std::string_view("/request/oldObject/metadata/managedFields")};
  // simdjson accepts at most 1024 levels, so the depth pre-scan (a pass over every byte) is
  // needed only when it declined; the errors come in the same order either way.
  std::optional<Json> parsed = parse_json_simdjson(body, omit);
  if (!parsed) {
    if (const auto at = json_too_deep_at(body)) {
      return DecodeError{"body nests arrays and objects more than " + std::to_string(kMaxJsonDepth) +
                         " levels deep (at byte " + std::to_string(*at) + ")"};
    }
  }
  // Go's decoder refuses a byte order mark, so the apiserver never sends one; nlohmann and
  // simdjson would skip it.
  if (body.starts_with("\xEF\xBB\xBF")) {
    return DecodeError{"body is not valid JSON: it starts with a UTF-8 byte order mark"};
  }
  if (!parsed) parsed = parse_json_nlohmann(body, omit);
  if (!parsed) {
    // Re-parse with exceptions only on the error path, for the parser's position message.
    // Not only parse_error: a number beyond double's range is an out_of_range.
    try {
      const Json unreachable = Json::parse(body.begin(), body.end());
      (void)unreachable;
    } catch (const Json::exception& e) {
      return DecodeError{std::string("body is not valid JSON: ") + e.what()};
    }
    return DecodeError{"body is not valid JSON"};
  }
  Json& document = *parsed;
  if (!document.is_object()) {
    return DecodeError{"body is a JSON " + json_type_name(document) + ", expected an AdmissionReview object"};
  }

  std::string error;
  std::string kind, api_version;
  if (!read_string(document, "kind", "AdmissionReview", kind, error) ||
      !read_string(document, "apiVersion", "AdmissionReview", api_version, error)) {
    return DecodeError{error};
  }
  if (kind != "AdmissionReview") {
    return DecodeError{kind.empty() ? "kind is missing, expected AdmissionReview"
                                    : "kind is \"" + kind + "\", expected AdmissionReview"};
  }
  if (api_version.empty()) {
    return DecodeError{"apiVersion is missing, expected " + std::string(kV1) + " or " + std::string(kV1beta1)};
  }
  if (api_version != kV1 && api_version != kV1beta1) {
    return DecodeError{"apiVersion \"" + api_version + "\" is not supported (" + std::string(kV1) +
                       ", " + std::string(kV1beta1) + ")"};
  }
  auto request_it = document.find("request");
  if (request_it == document.end() || request_it->is_null()) {
    return DecodeError{"request is missing"};
  }
  if (!request_it->is_object()) {
    return DecodeError{"request must be an object, got " + json_type_name(*request_it)};
  }
  Json& request = *request_it;

  AdmissionRequest out;
  out.api_version = std::move(api_version);
  std::string operation;
  if (!read_string(request, "uid", "request", out.uid, error) ||
      !read_gvk(request, "kind", out.kind, error) || !read_gvr(request, "resource", out.resource, error) ||
      !read_string(request, "subResource", "request", out.sub_resource, error) ||
      !read_gvk(request, "requestKind", out.request_kind, error) ||
      !read_gvr(request, "requestResource", out.request_resource, error) ||
      !read_string(request, "requestSubResource", "request", out.request_sub_resource, error) ||
      !read_string(request, "name", "request", out.name, error) ||
      !read_string(request, "namespace", "request", out.namespace_, error) ||
      !read_string(request, "operation", "request", operation, error) || !read_user_info(request, out.user_info, error) ||
      !take_object(request, "object", out.object, error) || !take_object(request, "oldObject", out.old_object, error) ||
      !take_object(request, "options", out.options, error)) {
    return DecodeError{error};
  }
  if (out.uid.empty()) return DecodeError{"request.uid is missing or empty"};
  auto op = parse_operation(operation);
  if (!op) {
    return DecodeError{operation.empty() ? "request.operation is missing"
                                         : "request.operation \"" + operation +
                                               "\" is not CREATE, UPDATE, DELETE or CONNECT"};
  }
  out.operation = *op;
  if (auto dry = request.find("dryRun"); dry != request.end() && !dry->is_null()) {
    if (!dry->is_boolean()) return DecodeError{"request.dryRun must be a boolean, got " + json_type_name(*dry)};
    out.dry_run = dry->get<bool>();
  }
  if (out.request_kind.kind.empty()) out.request_kind = out.kind;
  if (out.request_resource.resource.empty()) out.request_resource = out.resource;
  if (out.request_sub_resource.empty()) out.request_sub_resource = out.sub_resource;
  return out;
}

Json status_to_json(const Status& status, bool allowed) {
  Json json_status = {{"metadata", Json::object()}, {"status", allowed ? "Success" : "Failure"}, {"code", status.code}};
  if (!status.message.empty()) json_status["message"] = status.message;
  if (!status.reason.empty()) json_status["reason"] = status.reason;
  if (!status.causes.empty()) {
    Json causes = Json::array();
    for (const auto& cause : status.causes) {
      Json item = {{"reason", cause.reason}, {"message", cause.message}};
      if (!cause.field.empty()) item["field"] = cause.field;
      causes.push_back(std::move(item));
    }
    json_status["details"] = {{"causes", std::move(causes)}};
  }
  return json_status;
}

std::string encode_admission_review(const AdmissionResponse& response, std::string_view api_version) {
  Json body = {{"uid", response.uid}, {"allowed", response.allowed}};
  if (response.patch.is_array() && !response.patch.empty()) {
    body["patchType"] = "JSONPatch";
    body["patch"] = base64(response.patch.dump());
  }
  if (response.status) body["status"] = status_to_json(*response.status, response.allowed);
  if (!response.warnings.empty()) body["warnings"] = response.warnings;
  if (!response.audit_annotations.empty()) body["auditAnnotations"] = response.audit_annotations;

  Json review = {{"apiVersion", api_version.empty() ? kV1 : api_version},
                 {"kind", "AdmissionReview"},
                 {"response", std::move(body)}};
  // Invalid UTF-8 in a warning must not turn a decision into an exception.
  return review.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace sizeguard
