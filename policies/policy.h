// The policy schema: what a `kind: Policy` document says, as plain structs. The YAML
// loader (loader.h) fills them and rejects anything else; the engine (engine.h) reads them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "webhook/quantity.h"
#include "webhook/review.h"

namespace sizeguard {

// enforce: deny. warn: allow with a kubectl warning. audit: allow, record only.
enum class Mode { Enforce, Warn, Audit };
std::string_view to_string(Mode mode);
std::optional<Mode> mode_from(std::string_view text);

// Shell-style glob: '*' any run of characters, '?' one character, everything else literal.
bool glob_match(std::string_view pattern, std::string_view text);

// Kubernetes label selector semantics: every matchLabels pair and every expression must
// hold; an empty selector matches everything.
struct LabelRequirement {
  enum class Operator { In, NotIn, Exists, DoesNotExist };
  std::string key;
  Operator op = Operator::In;
  std::vector<std::string> values;
};
struct LabelSelector {
  std::map<std::string, std::string> match_labels;
  std::vector<LabelRequirement> match_expressions;
  bool matches(const Json& labels) const;  // labels: a JSON object of strings (or null)
  bool empty() const { return match_labels.empty() && match_expressions.empty(); }
};

// Which requests a policy applies to. Empty lists mean "any".
struct MatchCriteria {
  std::vector<std::string> namespaces;  // names or globs ("team-*")
  std::optional<LabelSelector> namespace_selector;
  std::optional<LabelSelector> object_selector;
  std::vector<std::string> kinds;       // workload kinds: Deployment, Pod, HorizontalPodAutoscaler ...
  std::vector<Operation> operations;
};

struct ReplicaRule {
  std::optional<int64_t> min;
  std::optional<int64_t> max;
};

// An extended resource counted against GPU quotas, with its weight in GPU-equivalents
// (a MIG slice such as nvidia.com/mig-1g.10gb counts as a fraction of a GPU).
struct GpuResource {
  std::string name;
  double weight = 1.0;
};
struct GpuRule {
  std::vector<GpuResource> resources;  // defaults to nvidia.com/gpu with weight 1
  std::optional<double> max_per_container;
  std::optional<double> max_per_pod;
  std::optional<double> max_per_workload;
  std::optional<double> namespace_total;
};

struct ResourceRule {
  std::vector<std::string> required_requests;  // e.g. cpu, memory
  std::vector<std::string> required_limits;
  std::map<std::string, double> max_limit_request_ratio;
  std::map<std::string, Quantity> min;  // per container, for requests and limits
  std::map<std::string, Quantity> max;
};

enum class OnStateError { Allow, Deny };

struct Policy {
  std::string name;
  std::string source;  // "prod.yaml[1]", for messages
  std::optional<Mode> mode;
  std::optional<OnStateError> on_cluster_state_error;
  MatchCriteria match;
  std::optional<MatchCriteria> exclude;
  std::optional<ReplicaRule> replicas;
  std::optional<GpuRule> gpu;
  std::optional<ResourceRule> resources;
};

// An immutable set of policies, as loaded from one directory at one moment.
struct PolicySet {
  std::vector<Policy> policies;
  std::vector<std::string> files;  // the files it came from, for /readyz and logs
  std::string fingerprint;         // content hash of those files
};

}  // namespace sizeguard
