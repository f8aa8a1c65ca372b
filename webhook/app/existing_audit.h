// Judging objects that already exist (the background audit in `serve`, `sizeguard scan`)
// with the same decision code admission runs: each object is turned into the
// AdmissionRequest a CREATE of it would be (no user, so no automation actor) and given to
// evaluate_policies and rightsize. Pure: the cluster is read only through ClusterState.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "policies/engine.h"
#include "rightsizing/rightsizing.h"

namespace sizeguard {

// One workload resource the audit lists.
struct AuditedResource {
  const char* kind;      // "Deployment"
  const char* group;     // "apps", "" for the core group
  const char* version;   // "v1"
  const char* resource;  // "deployments"
  std::string collection_path() const;  // "/apis/apps/v1/deployments", "/api/v1/pods"
};
// Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, HorizontalPodAutoscaler.
const std::vector<AuditedResource>& audited_resources();
// nullptr when the kind is not audited.
const AuditedResource* audited_resource(std::string_view kind);

// One (policy, rule) that applied. result uses the PolicyReport vocabulary: "pass", "fail"
// (an enforce- or audit-mode violation), "warn" (a warn-mode violation), "error" (not
// evaluated: cluster state unavailable).
struct AuditResult {
  std::string policy;
  std::string rule;
  std::string result;
  Mode mode = Mode::Enforce;
  std::string message;  // the findings' messages, "; "-joined ("" on pass)
  std::string reason;   // their reason codes, ","-joined ("ReplicasBelowMin")
  bool denies = false;  // admission would deny this object
};

// Right-sizing of one container resource: what the object asks for now and what
// admission would set.
struct SizingChange {
  std::string container, resource, field;  // "web", "cpu", "request"
  std::string current, recommended;        // Quantity text, "" when absent / removed
};

struct AuditSizing {
  std::string policy;
  Mode mode = Mode::Enforce;
  std::string workload;  // the recommendations key: "shop/Deployment/web"
  std::vector<SizingChange> changes;
  // Per pod (cores, bytes), as admission reports them; replicas multiply them.
  double cpu_before = 0, cpu_after = 0, memory_before = 0, memory_after = 0;
  int64_t replicas = 1;
  bool cold_start = false;
  std::optional<double> confidence;  // the lowest of the changed containers'
  std::vector<std::string> notes;
  // Savings for the whole workload (negative: it needs more): (before - after) x replicas.
  double cpu_savings() const { return (cpu_before - cpu_after) * static_cast<double>(replicas); }
  double memory_savings() const { return (memory_before - memory_after) * static_cast<double>(replicas); }
};

struct ObjectAudit {
  std::string kind, namespace_, name, uid, api_version;
  // Not judged: owned by a controller (its owner is judged instead), or malformed.
  std::optional<std::string> skipped;
  std::vector<AuditResult> results;
  std::vector<std::string> notes;          // the decision's notes (things worth a warning)
  std::optional<AuditSizing> rightsizing;  // a right-sizing policy applied and proposes changes
  bool denies() const;                     // any result that admission would deny
};

struct ExistingAuditInputs {
  const PolicySet* policies = nullptr;  // required
  ClusterState* state = nullptr;        // required (UnavailableClusterState when there is none)
  RightsizingInputs rightsizing;  // no snapshot and no model: no right-sizing
  EvaluationOptions evaluation;
};

// The CREATE admission request for an existing object (as listed: apiVersion and kind may
// be missing, so `kind` says which it is). Server-set fields stay: rules ignore them.
AdmissionRequest synthesize_create(const Json& object, const AuditedResource& kind);

// Judges one existing object. A Pod's GPUs are not counted twice against its namespace
// quota: the state's active pods leave the Pod itself out. A workload whose right-sizing
// policy targets Pods gets the numbers admission would give a Pod made from its template.
ObjectAudit audit_existing_object(const Json& object, const AuditedResource& kind, const ExistingAuditInputs& inputs);

}  // namespace sizeguard
