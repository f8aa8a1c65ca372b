// The policy schema: what a `kind: Policy` document says, as plain structs. The YAML
// loader (loader.h) fills them and rejects anything else; the engine (engine.h) reads them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/quantity.h"
#include "kube/review.h"

namespace sizeguard {

// enforce: deny. warn: allow with a kubectl warning. audit: allow, record only.
enum class Mode { Enforce, Warn, Audit };
std::string_view to_string(Mode mode);
std::optional<Mode> mode_from(std::string_view text);

// Shell-style glob: '*' any run of characters, '?' one character, everything else literal.
bool glob_match(std::string_view pattern, std::string_view text);
// True when any of the globs matches.
bool glob_match_any(const std::vector<std::string>& patterns, std::string_view text);

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

// --- automation guardrails (spec.automation) ------------------------------------------

// Who counts as an automation agent. Service accounts as "namespace:name" globs.
struct ActorMatch {
  std::vector<std::string> service_accounts;
  std::vector<std::string> usernames;
  std::vector<std::string> groups;
};

// Scale-down limits in the HPA `behavior` vocabulary: at most `percent` of the current
// replicas and/or `pods` per change; with both, `select_max` picks the policy allowing the
// larger step (HPA's selectPolicy: Max), otherwise the smaller (Min, the default here).
struct ScaleDownRule {
  std::optional<int64_t> max_step_percent;
  std::optional<int64_t> max_step_pods;
  bool select_max = false;
  std::optional<int64_t> floor;
};

struct ResourceCutRule {
  int64_t max_percent = 0;
  std::vector<std::string> resources{"cpu", "memory"};
};

// A weekly window (days + local start/end, end <= start means it runs past midnight into
// the next day) or a one-off range (local date-times), in an IANA timezone.
struct FreezeWindow {
  std::string name;
  std::string timezone;
  std::vector<int> days;  // 0 = Sunday ... 6 = Saturday; the day the window starts
  int start_minute = 0;   // minutes after local midnight
  int end_minute = 0;     // 1440 = midnight at the end of the day
  std::optional<int64_t> from_local, to_local;  // one-off: local seconds since the epoch
  bool allow_scale_up = false;
};

struct ProtectedRule {
  std::optional<LabelSelector> selector;            // on labels
  std::map<std::string, std::string> annotations;   // each must be present with this value ("*": any)
  std::vector<std::string> forbid{"delete", "scaleToZero", "resourceChange"};
};

struct BudgetLimit {
  int64_t changes = 0;
  int64_t window_seconds = 0;
};

struct AutomationRule {
  ActorMatch actors;
  std::optional<ScaleDownRule> scale_down;
  std::optional<ResourceCutRule> resource_cuts;
  std::vector<FreezeWindow> freeze_windows;
  std::optional<ProtectedRule> protected_workloads;
  std::optional<BudgetLimit> budget_per_workload;
  std::optional<BudgetLimit> budget_per_actor;
  std::optional<std::string> change_reason_annotation;  // required on agent changes when set
};

// People allowed to bypass automation rules with the sizeguard.io/break-glass annotation.
struct BreakGlass {
  std::vector<std::string> users;   // globs
  std::vector<std::string> groups;
};

// --- right-sizing (spec.rightsizing) ---------------------------------------------------

// How a container's limit follows its new request.
enum class LimitStrategy {
  KeepRatio,       // keep the old limit/request ratio (no limit stays no limit)
  Ratio,           // limit = request x ratio
  EqualToRequest,  // limit = request
  None,            // drop the limit (CPU: no throttling)
  Unchanged,       // leave the limit as written (raised to the request if below it); memory default
};

struct LimitRule {
  LimitStrategy strategy = LimitStrategy::KeepRatio;
  double ratio = 1;  // for Ratio
};

struct RightsizingRule {
  std::optional<Mode> mode;  // overrides spec.mode for right-sizing
  enum class Target { Pods, Templates, Both } target = Target::Pods;
  int64_t min_change_percent = 10;
  std::optional<int64_t> max_increase_percent;
  std::optional<int64_t> max_decrease_percent;
  std::map<std::string, Quantity> min, max;  // cpu, memory requests
  LimitRule cpu_limit{LimitStrategy::KeepRatio, 1};
  // Memory limits are an OOM risk when they follow a modelled request down, so by default
  // they stay as written; any strategy is floored at the snapshot's peak-based bound.
  LimitRule memory_limit{LimitStrategy::Unchanged, 1};
  std::vector<std::string> include_containers, exclude_containers;  // globs on names
  // coldStart.accelerators: fill missing requests of GPU/accelerator containers without
  // usage history too (off: such containers are left alone until they have history).
  bool cold_start_accelerators = false;
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
  std::optional<AutomationRule> automation;
  std::optional<BreakGlass> break_glass;
  std::optional<RightsizingRule> rightsizing;
};

// An immutable set of policies, as loaded from one directory at one moment.
struct PolicySet {
  std::vector<Policy> policies;
  std::vector<std::string> files;  // the files it came from, for /readyz and logs
  std::string fingerprint;         // content hash of those files
};

}  // namespace sizeguard
