#include "policies/loader.h"

#include "kube/manifest.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <date/tz.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

namespace sizeguard {
namespace {

namespace fs = std::filesystem;

// Where we are while reading one document: "prod.yaml[1]" plus a field path.
struct Reader {
  std::string document;  // "prod.yaml[1]"
  std::vector<std::string>* errors;

  void error(const std::string& path, const std::string& message) const {
    errors->push_back(document + (path.empty() ? "" : " " + path) + ": " + message);
  }
};

std::string describe(const YAML::Node& node) {
  if (!node || node.IsNull()) return "null";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  return "\"" + node.Scalar() + "\"";
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// Reports keys not in `allowed`; returns false when `node` is not a mapping.
bool expect_map(const Reader& r, const YAML::Node& node, const std::string& path,
                const std::vector<std::string>& allowed) {
  if (!node.IsMap()) {
    r.error(path, "expected a mapping, got " + describe(node));
    return false;
  }
  for (const auto& entry : node) {
    const std::string key = entry.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      r.error(path.empty() ? key : path + "." + key,
              "unknown field (expected one of: " + join(allowed) + ")");
    }
  }
  return true;
}

std::optional<std::string> read_string(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar() || node.Scalar().empty()) {
    r.error(path, "expected a non-empty string, got " + describe(node));
    return std::nullopt;
  }
  return node.Scalar();
}

// A plain (unquoted) scalar, or one tagged !!int/!!float: "2" in quotes is a string, as
// for the apiserver, not a number.
bool is_plain_scalar(const YAML::Node& node) {
  return node.IsScalar() && (node.Tag() == "?" || node.Tag() == "tag:yaml.org,2002:int" ||
                             node.Tag() == "tag:yaml.org,2002:float" || node.Tag() == "tag:yaml.org,2002:bool");
}

std::string describe_quoted(const YAML::Node& node) {
  return describe(node) + (node.IsScalar() && !is_plain_scalar(node) ? " (a quoted string)" : "");
}

// A plain true or false (YAML 1.2 core schema spellings).
std::optional<bool> read_plain_bool(const YAML::Node& node) {
  if (!is_plain_scalar(node)) return std::nullopt;
  const std::string& text = node.Scalar();
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

std::optional<int64_t> read_count(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (is_plain_scalar(node)) {
    const std::string& text = node.Scalar();
    int64_t value = -1;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && value >= 0) return value;
  }
  r.error(path, "expected a non-negative integer, got " + describe_quoted(node));
  return std::nullopt;
}

// `quoted_ok`: ratios, which Kubernetes writes as quantities ("2").
std::optional<double> read_positive_number(const Reader& r, const YAML::Node& node, const std::string& path,
                                           bool allow_zero, bool quoted_ok = false) {
  if (quoted_ok ? node.IsScalar() : is_plain_scalar(node)) {
    const std::string& text = node.Scalar();
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && std::isfinite(value) &&
        (value > 0 || (allow_zero && value == 0))) {
      return value;
    }
  }
  r.error(path, std::string("expected a ") + (allow_zero ? "non-negative" : "positive") +
                    " number, got " + describe_quoted(node));
  return std::nullopt;
}

std::vector<std::string> read_string_list(const Reader& r, const YAML::Node& node, const std::string& path) {
  std::vector<std::string> out;
  if (!node.IsSequence()) {
    r.error(path, "expected a list of strings, got " + describe(node));
    return out;
  }
  for (size_t i = 0; i < node.size(); ++i) {
    if (auto s = read_string(r, node[i], path + "[" + std::to_string(i) + "]")) out.push_back(*s);
  }
  return out;
}

std::optional<LabelSelector> read_selector(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (!expect_map(r, node, path, {"matchLabels", "matchExpressions"})) return std::nullopt;
  LabelSelector selector;
  if (auto labels = node["matchLabels"]) {
    if (!labels.IsMap()) {
      r.error(path + ".matchLabels", "expected a mapping of label keys to values, got " + describe(labels));
    } else {
      for (const auto& entry : labels) {
        const std::string key = entry.first.as<std::string>();
        if (auto value = entry.second.IsScalar() ? std::optional(entry.second.Scalar()) : std::nullopt) {
          selector.match_labels[key] = *value;
        } else {
          r.error(path + ".matchLabels." + key, "expected a string, got " + describe(entry.second));
        }
      }
    }
  }
  if (auto expressions = node["matchExpressions"]) {
    if (!expressions.IsSequence()) {
      r.error(path + ".matchExpressions", "expected a list, got " + describe(expressions));
    } else {
      for (size_t i = 0; i < expressions.size(); ++i) {
        const std::string at = path + ".matchExpressions[" + std::to_string(i) + "]";
        const YAML::Node e = expressions[i];
        if (!expect_map(r, e, at, {"key", "operator", "values"})) continue;
        LabelRequirement req;
        auto key = e["key"] ? read_string(r, e["key"], at + ".key") : std::nullopt;
        if (!e["key"]) r.error(at + ".key", "required");
        auto op = e["operator"] ? read_string(r, e["operator"], at + ".operator") : std::nullopt;
        if (!e["operator"]) r.error(at + ".operator", "required (In, NotIn, Exists or DoesNotExist)");
        if (e["values"]) req.values = read_string_list(r, e["values"], at + ".values");
        if (!key || !op) continue;
        req.key = *key;
        if (*op == "In") req.op = LabelRequirement::Operator::In;
        else if (*op == "NotIn") req.op = LabelRequirement::Operator::NotIn;
        else if (*op == "Exists") req.op = LabelRequirement::Operator::Exists;
        else if (*op == "DoesNotExist") req.op = LabelRequirement::Operator::DoesNotExist;
        else {
          r.error(at + ".operator", "expected In, NotIn, Exists or DoesNotExist, got \"" + *op + "\"");
          continue;
        }
        const bool set_based = req.op == LabelRequirement::Operator::In || req.op == LabelRequirement::Operator::NotIn;
        if (set_based && req.values.empty()) r.error(at + ".values", "must be non-empty for operator " + *op);
        if (!set_based && !req.values.empty()) r.error(at + ".values", "must be empty for operator " + *op);
        selector.match_expressions.push_back(std::move(req));
      }
    }
  }
  return selector;
}

const std::vector<std::string> kKnownKinds = {
    "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController",
    "Job", "CronJob", "HorizontalPodAutoscaler"};

MatchCriteria read_match(const Reader& r, const YAML::Node& node, const std::string& path) {
  MatchCriteria m;
  if (!expect_map(r, node, path, {"namespaces", "namespaceSelector", "objectSelector", "kinds", "operations"})) {
    return m;
  }
  if (node["namespaces"]) m.namespaces = read_string_list(r, node["namespaces"], path + ".namespaces");
  if (node["namespaceSelector"]) m.namespace_selector = read_selector(r, node["namespaceSelector"], path + ".namespaceSelector");
  if (node["objectSelector"]) m.object_selector = read_selector(r, node["objectSelector"], path + ".objectSelector");
  if (node["kinds"]) {
    auto kinds = read_string_list(r, node["kinds"], path + ".kinds");
    for (size_t i = 0; i < kinds.size(); ++i) {
      if (std::find(kKnownKinds.begin(), kKnownKinds.end(), kinds[i]) == kKnownKinds.end()) {
        r.error(path + ".kinds[" + std::to_string(i) + "]",
                "expected one of " + join(kKnownKinds) + ", got \"" + kinds[i] + "\"");
      }
    }
    m.kinds = std::move(kinds);
  }
  if (node["operations"]) {
    auto ops = read_string_list(r, node["operations"], path + ".operations");
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i] == "CREATE") m.operations.push_back(Operation::Create);
      else if (ops[i] == "UPDATE") m.operations.push_back(Operation::Update);
      else if (ops[i] == "DELETE") m.operations.push_back(Operation::Delete);
      else r.error(path + ".operations[" + std::to_string(i) + "]", "expected CREATE, UPDATE or DELETE, got \"" + ops[i] + "\"");
    }
  }
  return m;
}

ReplicaRule read_replicas(const Reader& r, const YAML::Node& node, const std::string& path) {
  ReplicaRule rule;
  if (!expect_map(r, node, path, {"min", "max"})) return rule;
  if (node["min"]) rule.min = read_count(r, node["min"], path + ".min");
  if (node["max"]) rule.max = read_count(r, node["max"], path + ".max");
  if (!node["min"] && !node["max"]) r.error(path, "set min, max or both");
  if (rule.min && rule.max && *rule.min > *rule.max) {
    r.error(path, "min (" + std::to_string(*rule.min) + ") is greater than max (" + std::to_string(*rule.max) + ")");
  }
  return rule;
}

GpuRule read_gpu(const Reader& r, const YAML::Node& node, const std::string& path) {
  GpuRule rule;
  if (!expect_map(r, node, path, {"resources", "maxPerContainer", "maxPerPod", "maxPerWorkload", "namespaceTotal"})) {
    return rule;
  }
  if (auto resources = node["resources"]) {
    if (!resources.IsSequence() || resources.size() == 0) {
      r.error(path + ".resources", "expected a non-empty list of {name, weight}, got " + describe(resources));
    } else {
      for (size_t i = 0; i < resources.size(); ++i) {
        const std::string at = path + ".resources[" + std::to_string(i) + "]";
        if (!expect_map(r, resources[i], at, {"name", "weight"})) continue;
        GpuResource res;
        if (!resources[i]["name"]) {
          r.error(at + ".name", "required (an extended resource such as nvidia.com/gpu)");
          continue;
        }
        if (auto name = read_string(r, resources[i]["name"], at + ".name")) res.name = *name;
        if (resources[i]["weight"]) {
          if (auto w = read_positive_number(r, resources[i]["weight"], at + ".weight", false)) res.weight = *w;
        }
        rule.resources.push_back(std::move(res));
      }
    }
  } else {
    rule.resources.push_back({"nvidia.com/gpu", 1.0});
  }
  auto limit = [&](const char* key, std::optional<double>& out) {
    if (node[key]) out = read_positive_number(r, node[key], path + "." + key, true);
  };
  limit("maxPerContainer", rule.max_per_container);
  limit("maxPerPod", rule.max_per_pod);
  limit("maxPerWorkload", rule.max_per_workload);
  limit("namespaceTotal", rule.namespace_total);
  if (!node["maxPerContainer"] && !node["maxPerPod"] && !node["maxPerWorkload"] && !node["namespaceTotal"]) {
    r.error(path, "set at least one of maxPerContainer, maxPerPod, maxPerWorkload, namespaceTotal");
  }
  return rule;
}

std::map<std::string, Quantity> read_quantities(const Reader& r, const YAML::Node& node, const std::string& path) {
  std::map<std::string, Quantity> out;
  if (!node.IsMap()) {
    r.error(path, "expected a mapping of resource names to quantities, got " + describe(node));
    return out;
  }
  for (const auto& entry : node) {
    const std::string key = entry.first.as<std::string>();
    std::string error;
    auto q = entry.second.IsScalar() ? Quantity::parse(entry.second.Scalar(), &error) : std::nullopt;
    if (!q || q->is_negative()) {
      r.error(path + "." + key, "expected a non-negative quantity such as 500m or 1Gi, got " + describe(entry.second));
      continue;
    }
    out[key] = *q;
  }
  return out;
}

ResourceRule read_resources(const Reader& r, const YAML::Node& node, const std::string& path) {
  ResourceRule rule;
  if (!expect_map(r, node, path, {"required", "maxLimitRequestRatio", "min", "max"})) return rule;
  if (auto required = node["required"]) {
    if (expect_map(r, required, path + ".required", {"requests", "limits"})) {
      if (required["requests"]) rule.required_requests = read_string_list(r, required["requests"], path + ".required.requests");
      if (required["limits"]) rule.required_limits = read_string_list(r, required["limits"], path + ".required.limits");
    }
  }
  if (auto ratio = node["maxLimitRequestRatio"]) {
    if (!ratio.IsMap()) {
      r.error(path + ".maxLimitRequestRatio", "expected a mapping of resource names to ratios, got " + describe(ratio));
    } else {
      for (const auto& entry : ratio) {
        const std::string key = entry.first.as<std::string>();
        auto value = read_positive_number(r, entry.second, path + ".maxLimitRequestRatio." + key, false, true);
        if (value && *value < 1) {
          r.error(path + ".maxLimitRequestRatio." + key, "expected a ratio of at least 1, got " + describe(entry.second));
        } else if (value) {
          rule.max_limit_request_ratio[key] = *value;
        }
      }
    }
  }
  if (node["min"]) rule.min = read_quantities(r, node["min"], path + ".min");
  if (node["max"]) rule.max = read_quantities(r, node["max"], path + ".max");
  for (const auto& [name, minimum] : rule.min) {
    auto it = rule.max.find(name);
    if (it != rule.max.end() && minimum > it->second) {
      r.error(path + ".min." + name, "is greater than max." + name + " (" + minimum.to_string() + " > " + it->second.to_string() + ")");
    }
  }
  return rule;
}

// "90s", "30m", "1h", "2d" -> seconds.
std::optional<int64_t> read_duration(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    const std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
    const int64_t scale = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
    if (ec == std::errc() && scale > 0 && value > 0) return value * scale;
  }
  r.error(path, "expected a positive duration such as 90s, 30m, 1h or 1d, got " + describe(node));
  return std::nullopt;
}

// "HH:MM" -> minutes after midnight; "24:00" only when `allow_end_of_day`.
std::optional<int> read_clock(const Reader& r, const YAML::Node& node, const std::string& path, bool allow_end_of_day) {
  if (node.IsScalar()) {
    const std::string& t = node.Scalar();
    if (t.size() == 5 && t[2] == ':' && std::isdigit(static_cast<unsigned char>(t[0])) &&
        std::isdigit(static_cast<unsigned char>(t[1])) && std::isdigit(static_cast<unsigned char>(t[3])) &&
        std::isdigit(static_cast<unsigned char>(t[4]))) {
      const int hours = (t[0] - '0') * 10 + (t[1] - '0');
      const int minutes = (t[3] - '0') * 10 + (t[4] - '0');
      if ((hours < 24 && minutes < 60) || (allow_end_of_day && hours == 24 && minutes == 0)) return hours * 60 + minutes;
    }
  }
  r.error(path, std::string("expected a local time HH:MM") + (allow_end_of_day ? " (24:00 for end of day)" : "") +
                    ", got " + describe(node));
  return std::nullopt;
}

// "2026-12-20T08:00" or "2026-12-20T08:00:00" (local, no offset) -> local seconds.
std::optional<int64_t> read_local_datetime(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (node.IsScalar()) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
    char tail = 0;
    const std::string& t = node.Scalar();
    const int n = std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &sec, &tail);
    const int n_short = n >= 5 ? n : std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d%c", &y, &mo, &d, &h, &mi, &tail);
    const bool shape = (n == 6) || (n < 6 && n_short == 5);
    const date::year_month_day ymd{date::year(y) / date::month(static_cast<unsigned>(mo)) / date::day(static_cast<unsigned>(d))};
    if (shape && ymd.ok() && h < 24 && mi < 60 && sec < 60) {
      const auto local = date::local_days(ymd) + std::chrono::hours(h) + std::chrono::minutes(mi) + std::chrono::seconds(sec);
      return local.time_since_epoch().count();
    }
  }
  r.error(path, "expected a local date-time such as 2026-12-20T08:00 (no offset: the window's timezone applies), got " +
                    describe(node));
  return std::nullopt;
}

std::optional<int> day_of_week(std::string name) {
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const char* kDays[] = {"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"};
  for (int i = 0; i < 7; ++i) {
    if (name == kDays[i] || (name.size() == 3 && std::string(kDays[i]).substr(0, 3) == name)) return i;
  }
  return std::nullopt;
}

FreezeWindow read_freeze_window(const Reader& r, const YAML::Node& node, const std::string& path) {
  FreezeWindow w;
  if (!expect_map(r, node, path, {"name", "timezone", "days", "start", "end", "from", "to", "allowScaleUp"})) return w;
  if (node["name"]) w.name = read_string(r, node["name"], path + ".name").value_or("");
  if (!node["timezone"]) {
    r.error(path + ".timezone", "required (an IANA name such as Europe/Berlin or UTC)");
  } else if (auto tz = read_string(r, node["timezone"], path + ".timezone")) {
    try {
      date::locate_zone(*tz);
      w.timezone = *tz;
    } catch (const std::exception&) {
      r.error(path + ".timezone", "unknown IANA timezone \"" + *tz + "\"");
    }
  }
  const bool weekly = node["days"] || node["start"] || node["end"];
  const bool one_off = node["from"] || node["to"];
  if (weekly == one_off) {
    r.error(path, "give either days/start/end (weekly) or from/to (one-off)");
    return w;
  }
  if (weekly) {
    if (!node["days"] || !node["start"] || !node["end"]) {
      r.error(path, "a weekly window needs days, start and end");
      return w;
    }
    const auto days = read_string_list(r, node["days"], path + ".days");
    for (size_t i = 0; i < days.size(); ++i) {
      if (auto day = day_of_week(days[i])) w.days.push_back(*day);
      else r.error(path + ".days[" + std::to_string(i) + "]", "expected a day such as Mon or Saturday, got \"" + days[i] + "\"");
    }
    if (auto start = read_clock(r, node["start"], path + ".start", false)) w.start_minute = *start;
    if (auto end = read_clock(r, node["end"], path + ".end", true)) w.end_minute = *end;
  } else {
    if (!node["from"] || !node["to"]) {
      r.error(path, "a one-off window needs from and to");
      return w;
    }
    w.from_local = read_local_datetime(r, node["from"], path + ".from");
    w.to_local = read_local_datetime(r, node["to"], path + ".to");
    if (w.from_local && w.to_local && *w.from_local >= *w.to_local) r.error(path + ".to", "must be after from");
  }
  if (node["allowScaleUp"]) {
    if (auto allow = read_plain_bool(node["allowScaleUp"])) {
      w.allow_scale_up = *allow;
    } else {
      r.error(path + ".allowScaleUp", "expected true or false, got " + describe_quoted(node["allowScaleUp"]));
    }
  }
  return w;
}

std::optional<BudgetLimit> read_budget(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (!expect_map(r, node, path, {"changes", "window"})) return std::nullopt;
  if (!node["changes"] || !node["window"]) {
    r.error(path, "needs changes and window (e.g. {changes: 5, window: 1h})");
    return std::nullopt;
  }
  auto changes = read_count(r, node["changes"], path + ".changes");
  auto window = read_duration(r, node["window"], path + ".window");
  if (!changes || !window) return std::nullopt;
  return BudgetLimit{*changes, *window};
}

AutomationRule read_automation(const Reader& r, const YAML::Node& node, const std::string& path) {
  AutomationRule rule;
  if (!expect_map(r, node, path, {"actors", "scaleDown", "resourceCuts", "freezeWindows", "protected", "changeBudget",
                                  "requireChangeReason"})) {
    return rule;
  }
  const YAML::Node actors = node["actors"];
  if (!actors) {
    r.error(path + ".actors", "required: the service accounts, usernames or groups these rules restrict");
  } else if (expect_map(r, actors, path + ".actors", {"serviceAccounts", "usernames", "groups"})) {
    if (actors["serviceAccounts"]) {
      rule.actors.service_accounts = read_string_list(r, actors["serviceAccounts"], path + ".actors.serviceAccounts");
      for (size_t i = 0; i < rule.actors.service_accounts.size(); ++i) {
        if (rule.actors.service_accounts[i].find(':') == std::string::npos) {
          r.error(path + ".actors.serviceAccounts[" + std::to_string(i) + "]",
                  "expected namespace:name (globs allowed), got \"" + rule.actors.service_accounts[i] + "\"");
        }
      }
    }
    if (actors["usernames"]) rule.actors.usernames = read_string_list(r, actors["usernames"], path + ".actors.usernames");
    if (actors["groups"]) rule.actors.groups = read_string_list(r, actors["groups"], path + ".actors.groups");
    if (rule.actors.service_accounts.empty() && rule.actors.usernames.empty() && rule.actors.groups.empty()) {
      r.error(path + ".actors", "name at least one service account, username or group");
    }
  }
  if (const YAML::Node sd = node["scaleDown"]) {
    const std::string at = path + ".scaleDown";
    if (expect_map(r, sd, at, {"maxStep", "selectPolicy", "floor"})) {
      ScaleDownRule rule_sd;
      if (const YAML::Node step = sd["maxStep"]) {
        if (expect_map(r, step, at + ".maxStep", {"percent", "pods"})) {
          if (step["percent"]) {
            rule_sd.max_step_percent = read_count(r, step["percent"], at + ".maxStep.percent");
            if (rule_sd.max_step_percent && *rule_sd.max_step_percent > 100) {
              r.error(at + ".maxStep.percent", "expected 0..100, got \"" + step["percent"].Scalar() + "\"");
            }
          }
          if (step["pods"]) rule_sd.max_step_pods = read_count(r, step["pods"], at + ".maxStep.pods");
          if (!step["percent"] && !step["pods"]) r.error(at + ".maxStep", "set percent, pods or both");
        }
      }
      if (sd["selectPolicy"]) {
        auto policy = read_string(r, sd["selectPolicy"], at + ".selectPolicy");
        if (policy && (*policy == "Min" || *policy == "Max")) rule_sd.select_max = *policy == "Max";
        else if (policy) r.error(at + ".selectPolicy", "expected Min or Max, got \"" + *policy + "\"");
      }
      if (sd["floor"]) rule_sd.floor = read_count(r, sd["floor"], at + ".floor");
      if (!sd["maxStep"] && !sd["floor"]) r.error(at, "set maxStep, floor or both");
      rule.scale_down = rule_sd;
    }
  }
  if (const YAML::Node cuts = node["resourceCuts"]) {
    const std::string at = path + ".resourceCuts";
    if (expect_map(r, cuts, at, {"maxPercent", "resources"})) {
      ResourceCutRule rc;
      if (!cuts["maxPercent"]) r.error(at + ".maxPercent", "required (0..100)");
      else if (auto p = read_count(r, cuts["maxPercent"], at + ".maxPercent")) {
        if (*p > 100) r.error(at + ".maxPercent", "expected 0..100, got \"" + cuts["maxPercent"].Scalar() + "\"");
        rc.max_percent = *p;
      }
      if (cuts["resources"]) rc.resources = read_string_list(r, cuts["resources"], at + ".resources");
      rule.resource_cuts = rc;
    }
  }
  if (const YAML::Node windows = node["freezeWindows"]) {
    if (!windows.IsSequence()) {
      r.error(path + ".freezeWindows", "expected a list, got " + describe(windows));
    } else {
      for (size_t i = 0; i < windows.size(); ++i) {
        rule.freeze_windows.push_back(read_freeze_window(r, windows[i], path + ".freezeWindows[" + std::to_string(i) + "]"));
      }
    }
  }
  if (const YAML::Node prot = node["protected"]) {
    const std::string at = path + ".protected";
    if (expect_map(r, prot, at, {"selector", "annotations", "forbid"})) {
      ProtectedRule pr;
      if (prot["selector"]) pr.selector = read_selector(r, prot["selector"], at + ".selector");
      if (const YAML::Node ann = prot["annotations"]) {
        if (!ann.IsMap()) r.error(at + ".annotations", "expected a mapping of annotation keys to values (\"*\" for any), got " + describe(ann));
        else for (const auto& e : ann) pr.annotations[e.first.as<std::string>()] = e.second.IsScalar() ? e.second.Scalar() : "";
      }
      if (!prot["selector"] && !prot["annotations"]) r.error(at, "set selector, annotations or both");
      if (prot["forbid"]) {
        pr.forbid = read_string_list(r, prot["forbid"], at + ".forbid");
        for (size_t i = 0; i < pr.forbid.size(); ++i) {
          const auto& f = pr.forbid[i];
          if (f != "delete" && f != "scaleToZero" && f != "resourceChange") {
            r.error(at + ".forbid[" + std::to_string(i) + "]", "expected delete, scaleToZero or resourceChange, got \"" + f + "\"");
          }
        }
      }
      rule.protected_workloads = pr;
    }
  }
  if (const YAML::Node budget = node["changeBudget"]) {
    const std::string at = path + ".changeBudget";
    if (expect_map(r, budget, at, {"perWorkload", "perActor"})) {
      if (budget["perWorkload"]) rule.budget_per_workload = read_budget(r, budget["perWorkload"], at + ".perWorkload");
      if (budget["perActor"]) rule.budget_per_actor = read_budget(r, budget["perActor"], at + ".perActor");
      if (!budget["perWorkload"] && !budget["perActor"]) r.error(at, "set perWorkload, perActor or both");
    }
  }
  if (const YAML::Node reason = node["requireChangeReason"]) {
    const std::string at = path + ".requireChangeReason";
    if (auto required = read_plain_bool(reason)) {
      if (*required) rule.change_reason_annotation = "sizeguard.io/change-reason";
    } else if (!reason.IsMap()) {
      r.error(at, "expected true, false or a mapping with annotation, got " + describe_quoted(reason));
    } else if (expect_map(r, reason, at, {"annotation"})) {
      if (reason["annotation"]) rule.change_reason_annotation = read_string(r, reason["annotation"], at + ".annotation");
      else r.error(at + ".annotation", "required");
    }
  }
  return rule;
}

BreakGlass read_break_glass(const Reader& r, const YAML::Node& node, const std::string& path) {
  BreakGlass bg;
  if (!expect_map(r, node, path, {"allowed"})) return bg;
  const YAML::Node allowed = node["allowed"];
  if (!allowed) {
    r.error(path + ".allowed", "required: the users and groups who may break glass");
    return bg;
  }
  if (!expect_map(r, allowed, path + ".allowed", {"users", "groups"})) return bg;
  if (allowed["users"]) bg.users = read_string_list(r, allowed["users"], path + ".allowed.users");
  if (allowed["groups"]) bg.groups = read_string_list(r, allowed["groups"], path + ".allowed.groups");
  if (bg.users.empty() && bg.groups.empty()) r.error(path + ".allowed", "name at least one user or group");
  return bg;
}

LimitRule read_limit_rule(const Reader& r, const YAML::Node& node, const std::string& path) {
  LimitRule rule;
  if (node.IsScalar()) {
    const std::string& t = node.Scalar();
    if (t == "keepRatio") rule.strategy = LimitStrategy::KeepRatio;
    else if (t == "equalToRequest") rule.strategy = LimitStrategy::EqualToRequest;
    else if (t == "none") rule.strategy = LimitStrategy::None;
    else if (t == "unchanged") rule.strategy = LimitStrategy::Unchanged;
    else r.error(path, "expected keepRatio, equalToRequest, none, unchanged or {ratio: N}, got \"" + t + "\"");
    return rule;
  }
  if (expect_map(r, node, path, {"ratio"})) {
    rule.strategy = LimitStrategy::Ratio;
    if (!node["ratio"]) r.error(path + ".ratio", "required");
    else if (auto ratio = read_positive_number(r, node["ratio"], path + ".ratio", false)) {
      if (*ratio < 1) r.error(path + ".ratio", "expected a ratio of at least 1 (a limit is never below the request)");
      rule.ratio = *ratio;
    }
  }
  return rule;
}

RightsizingRule read_rightsizing(const Reader& r, const YAML::Node& node, const std::string& path) {
  RightsizingRule rule;
  if (!expect_map(r, node, path, {"mode", "target", "minChangePercent", "maxIncreasePercent", "maxDecreasePercent",
                                  "min", "max", "limits", "containers", "coldStart"})) {
    return rule;
  }
  if (node["mode"]) {
    auto text = read_string(r, node["mode"], path + ".mode");
    if (text) {
      rule.mode = mode_from(*text);
      if (!rule.mode) r.error(path + ".mode", "expected enforce, warn or audit, got \"" + *text + "\"");
    }
  }
  if (node["target"]) {
    auto text = read_string(r, node["target"], path + ".target");
    if (text && *text == "pods") rule.target = RightsizingRule::Target::Pods;
    else if (text && *text == "templates") rule.target = RightsizingRule::Target::Templates;
    else if (text && *text == "both") rule.target = RightsizingRule::Target::Both;
    else if (text) r.error(path + ".target", "expected pods, templates or both, got \"" + *text + "\"");
  }
  if (node["minChangePercent"]) rule.min_change_percent = read_count(r, node["minChangePercent"], path + ".minChangePercent").value_or(10);
  if (node["maxIncreasePercent"]) rule.max_increase_percent = read_count(r, node["maxIncreasePercent"], path + ".maxIncreasePercent");
  if (node["maxDecreasePercent"]) {
    rule.max_decrease_percent = read_count(r, node["maxDecreasePercent"], path + ".maxDecreasePercent");
    if (rule.max_decrease_percent && *rule.max_decrease_percent > 100) {
      r.error(path + ".maxDecreasePercent", "expected 0..100, got \"" + node["maxDecreasePercent"].Scalar() + "\"");
    }
  }
  for (const char* bound : {"min", "max"}) {
    if (!node[bound]) continue;
    auto values = read_quantities(r, node[bound], path + "." + bound);
    for (const auto& [name, q] : values) {
      if (name != "cpu" && name != "memory") {
        r.error(path + "." + bound + "." + name, "right-sizing sets cpu and memory only (extended resources are never touched)");
      }
    }
    (std::string(bound) == "min" ? rule.min : rule.max) = std::move(values);
  }
  if (const YAML::Node limits = node["limits"]) {
    if (expect_map(r, limits, path + ".limits", {"cpu", "memory"})) {
      if (limits["cpu"]) rule.cpu_limit = read_limit_rule(r, limits["cpu"], path + ".limits.cpu");
      if (limits["memory"]) rule.memory_limit = read_limit_rule(r, limits["memory"], path + ".limits.memory");
    }
  }
  if (const YAML::Node containers = node["containers"]) {
    if (expect_map(r, containers, path + ".containers", {"include", "exclude"})) {
      if (containers["include"]) rule.include_containers = read_string_list(r, containers["include"], path + ".containers.include");
      if (containers["exclude"]) rule.exclude_containers = read_string_list(r, containers["exclude"], path + ".containers.exclude");
    }
  }
  if (const YAML::Node cold = node["coldStart"]) {
    if (expect_map(r, cold, path + ".coldStart", {"accelerators"}) && cold["accelerators"]) {
      const YAML::Node a = cold["accelerators"];
      if (a.IsScalar() && (a.Scalar() == "true" || a.Scalar() == "false")) rule.cold_start_accelerators = a.Scalar() == "true";
      else r.error(path + ".coldStart.accelerators", "expected true or false, got " + describe(a));
    }
  }
  return rule;
}

bool valid_policy_name(const std::string& name) {
  // A DNS-1123 subdomain, as Kubernetes object names.
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return std::isalnum(static_cast<unsigned char>(name.front())) && std::isalnum(static_cast<unsigned char>(name.back()));
}

void read_policy(const Reader& r, const YAML::Node& doc, const std::string& source, PolicyLoad& out) {
  if (!expect_map(r, doc, "", {"apiVersion", "kind", "metadata", "spec"})) return;
  const size_t errors_before = r.errors->size();
  if (!doc["apiVersion"] || !doc["apiVersion"].IsScalar() || doc["apiVersion"].Scalar() != "sizeguard.io/v1") {
    r.error("apiVersion", "expected \"sizeguard.io/v1\", got " + describe(doc["apiVersion"]));
  }
  if (!doc["kind"] || !doc["kind"].IsScalar() || doc["kind"].Scalar() != "Policy") {
    r.error("kind", "expected \"Policy\", got " + describe(doc["kind"]));
  }
  Policy policy;
  policy.source = source;
  const YAML::Node metadata = doc["metadata"];
  if (!metadata) {
    r.error("metadata.name", "required");
  } else if (expect_map(r, metadata, "metadata", {"name", "namespace", "labels", "annotations"})) {
    if (!metadata["name"]) {
      r.error("metadata.name", "required");
    } else if (auto name = read_string(r, metadata["name"], "metadata.name")) {
      if (!valid_policy_name(*name)) {
        r.error("metadata.name", "expected a lowercase DNS name (a-z, 0-9, '-', '.'), got \"" + *name + "\"");
      }
      policy.name = *name;
    }
  }
  const YAML::Node spec = doc["spec"];
  if (!spec) {
    r.error("spec", "required");
  } else if (expect_map(r, spec, "spec", {"mode", "onClusterStateError", "match", "exclude", "replicas", "gpu", "resources",
                                          "automation", "breakGlass", "rightsizing"})) {
    if (spec["mode"]) {
      auto text = read_string(r, spec["mode"], "spec.mode");
      if (text) {
        policy.mode = mode_from(*text);
        if (!policy.mode) r.error("spec.mode", "expected enforce, warn or audit, got \"" + *text + "\"");
      }
    }
    if (spec["onClusterStateError"]) {
      auto text = read_string(r, spec["onClusterStateError"], "spec.onClusterStateError");
      if (text && *text == "allow") policy.on_cluster_state_error = OnStateError::Allow;
      else if (text && *text == "deny") policy.on_cluster_state_error = OnStateError::Deny;
      else if (text) r.error("spec.onClusterStateError", "expected allow or deny, got \"" + *text + "\"");
    }
    if (spec["match"]) policy.match = read_match(r, spec["match"], "spec.match");
    if (spec["exclude"]) policy.exclude = read_match(r, spec["exclude"], "spec.exclude");
    if (spec["replicas"]) policy.replicas = read_replicas(r, spec["replicas"], "spec.replicas");
    if (spec["gpu"]) policy.gpu = read_gpu(r, spec["gpu"], "spec.gpu");
    if (spec["resources"]) policy.resources = read_resources(r, spec["resources"], "spec.resources");
    if (spec["automation"]) policy.automation = read_automation(r, spec["automation"], "spec.automation");
    if (spec["breakGlass"]) policy.break_glass = read_break_glass(r, spec["breakGlass"], "spec.breakGlass");
    if (spec["rightsizing"]) policy.rightsizing = read_rightsizing(r, spec["rightsizing"], "spec.rightsizing");
    if (!spec["replicas"] && !spec["gpu"] && !spec["resources"] && !spec["automation"] && !spec["rightsizing"]) {
      r.error("spec", "a policy needs at least one rule: replicas, gpu, resources, automation or rightsizing");
    }
  }
  if (r.errors->size() == errors_before) out.policies.push_back(std::move(policy));
}

std::string where(int first_line, const YAML::Mark& mark) {
  return "line " + std::to_string(first_line + mark.line + 1) + ", column " + std::to_string(mark.column + 1);
}

// Before reading a document: every mapping key must be a scalar and appear once. yaml-cpp
// keeps both entries of a repeated key and node["key"] finds the first, while the
// apiserver's decoder and YAML tools take the last, so "mode: warn" then "mode: enforce"
// would lint fine and run as warn. Nodes reached again through an alias are not walked
// again. Returns whether the document passed.
bool check_keys(const Reader& r, const YAML::Node& node, const std::string& path, int first_line,
                std::set<std::pair<int, int>>& walked) {
  if (!node.IsMap() && !node.IsSequence()) return true;
  const YAML::Mark mark = node.Mark();
  if (!walked.insert({mark.pos, static_cast<int>(node.Type())}).second) return true;
  bool ok = true;
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) {
      ok = check_keys(r, node[i], path + "[" + std::to_string(i) + "]", first_line, walked) && ok;
    }
    return ok;
  }
  std::map<std::string, YAML::Mark> keys;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    if (!key.IsScalar()) {
      r.error(path, where(first_line, key.Mark()) + ": a mapping key must be a string, got " + describe(key));
      ok = false;
      continue;
    }
    const std::string at = path.empty() ? key.Scalar() : path + "." + key.Scalar();
    auto [first, inserted] = keys.emplace(key.Scalar(), key.Mark());
    if (!inserted) {
      r.error(at, "duplicate key at " + where(first_line, key.Mark()) + " (first at " +
                      where(first_line, first->second) + ")");
      ok = false;
    }
    ok = check_keys(r, entry.second, at, first_line, walked) && ok;
  }
  return ok;
}

std::optional<std::string> read_text(const fs::path& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path.string() + ": cannot read: " + std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool is_policy_file(const fs::path& path) {
  const std::string name = path.filename().string();
  if (name.empty() || name[0] == '.') return false;
  const std::string ext = path.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

}  // namespace

std::string_view to_string(Mode mode) {
  switch (mode) {
    case Mode::Enforce: return "enforce";
    case Mode::Warn: return "warn";
    case Mode::Audit: return "audit";
  }
  return "enforce";
}

std::optional<Mode> mode_from(std::string_view text) {
  if (text == "enforce") return Mode::Enforce;
  if (text == "warn") return Mode::Warn;
  if (text == "audit") return Mode::Audit;
  return std::nullopt;
}

PolicyLoad parse_policies(std::string_view text, const std::string& source) {
  PolicyLoad out;
  int index = 0;
  for (const YamlChunk& chunk : split_yaml_documents(text)) {
    const std::string document = source + "[" + std::to_string(index++) + "]";
    Reader reader{document, &out.errors};
    try {
      const YAML::Node node = YAML::Load(chunk.text);
      if (!node || node.IsNull()) continue;  // empty or comment-only document
      std::set<std::pair<int, int>> walked;
      if (check_keys(reader, node, "", chunk.first_line, walked)) read_policy(reader, node, document, out);
    } catch (const YAML::DeepRecursion& e) {
      reader.error("", "line " + std::to_string(chunk.first_line + e.mark.line + 1) + ", column " +
                           std::to_string(e.mark.column + 1) + ": nested more than " + std::to_string(e.depth()) +
                           " levels deep");
    } catch (const YAML::Exception& e) {
      reader.error("", "line " + std::to_string(chunk.first_line + e.mark.line + 1) + ", column " +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
  }
  return out;
}

namespace {

PolicyFiles read_once(const fs::path& path, const fs::path& base) {
  PolicyFiles out;
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(base, ec)) {
    for (const auto& entry : fs::directory_iterator(base, ec)) {
      if (is_policy_file(entry.path()) && fs::is_regular_file(entry.path(), ec)) files.push_back(entry.path());
    }
    if (ec) out.errors.push_back(path.string() + ": cannot list: " + ec.message());
    std::sort(files.begin(), files.end());
  } else if (fs::exists(base, ec)) {
    files.push_back(base);
  } else {
    out.errors.push_back(path.string() + ": no such file or directory");
  }
  size_t hash = 0;
  for (const auto& file : files) {
    std::string error;
    auto text = read_text(file, &error);
    const std::string source = file.filename().string();
    if (!text) {
      out.files.push_back({source, std::nullopt});
      out.errors.push_back(error);
      continue;
    }
    hash = hash * 31 + std::hash<std::string>{}(source + '\0' + *text);
    out.files.push_back({source, std::move(text)});
  }
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%016zx", hash);
  out.fingerprint = std::to_string(files.size()) + ":" + buffer;
  return out;
}

}  // namespace

PolicyFiles read_policy_files(const fs::path& path) {
  std::error_code ec;
  const fs::path data_link = path / "..data";
  if (!fs::is_directory(path, ec) || !fs::exists(data_link, ec)) return read_once(path, path);
  // A ConfigMap volume: read the files of one ..data generation directly.
  PolicyFiles out;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const fs::path generation = fs::canonical(data_link, ec);
    if (ec) continue;
    out = read_once(path, generation);
    if (fs::canonical(data_link, ec) == generation && !ec) return out;
  }
  return out;
}

PolicyLoad parse_policy_files(const PolicyFiles& files) {
  PolicyLoad out;
  out.errors = files.errors;
  out.fingerprint = files.fingerprint;
  std::map<std::string, std::string> seen;  // policy name -> where
  for (const auto& [source, text] : files.files) {
    out.files.push_back(source);
    if (!text) continue;  // its read error is among files.errors
    PolicyLoad one = parse_policies(*text, source);
    out.errors.insert(out.errors.end(), one.errors.begin(), one.errors.end());
    for (auto& policy : one.policies) {
      auto [it, inserted] = seen.emplace(policy.name, policy.source);
      if (!inserted) {
        out.errors.push_back(policy.source + " metadata.name: policy \"" + policy.name + "\" is already defined in " + it->second);
        continue;
      }
      out.policies.push_back(std::move(policy));
    }
  }
  return out;
}

PolicyLoad load_policies(const fs::path& path) { return parse_policy_files(read_policy_files(path)); }

}  // namespace sizeguard
