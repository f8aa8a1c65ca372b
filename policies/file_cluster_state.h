// Cluster state read from manifests (`review --cluster-state FILE`): Namespace objects
// give namespace labels, Pods count as active unless Succeeded/Failed, anything else is
// found by get_object. What the file does not contain is reported as missing, never
// assumed.
#pragma once

#include <string>
#include <vector>

#include "policies/cluster_state.h"

namespace sizeguard {

class FileClusterState : public ClusterState {
 public:
  // Throws std::runtime_error with the manifest reader's message on bad input.
  explicit FileClusterState(const std::string& path);
  explicit FileClusterState(std::vector<Json> objects, std::string source = "cluster state");

  StateResult<Json> namespace_labels(std::string_view ns) override;
  StateResult<Json> get_object(std::string_view group, std::string_view version, std::string_view resource,
                               std::string_view ns, std::string_view name) override;
  StateResult<std::vector<Json>> active_pods(std::string_view ns) override;

 private:
  std::vector<Json> objects_;
  std::string source_;
};

}  // namespace sizeguard
