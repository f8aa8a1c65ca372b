// What rules need to know about the cluster beyond the request in hand (namespace
// labels, a Scale's parent, pods in a namespace). The engine reads it through this small
// interface so tests inject a fake and offline review can use a file.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kube/review.h"

namespace sizeguard {

struct ClusterStateError {
  std::string message;  // e.g. "GET /api/v1/namespaces/ml-team: timeout after 2s"
};

template <class T>
using StateResult = std::variant<T, ClusterStateError>;

class ClusterState {
 public:
  virtual ~ClusterState() = default;
  // metadata.labels of the namespace (an object, possibly empty).
  virtual StateResult<Json> namespace_labels(std::string_view ns) = 0;
  // One object, e.g. ("apps", "v1", "deployments", ns, name); the full JSON.
  virtual StateResult<Json> get_object(std::string_view group, std::string_view version,
                                       std::string_view resource, std::string_view ns,
                                       std::string_view name) = 0;
  // Pods in the namespace that are Pending or Running (terminated ones hold no resources).
  virtual StateResult<std::vector<Json>> active_pods(std::string_view ns) = 0;
};

}  // namespace sizeguard
