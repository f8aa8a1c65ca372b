// `sizeguard review -f FILE`: runs manifests (or saved AdmissionReviews) through the same
// mutate and validate decisions `serve` makes, and shows the resulting changes and verdict.
#include <algorithm>
#include <cctype>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "webhook/app/commands.h"
#include "webhook/app/handlers.h"
#include "webhook/app/runtime.h"
#include "kube/jsonpatch.h"
#include "webhook/logging.h"
#include "kube/manifest.h"
#include "kube/metrics.h"
#include "kube/review.h"

namespace sizeguard {
namespace {

struct ReviewFlags {
  std::vector<std::string> files;
  std::string operation = "CREATE";
  std::string namespace_ = "default";
  std::string user = "kubernetes-admin";
  std::vector<std::string> groups;
  std::string output = "text";
  RuntimeOptions runtime;
};

// Bad input: the message is printed after "sizeguard review: " and the exit code is 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One request to review, with where it came from.
struct ReviewItem {
  std::string source;
  int index = 0;
  AdmissionRequest request;
};

// ---- manifest -> AdmissionRequest -------------------------------------------------------

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// The resource (plural) for a kind, guessed the way Kubernetes guesses it
// (meta.UnsafeGuessKindToResource): "Deployment" -> "deployments", "Ingress" -> "ingresses",
// "NetworkPolicy" -> "networkpolicies".
std::string guess_resource(const std::string& kind) {
  std::string singular = lowercase(kind);
  if (singular.empty() || singular == "endpoints") return singular;
  if (singular.back() == 's') return singular + "es";
  if (singular.back() == 'y') return singular.substr(0, singular.size() - 1) + "ies";
  return singular + "s";
}

// The built-in cluster-scoped kinds (`kubectl api-resources --namespaced=false`, up to
// 1.31): they get no namespace. Custom resources are taken as namespaced.
bool is_cluster_scoped(const std::string& kind) {
  static const std::set<std::string> kinds = {
      "Namespace", "Node", "PersistentVolume", "ComponentStatus", "ClusterRole", "ClusterRoleBinding",
      "CustomResourceDefinition", "APIService", "StorageClass", "CSIDriver", "CSINode", "VolumeAttachment",
      "VolumeAttributesClass", "PriorityClass", "RuntimeClass", "IngressClass", "IPAddress", "ServiceCIDR",
      "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
      "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
      "CertificateSigningRequest", "ClusterTrustBundle", "FlowSchema", "PriorityLevelConfiguration",
      "TokenReview", "SelfSubjectReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview",
      "SubjectAccessReview", "StorageVersion", "StorageVersionMigration", "DeviceClass", "ResourceSlice",
      "PodSecurityPolicy"};
  return kinds.contains(kind);
}

GroupVersionKind gvk_of(const Json& object) {
  const auto& api_version = object.at("apiVersion").get_ref<const std::string&>();
  GroupVersionKind gvk;
  gvk.kind = object.at("kind").get<std::string>();
  if (auto slash = api_version.find('/'); slash != std::string::npos) {
    gvk.group = api_version.substr(0, slash);
    gvk.version = api_version.substr(slash + 1);
  } else {
    gvk.version = api_version;
  }
  return gvk;
}

std::string string_at(const Json& object, const char* field) {
  auto metadata = object.find("metadata");
  if (metadata == object.end() || !metadata->is_object()) return "";
  auto value = metadata->find(field);
  return value != metadata->end() && value->is_string() ? value->get<std::string>() : "";
}

AdmissionRequest request_from_manifest(const ManifestDocument& document, const ReviewFlags& flags,
                                       Operation operation) {
  Json object = document.object;
  AdmissionRequest request;
  request.api_version = "admission.k8s.io/v1";
  request.uid = "review-" + document.source + "-" + std::to_string(document.index);
  request.kind = gvk_of(object);
  request.resource = {request.kind.group, request.kind.version, guess_resource(request.kind.kind)};
  request.request_kind = request.kind;
  request.request_resource = request.resource;
  request.name = string_at(object, "name");
  if (!is_cluster_scoped(request.kind.kind)) {
    request.namespace_ = string_at(object, "namespace");
    if (request.namespace_.empty()) {
      request.namespace_ = flags.namespace_;
      // The apiserver fills the request namespace into the object before admission.
      if (!object.contains("metadata") || !object["metadata"].is_object()) object["metadata"] = Json::object();
      object["metadata"]["namespace"] = request.namespace_;
    }
  }
  request.operation = operation;
  request.user_info.username = flags.user;
  request.user_info.groups = flags.groups;
  if (request.user_info.groups.empty()) request.user_info.groups = {"system:masters", "system:authenticated"};
  switch (operation) {
    case Operation::Update:
      request.old_object = object;
      request.object = std::move(object);
      break;
    case Operation::Delete:
      request.old_object = std::move(object);
      break;
    default:
      request.object = std::move(object);
      break;
  }
  return request;
}

Operation parse_operation_flag(const std::string& text) {
  if (text == "UPDATE") return Operation::Update;
  if (text == "DELETE") return Operation::Delete;
  return Operation::Create;
}

// Reads every file and turns every document into a request; throws InputError.
std::vector<ReviewItem> load_items(const ReviewFlags& flags) {
  std::vector<ReviewItem> items;
  const Operation operation = parse_operation_flag(flags.operation);
  std::string without_objects;  // files that held none, for the error below
  for (const std::string& file : flags.files) {
    auto result = read_manifests(file);
    if (auto* error = std::get_if<ManifestError>(&result)) throw InputError(error->message);
    if (std::get<std::vector<ManifestDocument>>(result).empty()) {
      without_objects += (without_objects.empty() ? "" : ", ") + (file == "-" ? std::string("standard input") : file);
    }
    for (const ManifestDocument& document : std::get<std::vector<ManifestDocument>>(result)) {
      ReviewItem item{document.source, document.index, {}};
      if (document.object.at("kind") == "AdmissionReview") {
        auto decoded = decode_admission_review(document.object.dump());
        if (auto* error = std::get_if<DecodeError>(&decoded)) {
          throw InputError(document.source + "[" + std::to_string(document.index) +
                           "]: bad AdmissionReview: " + error->message);
        }
        item.request = std::get<AdmissionRequest>(std::move(decoded));
      } else {
        item.request = request_from_manifest(document, flags, operation);
      }
      items.push_back(std::move(item));
    }
  }
  if (items.empty()) {
    throw InputError("no Kubernetes objects in " + without_objects + " (only comments, empty documents or empty Lists)");
  }
  return items;
}

// ---- decisions ----------------------------------------------------------------------------

struct Verdict {
  AdmissionResponse mutation;
  std::optional<AdmissionResponse> validation;  // absent when mutate denied
  bool allowed() const { return mutation.allowed && (!validation || validation->allowed); }
  const std::optional<Status>& status() const {
    return !mutation.allowed || !validation ? mutation.status : validation->status;
  }
};

bool has_patch(const AdmissionResponse& response) {
  return response.patch.is_array() && !response.patch.empty();
}

// mutate, then validate on the mutated object, as the apiserver orders them.
Verdict decide(const AdmissionRequest& request, AdmissionContext& context) {
  Verdict verdict{mutate(request, context), std::nullopt};
  if (!verdict.mutation.allowed) return verdict;
  if (has_patch(verdict.mutation) && request.object.is_object()) {
    AdmissionRequest mutated = request;
    try {
      mutated.object = request.object.patch(verdict.mutation.patch);
    } catch (const Json::exception& e) {
      throw std::runtime_error("mutate returned a patch that does not apply: " + std::string(e.what()));
    }
    verdict.validation = validate(mutated, context);
  } else {
    verdict.validation = validate(request, context);
  }
  return verdict;
}

// ---- readable diff -------------------------------------------------------------------------

struct Change {
  std::string op;    // add, replace, remove, move, copy
  std::string path;  // readable: spec.containers[0].resources["limits"]
  std::optional<Json> old_value, new_value;
  std::string from;  // readable source path for move/copy
};

bool is_identifier(const std::string& token) {
  if (token.empty() || std::isdigit(static_cast<unsigned char>(token.front()))) return false;
  return std::all_of(token.begin(), token.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '_' || c == '$'; });
}

void append_member(std::string& path, const std::string& key) {
  if (is_identifier(key)) {
    path += (path.empty() ? "" : ".") + key;
  } else {
    path += "[" + Json(key).dump() + "]";
  }
}

// An added object shows as one line per leaf, so new parents read like the fields they hold:
// + metadata.annotations["sizeguard.io/reason"]: "..." rather than + metadata.annotations: {...}.
void add_leaves(const std::string& path, const Json& value, std::vector<Change>& changes) {
  if (!value.is_object() || value.empty()) {
    changes.push_back({"add", path, std::nullopt, value, ""});
    return;
  }
  for (auto it = value.begin(); it != value.end(); ++it) {
    std::string child = path;
    append_member(child, it.key());
    add_leaves(child, it.value(), changes);
  }
}

// "/spec/template/spec/containers/0/resources" -> "spec.template.spec.containers[0].resources",
// "/metadata/annotations/sizeguard.io~1reason" -> metadata.annotations["sizeguard.io/reason"].
// Array indexes are recognised by walking `document`; "-" becomes the index it appends at.
std::string readable_path(const Json& document, const std::string& pointer) {
  std::vector<std::string> tokens = split_pointer(pointer);
  if (tokens.empty()) return "(document)";
  std::string path;
  const Json* node = &document;
  for (const std::string& token : tokens) {
    if (node && node->is_array()) {
      path += "[" + (token == "-" ? std::to_string(node->size()) : token) + "]";
      bool numeric = !token.empty() && std::all_of(token.begin(), token.end(), [](unsigned char c) {
        return std::isdigit(c);
      });
      node = numeric && std::stoull(token) < node->size() ? &(*node)[std::stoull(token)] : nullptr;
      continue;
    }
    append_member(path, token);
    if (node && node->is_object()) {
      auto it = node->find(token);
      node = it != node->end() ? &*it : nullptr;
    } else {
      node = nullptr;
    }
  }
  return path;
}

// The node at `pointer`, or null (no copy: a Pod's containers array can be megabytes).
const Json* node_at(const Json& document, const std::string& pointer) {
  try {
    Json::json_pointer p(pointer);
    if (document.contains(p)) return &document.at(p);
  } catch (const Json::exception&) {
  }
  return nullptr;
}

std::optional<Json> value_at(const Json& document, const std::string& pointer) {
  const Json* node = node_at(document, pointer);
  return node ? std::optional<Json>(*node) : std::nullopt;
}

// The patch operations as changes against `original`, each read against the document as the
// operations before it left it.
std::vector<Change> describe_patch(const Json& original, const Json& patch) {
  std::vector<Change> changes;
  if (!patch.is_array()) return changes;
  Json current = original;
  for (const Json& operation : patch) {
    const std::string op = operation.value("op", "");
    const std::string pointer = operation.value("path", "");
    if (op == "test") continue;
    Change change;
    change.path = readable_path(current, pointer);
    change.old_value = value_at(current, pointer);
    if (op == "add" || op == "replace") {
      change.new_value = operation.value("value", Json());
      // Adding into an array inserts; adding over an existing member replaces it.
      bool array_insert = false;
      if (auto slash = pointer.rfind('/'); slash != std::string::npos) {
        const Json* parent = node_at(current, pointer.substr(0, slash));
        array_insert = parent && parent->is_array();
      }
      if (op == "add" && array_insert) change.old_value.reset();
      change.op = change.old_value ? "replace" : "add";
      if (change.op == "add") {
        add_leaves(change.path, *change.new_value, changes);
        change.op.clear();
      }
    } else if (op == "remove") {
      change.op = "remove";
    } else if (op == "move" || op == "copy") {
      const std::string from = operation.value("from", "");
      change.op = op;
      change.from = readable_path(current, from);
      change.new_value = value_at(current, from);
    } else {
      change.op = op;
    }
    if (!change.op.empty()) changes.push_back(std::move(change));
    try {
      current.patch_inplace(Json::array({operation}));  // in place: linear in the operations
    } catch (const Json::exception&) {
      break;  // decide() already rejected patches that do not apply
    }
  }
  return changes;
}

std::string show(const std::optional<Json>& value) { return value ? value->dump() : "(none)"; }

std::string format_change(const Change& change) {
  if (change.op == "add") return "  + " + change.path + ": " + show(change.new_value);
  if (change.op == "remove") return "  - " + change.path + ": " + show(change.old_value);
  if (change.op == "move" || change.op == "copy") {
    return "  + " + change.path + ": " + show(change.new_value) + " (" + change.op + " from " + change.from + ")";
  }
  return "  ~ " + change.path + ": " + show(change.old_value) + " -> " + show(change.new_value);
}

// ---- output ----------------------------------------------------------------------------------

std::string subject_name(const AdmissionRequest& request) {
  std::string name = request.display_name();
  if (name.empty()) name = "<unnamed>";
  return request.namespace_.empty() ? name : request.namespace_ + "/" + name;
}

std::vector<std::string> all_warnings(const Verdict& verdict) {
  std::vector<std::string> warnings = verdict.mutation.warnings;
  if (verdict.validation) {
    warnings.insert(warnings.end(), verdict.validation->warnings.begin(), verdict.validation->warnings.end());
  }
  return warnings;
}

// Every line goes through printable(): names, values and messages come from the input.
void print_text(const ReviewItem& item, const Verdict& verdict, const std::vector<Change>& changes) {
  const AdmissionRequest& request = item.request;
  std::vector<std::string> lines;
  lines.push_back(item.source + "[" + std::to_string(item.index) + "] " + request.kind.kind + " " +
                  subject_name(request) + " (" + std::string(to_string(request.operation)) + ")");
  if (changes.empty()) lines.push_back("  (no changes)");
  for (const Change& change : changes) lines.push_back(format_change(change));
  for (const std::string& warning : all_warnings(verdict)) lines.push_back("  warning: " + warning);
  const auto& status = verdict.status();
  if (verdict.allowed()) {
    lines.push_back("  decision: allowed");
  } else if (!status) {
    lines.push_back("  decision: DENIED");
  } else {
    lines.push_back("  decision: DENIED (" + std::to_string(status->code) + " " + status->reason + ")" +
                    (status->message.empty() ? "" : ": " + status->message));
    for (const StatusCause& cause : status->causes) {
      lines.push_back("    - " + (cause.field.empty() ? "" : cause.field + ": ") + cause.reason +
                      (cause.message.empty() ? "" : ": " + cause.message));
    }
  }
  for (const std::string& line : lines) std::cout << printable(line) << "\n";
}

Json to_json(const std::optional<Json>& value) { return value ? *value : Json(); }

Json json_result(const ReviewItem& item, const Verdict& verdict, const std::vector<Change>& changes) {
  const AdmissionRequest& request = item.request;
  Json result = {{"source", item.source},
                 {"index", item.index},
                 {"kind", request.kind.kind},
                 {"namespace", request.namespace_},
                 {"name", request.display_name()},
                 {"operation", to_string(request.operation)},
                 {"allowed", verdict.allowed()},
                 {"patch", has_patch(verdict.mutation) ? verdict.mutation.patch : Json()}};
  Json change_list = Json::array();
  for (const Change& change : changes) {
    Json entry = {{"op", change.op}, {"path", change.path}, {"old", to_json(change.old_value)},
                  {"new", to_json(change.new_value)}};
    if (!change.from.empty()) entry["from"] = change.from;
    change_list.push_back(std::move(entry));
  }
  result["changes"] = std::move(change_list);
  result["warnings"] = all_warnings(verdict);
  if (const auto& status = verdict.allowed() ? std::optional<Status>() : verdict.status()) {
    result["status"] = status_to_json(*status);  // the shape the apiserver receives
  } else {
    result["status"] = nullptr;
  }
  Json audit = Json::object();
  for (const auto& [key, value] : verdict.mutation.audit_annotations) audit[key] = value;
  if (verdict.validation) {
    for (const auto& [key, value] : verdict.validation->audit_annotations) audit[key] = value;
  }
  result["auditAnnotations"] = std::move(audit);
  return result;
}

int run_review(const ReviewFlags& flags) {
  std::vector<ReviewItem> items;
  Metrics metrics;
  std::unique_ptr<Runtime> runtime;
  try {
    items = load_items(flags);
    runtime = make_runtime(flags.runtime, metrics, nullptr, /*require_policies=*/true);
  } catch (const std::exception& e) {
    std::cerr << "sizeguard review: " << printable(e.what()) << "\n";
    return 2;
  }
  runtime->context.quiet_controller_pods = false;  // a person reads review's output
  std::optional<CheckOnlyGpuReservationStore> check_only;
  if (runtime->gpu_reservations) {
    runtime->context.gpu_reservations = &check_only.emplace(*runtime->gpu_reservations);
  }

  bool all_allowed = true;
  Json results = Json::array();
  for (size_t i = 0; i < items.size(); ++i) {
    const ReviewItem& item = items[i];
    Verdict verdict;
    try {
      verdict = decide(item.request, runtime->context);
    } catch (const std::exception& e) {
      std::cerr << "sizeguard review: " << printable(item.source + "[" + std::to_string(item.index) + "]: " + e.what())
                << "\n";
      return 2;
    }
    all_allowed = all_allowed && verdict.allowed();
    const std::vector<Change> changes =
        has_patch(verdict.mutation) ? describe_patch(item.request.object, verdict.mutation.patch) : std::vector<Change>();
    if (flags.output == "json") {
      results.push_back(json_result(item, verdict, changes));
    } else {
      if (i > 0) std::cout << "\n";
      print_text(item, verdict, changes);
    }
  }
  // Invalid UTF-8 from the input becomes U+FFFD rather than an exception.
  if (flags.output == "json") std::cout << results.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  std::cout.flush();
  return all_allowed ? 0 : 1;
}

}  // namespace

void add_review_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ReviewFlags>();
  auto* cmd = app.add_subcommand(
      "review", "Run manifests or saved AdmissionReviews through mutate and validate, and show the result");
  cmd->add_option("-f,--filename", flags->files,
                  "YAML or JSON file of Kubernetes objects or AdmissionReviews ('-' for stdin); repeatable")
      ->required();
  cmd->add_option("--operation", flags->operation, "operation to review manifests as")
      ->transform(CLI::IsMember({"CREATE", "UPDATE", "DELETE"}, CLI::ignore_case))
      ->capture_default_str();
  cmd->add_option("--namespace", flags->namespace_, "namespace for objects without metadata.namespace")
      ->capture_default_str();
  cmd->add_option("--user", flags->user, "requesting user name")->capture_default_str();
  cmd->add_option("--group", flags->groups,
                  "requesting user's group; repeatable (default: system:masters, system:authenticated)");
  cmd->add_option("--output", flags->output, "text or json")
      ->transform(CLI::IsMember({"text", "json"}, CLI::ignore_case))
      ->capture_default_str();
  flags->runtime.policies = "";  // offline: only what the user points at
  flags->runtime.watch_policies = false;
  add_runtime_options(*cmd, flags->runtime);
  cmd->callback([flags, &exit_code] { exit_code = run_review(*flags); });
}

}  // namespace sizeguard
