// Guardrails for automation agents (spec.automation): change-aware rules comparing the old
// and new object, freeze windows, protected workloads, change budgets, change reasons and
// break-glass. Messages end with key=value hints an agent can act on.
#include <cmath>
#include <cstdio>

#include <date/tz.h>

#include "policies/lease_update.h"
#include "policies/rules.h"
#include "kube/jsonpatch.h"

namespace sizeguard::rules {
namespace {

constexpr const char* kServiceAccountPrefix = "system:serviceaccount:";

// Matched by identity (service account or username), as opposed to only by a group.
bool matches_identity(const ActorMatch& actors, const UserInfo& user) {
  if (user.username.rfind(kServiceAccountPrefix, 0) == 0) {
    const std::string ns_name = user.username.substr(std::string_view(kServiceAccountPrefix).size());
    if (glob_match_any(actors.service_accounts, ns_name)) return true;
  }
  return glob_match_any(actors.usernames, user.username);
}

bool is_agent(const ActorMatch& actors, const UserInfo& user) {
  if (matches_identity(actors, user)) return true;
  return std::any_of(user.groups.begin(), user.groups.end(),
                     [&](const std::string& g) { return glob_match_any(actors.groups, g); });
}

bool may_break_glass(const BreakGlass& bg, const UserInfo& user) {
  if (glob_match_any(bg.users, user.username)) return true;
  return std::any_of(user.groups.begin(), user.groups.end(), [&](const std::string& g) { return glob_match_any(bg.groups, g); });
}

std::string annotation(const Json& object, const std::string& key) {
  const Json& annotations = annotations_of(object);
  auto it = annotations.find(key);
  return it != annotations.end() && it->is_string() ? it->get<std::string>() : "";
}

// A replica-like field before and after the change.
struct ReplicaChange {
  std::string field;
  int64_t before = 0;
  int64_t after = 0;
};

std::vector<ReplicaChange> replica_changes(Subject& s) {
  const AdmissionRequest& r = s.request();
  if (r.operation != Operation::Update || r.old_object.is_null() || r.object.is_null()) return {};
  if (s.is_scale()) {
    return {{"spec.replicas", replicas(r.old_object, WorkloadKind::Scale).value_or(0),
             replicas(r.object, WorkloadKind::Scale).value_or(0)}};
  }
  if (s.kind() == WorkloadKind::HorizontalPodAutoscaler) {
    auto field = [](const Json& o, const char* name, int64_t fallback) {
      const Json& v = o.value("spec", Json::object()).value(name, Json(fallback));
      return v.is_number_integer() ? v.get<int64_t>() : fallback;
    };
    return {{"spec.minReplicas", field(r.old_object, "minReplicas", 1), field(r.object, "minReplicas", 1)},
            {"spec.maxReplicas", field(r.old_object, "maxReplicas", 0), field(r.object, "maxReplicas", 0)}};
  }
  auto before = replicas(r.old_object, s.kind());
  auto after = replicas(r.object, s.kind());
  if (!before || !after || !replicas_pointer(s.kind())) return {};
  return {{field_path(*replicas_pointer(s.kind())), *before, *after}};
}

// The pod template without what a scale-up may change, to tell "only added capacity" apart.
Json template_of(const Json& object, WorkloadKind kind) {
  auto pointer = pod_spec_pointer(kind);
  const Json* found = pointer ? json_at(object, *pointer) : nullptr;
  return found ? *found : Json(nullptr);
}

bool only_adds_capacity(Subject& s, const std::vector<ReplicaChange>& changes) {
  if (changes.empty()) return false;
  bool grew = false;
  for (const auto& c : changes) {
    if (c.after < c.before) return false;
    grew = grew || c.after > c.before;
  }
  if (!grew) return false;
  if (s.is_scale()) return true;
  const AdmissionRequest& r = s.request();
  if (s.kind() == WorkloadKind::HorizontalPodAutoscaler) {
    Json before = r.old_object.value("spec", Json::object()), after = r.object.value("spec", Json::object());
    for (const char* f : {"minReplicas", "maxReplicas"}) {
      before.erase(f);
      after.erase(f);
    }
    return before == after;
  }
  return template_of(r.old_object, s.kind()) == template_of(r.object, s.kind());
}

// --- scale-down ---------------------------------------------------------------------------

void check_scale_down(RuleRun& run, const ScaleDownRule& rule, const std::vector<ReplicaChange>& changes) {
  for (const auto& c : changes) {
    if (c.after >= c.before) continue;
    // Nearest allowed replicas under the step limits (HPA semantics: a Percent policy keeps
    // ceil(current x (1 - p/100)), a Pods policy keeps current - n).
    std::optional<int64_t> step_floor;
    auto consider = [&](int64_t keep) {
      if (!step_floor) step_floor = keep;
      else step_floor = rule.select_max ? std::min(*step_floor, keep) : std::max(*step_floor, keep);
    };
    if (rule.max_step_percent) {
      consider(static_cast<int64_t>(std::ceil(static_cast<double>(c.before) * (100 - *rule.max_step_percent) / 100.0 - 1e-9)));
    }
    if (rule.max_step_pods) consider(std::max<int64_t>(0, c.before - *rule.max_step_pods));
    int64_t nearest = step_floor.value_or(0);
    if (rule.floor) nearest = std::max(nearest, *rule.floor);
    nearest = std::min(nearest, c.before);  // never ask for more than there is

    if (rule.floor && c.after < *rule.floor) {
      run.violation("automation", "BelowFloor",
                    "scaling " + c.field + " from " + std::to_string(c.before) + " to " + std::to_string(c.after) +
                        " goes below the floor of " + std::to_string(*rule.floor) +
                        " for automation; minAllowedReplicas=" + std::to_string(nearest),
                    c.field);
    } else if (step_floor && c.after < *step_floor) {
      std::string limits;
      if (rule.max_step_percent) limits += "percent=" + std::to_string(*rule.max_step_percent);
      if (rule.max_step_pods) limits += std::string(limits.empty() ? "" : ", ") + "pods=" + std::to_string(*rule.max_step_pods);
      run.violation("automation", "ScaleDownStepExceeded",
                    "scaling " + c.field + " from " + std::to_string(c.before) + " to " + std::to_string(c.after) +
                        " removes " + std::to_string(c.before - c.after) + " in one change (maxStep " + limits +
                        "); minAllowedReplicas=" + std::to_string(nearest),
                    c.field);
    }
  }
}

// --- resource cuts ------------------------------------------------------------------------


const Json* same_container(const std::vector<ContainerRef>& list, const ContainerRef& wanted) {
  for (const auto& c : list) {
    if (c.name == wanted.name && (c.type == ContainerType::Ephemeral) == (wanted.type == ContainerType::Ephemeral)) {
      return c.node;
    }
  }
  return nullptr;
}

void check_resource_cuts(RuleRun& run, const ResourceCutRule& rule, Subject& s) {
  const AdmissionRequest& r = s.request();
  if (r.operation != Operation::Update || s.is_scale() || !has_pod_template(s.kind())) return;
  const auto before = containers(r.old_object, s.kind());
  const auto after = containers(r.object, s.kind());
  for (const auto& c : after) {
    const Json* old_node = same_container(before, c);
    if (!old_node || c.type == ContainerType::Ephemeral) continue;
    const Json& old_resources = old_node->value("resources", Json::object());
    const Json& new_resources = c.node->value("resources", Json::object());
    for (const char* field : {"requests", "limits"}) {
      for (const auto& name : rule.resources) {
        auto was = resource_quantity(old_resources, field, name);
        if (!was || !(*was > Quantity())) continue;
        const Quantity now = resource_quantity(new_resources, field, name).value_or(Quantity());  // removed = cut to zero
        // now < was x (100 - p)%, exactly: now x 100 < was x (100 - p).
        if (!(now * 100 < *was * (100 - rule.max_percent))) continue;
        const double cut = 100.0 * (1.0 - now.as_double() / was->as_double());
        const double keep = was->as_double() * static_cast<double>(100 - rule.max_percent) / 100.0;
        const Quantity min_allowed = Quantity::rounded_to_step(keep, name);
        const std::string kind = std::string(field) == "requests" ? "request" : "limit";
        const std::string removed = resource_quantity(new_resources, field, name) ? "" : " (removed)";
        run.violation("automation", "ResourceCutTooDeep",
                      std::string(to_string(c.type)) + " " + c.name + ": " + name + " " + kind + " " + was->to_string() +
                          " -> " + now.to_string() + removed + " is a " + format_count(std::round(cut)) +
                          "% cut; maxAllowedCut=" + std::to_string(rule.max_percent) + "% minAllowedValue=" +
                          min_allowed.to_string(),
                      field_path(c.pointer + "/resources/" + field + "/" + escape_pointer_token(name)));
      }
    }
  }
}

// --- freeze windows -----------------------------------------------------------------------

struct ActiveWindow {
  std::string description;
  int64_t seconds_left = 0;
};

std::optional<ActiveWindow> active_window(const FreezeWindow& w, std::chrono::system_clock::time_point now) {
  using namespace std::chrono;
  const date::time_zone* zone = date::locate_zone(w.timezone);
  const auto now_sys = floor<seconds>(now);
  const date::local_seconds local = zone->to_local(now_sys);
  auto seconds_until = [&](date::local_seconds end_local) {
    const auto end_sys = zone->to_sys(end_local, date::choose::latest);
    return duration_cast<seconds>(end_sys - now_sys).count();
  };
  const std::string name = w.name.empty() ? "" : "\"" + w.name + "\" ";
  if (w.from_local) {
    const date::local_seconds from{seconds(*w.from_local)}, to{seconds(*w.to_local)};
    if (local >= from && local < to) {
      return ActiveWindow{"freeze window " + name + "(" + date::format("%F %R", from) + " to " + date::format("%F %R", to) +
                              " " + w.timezone + ")",
                          seconds_until(to)};
    }
    return std::nullopt;
  }
  static const char* kDayNames[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  const auto today = floor<date::days>(local);
  const int length = w.end_minute > w.start_minute ? w.end_minute - w.start_minute : 1440 - w.start_minute + w.end_minute;
  for (int offset : {0, -1}) {  // a window that started yesterday may run past midnight
    const date::local_days day = today + date::days(offset);
    const int weekday = static_cast<int>(date::weekday(day).c_encoding());
    if (std::find(w.days.begin(), w.days.end(), weekday) == w.days.end()) continue;
    const date::local_seconds start = day + minutes(w.start_minute);
    const date::local_seconds end = start + minutes(length);
    if (local >= start && local < end) {
      char clock[32];
      std::snprintf(clock, sizeof clock, "%02d:%02d-%02d:%02d", w.start_minute / 60, w.start_minute % 60,
                    w.end_minute / 60, w.end_minute % 60);
      return ActiveWindow{"freeze window " + name + "(" + kDayNames[weekday] + " " + clock + " " + w.timezone + ")",
                          seconds_until(end)};
    }
  }
  return std::nullopt;
}

// --- protected workloads ------------------------------------------------------------------

bool resources_changed(Subject& s) {
  const AdmissionRequest& r = s.request();
  if (r.operation != Operation::Update || s.is_scale() || !has_pod_template(s.kind())) return false;
  auto collect = [&](const Json& object) {
    Json out = Json::object();
    for (const auto& c : containers(object, s.kind())) out[std::string(to_string(c.type)) + "/" + c.name] = c.node->value("resources", Json::object());
    return out;
  };
  return collect(r.old_object) != collect(r.object);
}

// --- what a change changes ------------------------------------------------------------------

// Whether the change alters anything the automation rules judge: the spec (replicas, the
// pod template, HPA bounds), the labels (protection selectors) or protection annotations.
// One that alters none of them (`kubectl annotate`, `kubectl scale` to the current size)
// passes freeze windows and spends neither budget nor change reason.
bool changes_something(Subject& s, const AutomationRule& rule) {
  const AdmissionRequest& r = s.request();
  if (r.operation != Operation::Update || !r.old_object.is_object() || !r.object.is_object()) return true;
  if (r.old_object.value("spec", Json::object()) != r.object.value("spec", Json::object())) return true;
  if (s.is_scale()) return false;  // a Scale is its spec.replicas
  if (labels_of(r.old_object) != labels_of(r.object)) return true;
  if (rule.protected_workloads) {
    for (const auto& [key, value] : rule.protected_workloads->annotations) {
      if (annotation(r.old_object, key) != annotation(r.object, key)) return true;
    }
  }
  return false;
}

// --- change reasons -------------------------------------------------------------------------

// The reason is read on the workload: the object as it will be, or for a Scale (which has
// no annotations) the scaled object, annotated beforehand with `kubectl annotate`. It
// becomes a claim the webhook redeems once (spend_budgets), so a reason left on the object
// does not justify later changes.
void check_change_reason(RuleRun& run, const std::string& key, const std::string& workload, bool deny_on_error) {
  Subject& s = run.subject;
  const AdmissionRequest& r = s.request();
  const std::string where = s.kind_name() + " " + r.namespace_ + "/" + r.name;
  const Json* source = &r.subject();
  std::string stale;  // why the reason read may be outdated
  if (s.is_scale()) {
    const auto& parent = s.scale_parent();
    if (auto* error = std::get_if<ClusterStateError>(&parent)) {
      // Like a budget, a reason that cannot be checked denies unless onClusterStateError: allow.
      run.state_error("automation", ClusterStateError{"the scaled " + where + " (for its " + key + " annotation): " + error->message},
                      true);
      return;
    }
    source = &std::get<Json>(parent);
    // The apiserver builds the Scale from the stored object, so a different resourceVersion
    // means the parent came from the cluster-state cache and may predate `kubectl annotate`.
    const Json no_version = "";
    const Json* have_at = json_at(*source, "/metadata/resourceVersion");
    const Json* stored_at = json_at(r.old_object, "/metadata/resourceVersion");
    const Json& have = have_at ? *have_at : no_version;
    const Json& stored = stored_at ? *stored_at : no_version;
    if (have != no_version && stored != no_version && have != stored) {
      stale = "; the webhook's copy of " + where + " is older than the object being scaled (cached up to the cluster "
              "cache TTL, 10 s by default): if the annotation was set just now, retry in a few seconds";
    }
  }
  const std::string reason = annotation(*source, key);
  if (reason.empty()) {
    run.violation("automation", "MissingChangeReason",
                  "automation changes need a reason: set the annotation " + key + " on " + where + stale +
                      "; annotation=" + key,
                  "metadata.annotations[" + key + "]");
    return;
  }
  run.decision.audit_fields["changeReason"] = reason;
  // The uid tells a re-created workload of the same name apart.
  const Json* uid_at = json_at(*source, "/metadata/uid");
  const Json uid = uid_at ? *uid_at : Json("");
  run.decision.reason_claims.push_back({run.policy.name, run.mode, workload,
                                        stable_hash_hex((uid.is_string() ? uid.get<std::string>() : "") + "\n" + reason), key,
                                        where, stale, deny_on_error});
}

bool scales_to_zero(const std::vector<ReplicaChange>& changes) {
  return std::any_of(changes.begin(), changes.end(), [](const ReplicaChange& c) {
    return c.after == 0 && c.before > 0 && c.field != "spec.maxReplicas";
  });
}

}  // namespace

bool automation_applies(Subject& s) {
  const Operation op = s.request().operation;
  if (op == Operation::Connect) return false;
  // Changes to an owned object are its controller's (a rollout's ReplicaSets) or reverted
  // by it; the rules judge the owner. Deleting one still deletes its pods: judged.
  if (s.is_scale()) return op == Operation::Update && !s.controller_owned();
  if (!has_pod_template(s.kind()) && s.kind() != WorkloadKind::HorizontalPodAutoscaler) return false;
  return op == Operation::Delete || !s.controller_owned();
}

void run_automation(RuleRun& run, const AutomationRule& rule, const EvaluationOptions& options) {
  Subject& s = run.subject;
  const AdmissionRequest& r = s.request();
  const Policy& policy = run.policy;

  // Break-glass: the annotation on the object as it will be (on DELETE, as it is).
  const std::string glass = annotation(r.subject(), kBreakGlassAnnotation);
  if (!glass.empty()) {
    const bool allowed = policy.break_glass && !matches_identity(rule.actors, r.user_info) &&
                         may_break_glass(*policy.break_glass, r.user_info);
    if (allowed) {
      run.decision.notes.push_back("break-glass by " + r.user_info.username + " (\"" + glass +
                                   "\"): automation rules of policy " + policy.name + " bypassed for this change");
      run.decision.audit_fields["breakGlass"] = r.user_info.username + ": " + glass;
      return;
    }
    run.decision.notes.push_back(std::string(kBreakGlassAnnotation) + " ignored: " + r.user_info.username +
                                 " may not break glass under policy " + policy.name);
    run.decision.audit_fields["breakGlassIgnored"] = r.user_info.username + ": " + glass;
  }
  if (!is_agent(rule.actors, r.user_info)) return;

  const auto changes = replica_changes(s);
  const bool no_op = !changes_something(s, rule);
  if (rule.scale_down) check_scale_down(run, *rule.scale_down, changes);
  if (rule.resource_cuts) check_resource_cuts(run, *rule.resource_cuts, s);

  for (const auto& window : rule.freeze_windows) {
    if (no_op) break;  // e.g. annotating a reason for a scale-up the window allows
    auto active = active_window(window, options.now);
    if (!active) continue;
    if (window.allow_scale_up && only_adds_capacity(s, changes)) continue;
    run.violation("automation", "FreezeWindow",
                  std::string(to_string(r.operation)) + " by automation during " + active->description +
                      (window.allow_scale_up ? " (only scale-ups are allowed)" : "") +
                      "; retryAfterSeconds=" + std::to_string(active->seconds_left),
                  "");
    break;
  }

  if (rule.protected_workloads) {
    const ProtectedRule& prot = *rule.protected_workloads;
    // Judge by the object as it is now, so a change cannot strip its own protection.
    const Json* current = r.old_object.is_null() ? &r.object : &r.old_object;
    std::optional<Json> parent;
    if (s.is_scale()) {
      const auto& p = s.scale_parent();
      if (auto* error = std::get_if<ClusterStateError>(&p)) {
        run.state_error("automation", ClusterStateError{"the scaled " + s.kind_name() + ": " + error->message}, false);
      } else {
        parent = std::get<Json>(p);
        current = &*parent;
      }
    }
    bool is_protected = prot.selector || !prot.annotations.empty();
    if (prot.selector && !prot.selector->matches(labels_of(*current))) is_protected = false;
    for (const auto& [key, value] : prot.annotations) {
      const std::string actual = annotation(*current, key);
      if (actual.empty() || (value != "*" && actual != value)) is_protected = false;
    }
    auto forbids = [&](const char* action) { return std::find(prot.forbid.begin(), prot.forbid.end(), action) != prot.forbid.end(); };
    if (is_protected) {
      const std::string what = s.kind_name() + " " + r.namespace_ + "/" + r.name + " is protected";
      if (r.operation == Operation::Delete && forbids("delete")) {
        run.violation("automation", "ProtectedWorkload", what + ": automation may not delete it; action=delete", "");
      }
      if (forbids("scaleToZero") && scales_to_zero(changes)) {
        run.violation("automation", "ProtectedWorkload",
                      what + ": automation may not scale it to zero; action=scaleToZero minAllowedReplicas=1",
                      changes.front().field);
      }
      if (forbids("resourceChange") && resources_changed(s)) {
        run.violation("automation", "ProtectedWorkload",
                      what + ": automation may not change its resources; action=resourceChange", "");
      }
    }
  }

  const std::string workload = r.namespace_ + "/" + s.kind_name() + "/" + r.name;
  const bool deny_on_error = policy.on_cluster_state_error.value_or(OnStateError::Deny) == OnStateError::Deny;
  if (no_op) return;  // nothing to justify or count
  if (rule.change_reason_annotation) check_change_reason(run, *rule.change_reason_annotation, workload, deny_on_error);
  if (rule.budget_per_workload) {
    run.decision.budget_charges.push_back(
        {policy.name, run.mode, "workload", workload, *rule.budget_per_workload, deny_on_error});
  }
  if (rule.budget_per_actor) {
    run.decision.budget_charges.push_back(
        {policy.name, run.mode, "actor", r.user_info.username, *rule.budget_per_actor, deny_on_error});
  }
}

}  // namespace sizeguard::rules
