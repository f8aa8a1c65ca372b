#include "policies/loader.h"

#include "webhook/manifest.h"

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

std::optional<int64_t> read_count(const Reader& r, const YAML::Node& node, const std::string& path) {
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    int64_t value = -1;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && value >= 0) return value;
  }
  r.error(path, "expected a non-negative integer, got " + describe(node));
  return std::nullopt;
}

std::optional<double> read_positive_number(const Reader& r, const YAML::Node& node, const std::string& path,
                                           bool allow_zero) {
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && std::isfinite(value) &&
        (value > 0 || (allow_zero && value == 0))) {
      return value;
    }
  }
  r.error(path, std::string("expected a ") + (allow_zero ? "non-negative" : "positive") +
                    " number, got " + describe(node));
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
        auto value = read_positive_number(r, entry.second, path + ".maxLimitRequestRatio." + key, false);
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
  } else if (expect_map(r, spec, "spec", {"mode", "onClusterStateError", "match", "exclude", "replicas", "gpu", "resources"})) {
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
    if (!spec["replicas"] && !spec["gpu"] && !spec["resources"]) {
      r.error("spec", "a policy needs at least one rule: replicas, gpu or resources");
    }
  }
  if (r.errors->size() == errors_before) out.policies.push_back(std::move(policy));
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
      read_policy(reader, node, document, out);
    } catch (const YAML::Exception& e) {
      reader.error("", "line " + std::to_string(chunk.first_line + e.mark.line + 1) + ", column " +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
  }
  return out;
}

namespace {

PolicyLoad load_once(const fs::path& path, const fs::path& base) {
  PolicyLoad out;
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
  std::map<std::string, std::string> seen;  // policy name -> where
  size_t hash = 0;
  for (const auto& file : files) {
    std::string error;
    auto text = read_text(file, &error);
    const std::string source = file.filename().string();
    out.files.push_back(source);
    if (!text) {
      out.errors.push_back(error);
      continue;
    }
    hash = hash * 31 + std::hash<std::string>{}(source + '\0' + *text);
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
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%016zx", hash);
  out.fingerprint = std::to_string(files.size()) + ":" + buffer;
  return out;
}

}  // namespace

PolicyLoad load_policies(const fs::path& path) {
  std::error_code ec;
  const fs::path data_link = path / "..data";
  if (!fs::is_directory(path, ec) || !fs::exists(data_link, ec)) return load_once(path, path);
  // A ConfigMap volume: read the files of one ..data generation directly.
  PolicyLoad out;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const fs::path generation = fs::canonical(data_link, ec);
    if (ec) continue;
    out = load_once(path, generation);
    if (fs::canonical(data_link, ec) == generation && !ec) return out;
  }
  return out;
}

}  // namespace sizeguard
