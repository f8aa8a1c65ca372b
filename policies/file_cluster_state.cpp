#include "policies/file_cluster_state.h"

#include <stdexcept>

#include "kube/manifest.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

std::string lowercase_plural(const std::string& kind) {
  std::string out;
  for (char c : kind) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out + "s";
}

std::string_view string_at(const Json& object, const Json::json_pointer& pointer) {
  const Json* value = json_at(object, pointer.to_string());
  return value && value->is_string() ? std::string_view(value->get_ref<const std::string&>()) : std::string_view();
}

}  // namespace

FileClusterState::FileClusterState(const std::string& path) : source_(path) {
  auto read = read_manifests(path);
  if (auto* error = std::get_if<ManifestError>(&read)) throw std::runtime_error(error->message);
  for (auto& document : std::get<std::vector<ManifestDocument>>(read)) objects_.push_back(std::move(document.object));
}

FileClusterState::FileClusterState(std::vector<Json> objects, std::string source)
    : objects_(std::move(objects)), source_(std::move(source)) {}

StateResult<Json> FileClusterState::namespace_labels(std::string_view ns) {
  for (const auto& object : objects_) {
    if (object.value("kind", "") == "Namespace" && string_at(object, "/metadata/name"_json_pointer) == ns) {
      return labels_of(object);
    }
  }
  return ClusterStateError{"namespace " + std::string(ns) + " is not in " + source_};
}

StateResult<Json> FileClusterState::get_object(std::string_view group, std::string_view, std::string_view resource,
                                               std::string_view ns, std::string_view name) {
  for (const auto& object : objects_) {
    const std::string api_version = object.value("apiVersion", "");
    const auto slash = api_version.find('/');
    const std::string object_group = slash == std::string::npos ? "" : api_version.substr(0, slash);
    if (object_group == group && lowercase_plural(object.value("kind", "")) == resource &&
        string_at(object, "/metadata/namespace"_json_pointer) == ns &&
        string_at(object, "/metadata/name"_json_pointer) == name) {
      return object;
    }
  }
  return ClusterStateError{std::string(resource) + " " + std::string(ns) + "/" + std::string(name) + " is not in " +
                           source_};
}

StateResult<std::vector<Json>> FileClusterState::active_pods(std::string_view ns) {
  std::vector<Json> pods;
  for (const auto& object : objects_) {
    if (object.value("kind", "") != "Pod" || string_at(object, "/metadata/namespace"_json_pointer) != ns) continue;
    const std::string_view phase = string_at(object, "/status/phase"_json_pointer);
    if (phase == "Succeeded" || phase == "Failed") continue;
    pods.push_back(object);
  }
  return pods;
}

}  // namespace sizeguard
