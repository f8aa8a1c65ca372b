#include "policies/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "webhook/devcerts.h"

namespace sizeguard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char* kValid = R"(
apiVersion: sizeguard.io/v1
kind: Policy
metadata:
  name: floor
spec:
  mode: warn
  onClusterStateError: allow
  match:
    namespaces: ["prod-*", payments]
    namespaceSelector:
      matchLabels: {environment: production}
      matchExpressions:
        - {key: tier, operator: In, values: [web, api]}
        - {key: legacy, operator: DoesNotExist}
    objectSelector:
      matchLabels: {app: web}
    kinds: [Deployment, HorizontalPodAutoscaler]
    operations: [CREATE, UPDATE]
  exclude:
    namespaces: [prod-sandbox]
  replicas: {min: 2, max: 40}
  gpu:
    resources:
      - name: nvidia.com/gpu
      - name: nvidia.com/mig-1g.10gb
        weight: 0.142857
    maxPerContainer: 2
    namespaceTotal: 16
  resources:
    required: {requests: [cpu, memory], limits: [memory]}
    maxLimitRequestRatio: {cpu: 4}
    min: {cpu: 10m}
    max: {memory: 64Gi}
)";

TEST(PolicyLoader, ReadsEveryField) {
  PolicyLoad load = parse_policies(kValid, "prod.yaml");
  ASSERT_TRUE(load.ok()) << load.errors.front();
  ASSERT_EQ(load.policies.size(), 1u);
  const Policy& p = load.policies[0];
  EXPECT_EQ(p.name, "floor");
  EXPECT_EQ(p.source, "prod.yaml[0]");
  EXPECT_EQ(p.mode, Mode::Warn);
  EXPECT_EQ(p.on_cluster_state_error, OnStateError::Allow);
  EXPECT_THAT(p.match.namespaces, ElementsAre("prod-*", "payments"));
  ASSERT_TRUE(p.match.namespace_selector);
  EXPECT_EQ(p.match.namespace_selector->match_labels.at("environment"), "production");
  ASSERT_EQ(p.match.namespace_selector->match_expressions.size(), 2u);
  EXPECT_EQ(p.match.namespace_selector->match_expressions[1].op, LabelRequirement::Operator::DoesNotExist);
  EXPECT_THAT(p.match.kinds, ElementsAre("Deployment", "HorizontalPodAutoscaler"));
  EXPECT_THAT(p.match.operations, ElementsAre(Operation::Create, Operation::Update));
  ASSERT_TRUE(p.exclude);
  EXPECT_THAT(p.exclude->namespaces, ElementsAre("prod-sandbox"));
  ASSERT_TRUE(p.replicas);
  EXPECT_EQ(p.replicas->min, 2);
  EXPECT_EQ(p.replicas->max, 40);
  ASSERT_TRUE(p.gpu);
  ASSERT_EQ(p.gpu->resources.size(), 2u);
  EXPECT_DOUBLE_EQ(p.gpu->resources[0].weight, 1.0);
  EXPECT_DOUBLE_EQ(p.gpu->resources[1].weight, 0.142857);
  EXPECT_EQ(p.gpu->max_per_container, 2.0);
  EXPECT_FALSE(p.gpu->max_per_pod);
  EXPECT_EQ(p.gpu->namespace_total, 16.0);
  ASSERT_TRUE(p.resources);
  EXPECT_THAT(p.resources->required_requests, ElementsAre("cpu", "memory"));
  EXPECT_THAT(p.resources->required_limits, ElementsAre("memory"));
  EXPECT_DOUBLE_EQ(p.resources->max_limit_request_ratio.at("cpu"), 4.0);
  EXPECT_EQ(p.resources->min.at("cpu").to_string(), "10m");
  EXPECT_EQ(p.resources->max.at("memory").to_string(), "64Gi");
}

TEST(PolicyLoader, GpuResourcesDefaultToNvidiaGpu) {
  PolicyLoad load = parse_policies(R"(
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: gpus}
spec:
  gpu: {maxPerPod: 1}
)", "g.yaml");
  ASSERT_TRUE(load.ok()) << load.errors.front();
  ASSERT_EQ(load.policies[0].gpu->resources.size(), 1u);
  EXPECT_EQ(load.policies[0].gpu->resources[0].name, "nvidia.com/gpu");
  EXPECT_EQ(load.policies[0].mode, std::nullopt);  // the global default applies
}

TEST(PolicyLoader, ErrorNamesFileDocumentFieldAndExpectation) {
  PolicyLoad load = parse_policies(R"(
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: first}
spec: {replicas: {min: 1}}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: second}
spec:
  replicas:
    min: two
)", "prod.yaml");
  EXPECT_THAT(load.errors, ElementsAre("prod.yaml[1] spec.replicas.min: expected a non-negative integer, got \"two\""));
  ASSERT_EQ(load.policies.size(), 1u);  // the valid document still parses (lint shows both)
  EXPECT_EQ(load.policies[0].name, "first");
}

struct BadPolicy {
  std::string spec;      // YAML under "spec:" (indented by 2)
  std::string expected;  // the error, after "x.yaml[0] "
};

class PolicyLoaderRejects : public ::testing::TestWithParam<BadPolicy> {};

TEST_P(PolicyLoaderRejects, WithAnExactMessage) {
  const std::string text = "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n" + GetParam().spec;
  PolicyLoad load = parse_policies(text, "x.yaml");
  EXPECT_TRUE(load.policies.empty());
  EXPECT_THAT(load.errors, ::testing::Contains("x.yaml[0] " + GetParam().expected)) << ::testing::PrintToString(load.errors);
}

INSTANTIATE_TEST_SUITE_P(Fields, PolicyLoaderRejects, ::testing::Values(
    BadPolicy{"  replicas: {min: 1}\n  surprise: 1\n",
              "spec.surprise: unknown field (expected one of: mode, onClusterStateError, match, exclude, replicas, gpu, resources, automation, breakGlass, rightsizing)"},
    BadPolicy{"  mode: strict\n  replicas: {min: 1}\n", "spec.mode: expected enforce, warn or audit, got \"strict\""},
    BadPolicy{"  replicas: {min: -1}\n", "spec.replicas.min: expected a non-negative integer, got \"-1\""},
    BadPolicy{"  replicas: {min: 1.5}\n", "spec.replicas.min: expected a non-negative integer, got \"1.5\""},
    BadPolicy{"  replicas: {min: 5, max: 2}\n", "spec.replicas: min (5) is greater than max (2)"},
    BadPolicy{"  replicas: {}\n", "spec.replicas: set min, max or both"},
    BadPolicy{"  replicas: [1]\n", "spec.replicas: expected a mapping, got a list"},
    BadPolicy{"  match: {kinds: [Deploymnet]}\n  replicas: {min: 1}\n",
              "spec.match.kinds[0]: expected one of Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, "
              "ReplicationController, Job, CronJob, HorizontalPodAutoscaler, got \"Deploymnet\""},
    BadPolicy{"  match: {operations: [PATCH]}\n  replicas: {min: 1}\n",
              "spec.match.operations[0]: expected CREATE, UPDATE or DELETE, got \"PATCH\""},
    BadPolicy{"  match: {namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}\n  replicas: {min: 1}\n",
              "spec.match.namespaceSelector.matchExpressions[0].values: must be non-empty for operator In"},
    BadPolicy{"  match: {objectSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}\n  replicas: {min: 1}\n",
              "spec.match.objectSelector.matchExpressions[0].values: must be empty for operator Exists"},
    BadPolicy{"  match: {objectSelector: {matchExpressions: [{key: a, operator: Like, values: [x]}]}}\n  replicas: {min: 1}\n",
              "spec.match.objectSelector.matchExpressions[0].operator: expected In, NotIn, Exists or DoesNotExist, got \"Like\""},
    BadPolicy{"  match: {labels: {a: b}}\n  replicas: {min: 1}\n",
              "spec.match.labels: unknown field (expected one of: namespaces, namespaceSelector, objectSelector, kinds, operations)"},
    BadPolicy{"  gpu: {maxPerPod: -1}\n", "spec.gpu.maxPerPod: expected a non-negative number, got \"-1\""},
    BadPolicy{"  gpu: {resources: [{name: nvidia.com/gpu, weight: 0}], maxPerPod: 1}\n",
              "spec.gpu.resources[0].weight: expected a positive number, got \"0\""},
    BadPolicy{"  gpu: {resources: [{weight: 1}], maxPerPod: 1}\n",
              "spec.gpu.resources[0].name: required (an extended resource such as nvidia.com/gpu)"},
    BadPolicy{"  gpu: {}\n", "spec.gpu: set at least one of maxPerContainer, maxPerPod, maxPerWorkload, namespaceTotal"},
    BadPolicy{"  resources: {min: {cpu: lots}}\n",
              "spec.resources.min.cpu: expected a non-negative quantity such as 500m or 1Gi, got \"lots\""},
    BadPolicy{"  resources: {min: {cpu: '2'}, max: {cpu: 1}}\n", "spec.resources.min.cpu: is greater than max.cpu (2 > 1)"},
    BadPolicy{"  resources: {maxLimitRequestRatio: {cpu: 0.5}}\n",
              "spec.resources.maxLimitRequestRatio.cpu: expected a ratio of at least 1, got \"0.5\""},
    BadPolicy{"  resources: {required: {requests: cpu}}\n",
              "spec.resources.required.requests: expected a list of strings, got \"cpu\""},
    BadPolicy{"  onClusterStateError: ignore\n  replicas: {min: 1}\n",
              "spec.onClusterStateError: expected allow or deny, got \"ignore\""},
    BadPolicy{"  mode: enforce\n", "spec: a policy needs at least one rule: replicas, gpu, resources, automation or rightsizing"},
    // Repeated keys: yaml-cpp would let the first win where the apiserver and YAML tools
    // take the last.
    BadPolicy{"  mode: warn\n  mode: enforce\n  replicas: {min: 1}\n",
              "spec.mode: duplicate key at line 6, column 3 (first at line 5, column 3)"},
    BadPolicy{"  replicas: {min: 1, max: 3, min: 2}\n",
              "spec.replicas.min: duplicate key at line 5, column 30 (first at line 5, column 14)"},
    BadPolicy{"  ? [a]\n  : 1\n  replicas: {min: 1}\n", "spec: line 5, column 5: a mapping key must be a string, got a list"},
    // Quoted numbers and booleans are strings.
    BadPolicy{"  replicas: {min: \"2\"}\n", "spec.replicas.min: expected a non-negative integer, got \"2\" (a quoted string)"},
    BadPolicy{"  gpu: {maxPerPod: '1'}\n", "spec.gpu.maxPerPod: expected a non-negative number, got \"1\" (a quoted string)"},
    BadPolicy{"  automation: {requireChangeReason: \"yes\"}\n",
              "spec.automation.requireChangeReason: expected true, false or a mapping with annotation, got \"yes\" (a quoted string)"},
    BadPolicy{"  automation: {requireChangeReason: \"true\"}\n",
              "spec.automation.requireChangeReason: expected true, false or a mapping with annotation, got \"true\" (a quoted string)"}));

TEST(PolicyLoader, YamlNestedTooDeepNamesTheDepth) {
  const std::string text = "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: p}\nspec: {replicas: " +
                           std::string(1000, '[') + std::string(1000, ']') + "}\n";
  PolicyLoad load = parse_policies(text, "deep.yaml");
  ASSERT_EQ(load.errors.size(), 1u);
  EXPECT_THAT(load.errors[0], ::testing::MatchesRegex("deep\\.yaml\\[0\\]: line 4, column [0-9]+: nested more than [0-9]+ levels deep"));
}

TEST(PolicyLoader, HeaderErrors) {
  PolicyLoad load = parse_policies("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\nspec: {replicas: {min: 1}}\n", "h.yaml");
  EXPECT_THAT(load.errors, ElementsAre("h.yaml[0] apiVersion: expected \"sizeguard.io/v1\", got \"v1\"",
                                       "h.yaml[0] kind: expected \"Policy\", got \"ConfigMap\"",
                                       "h.yaml[0] metadata.name: expected a lowercase DNS name (a-z, 0-9, '-', '.'), got \"Bad_Name\""));
  load = parse_policies("apiVersion: sizeguard.io/v1\nkind: Policy\nspec: {replicas: {min: 1}}\n", "h.yaml");
  EXPECT_THAT(load.errors, ElementsAre("h.yaml[0] metadata.name: required"));
}

TEST(PolicyLoader, SyntaxErrorsGiveDocumentAndLine) {
  PolicyLoad load = parse_policies("# leading comment\n---\napiVersion: sizeguard.io/v1\n---\nfoo: [\n", "s.yaml");
  ASSERT_FALSE(load.errors.empty());
  EXPECT_THAT(load.errors.back(), HasSubstr("s.yaml[1]: line 6"));
  EXPECT_THAT(load.errors.front(), HasSubstr("s.yaml[0] kind: expected \"Policy\""));
}

TEST(PolicyLoader, EmptyAndCommentOnlyDocumentsAreSkippedButCounted) {
  const std::string policy = "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: NAME}\nspec: {replicas: {min: 1}}\n";
  std::string text = "---\n# nothing here\n---\n" + policy + "---\n---\n";
  text += std::string(policy).replace(policy.find("NAME"), 4, "second");
  text.replace(text.find("NAME"), 4, "first");
  PolicyLoad load = parse_policies(text, "e.yaml");
  ASSERT_TRUE(load.ok()) << load.errors.front();
  ASSERT_EQ(load.policies.size(), 2u);
  EXPECT_EQ(load.policies[0].source, "e.yaml[1]");
  EXPECT_EQ(load.policies[1].source, "e.yaml[3]");
}

class PolicyDirectory : public ::testing::Test {
 protected:
  void write(const std::filesystem::path& relative, const std::string& text) {
    std::filesystem::create_directories((dir_ / relative).parent_path());
    std::ofstream(dir_ / relative) << text;
  }
  static std::string policy(const std::string& name, int min) {
    return "apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec: {replicas: {min: " +
           std::to_string(min) + "}}\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_ = make_private_temp_directory("sizeguard-policy-dir");
};

TEST_F(PolicyDirectory, ReadsYamlYmlAndJsonInNameOrderAndSkipsOthers) {
  write("b.yml", policy("bee", 2));
  write("a.yaml", policy("ay", 1));
  write("c.json", R"({"apiVersion":"sizeguard.io/v1","kind":"Policy","metadata":{"name":"sea"},"spec":{"replicas":{"max":3}}})");
  write("notes.txt", "not a policy");
  write(".hidden.yaml", "garbage: [");
  PolicyLoad load = load_policies(dir_);
  ASSERT_TRUE(load.ok()) << load.errors.front();
  ASSERT_EQ(load.policies.size(), 3u);
  EXPECT_EQ(load.policies[0].name, "ay");
  EXPECT_EQ(load.policies[1].name, "bee");
  EXPECT_EQ(load.policies[2].name, "sea");
  EXPECT_THAT(load.files, ElementsAre("a.yaml", "b.yml", "c.json"));
}

TEST_F(PolicyDirectory, DuplicateNamesAcrossFilesAreErrors) {
  write("a.yaml", policy("same", 1));
  write("b.yaml", policy("same", 2));
  PolicyLoad load = load_policies(dir_);
  EXPECT_THAT(load.errors, ElementsAre("b.yaml[0] metadata.name: policy \"same\" is already defined in a.yaml[0]"));
}

TEST_F(PolicyDirectory, ConfigMapVolumeLayoutReadsTheCurrentGeneration) {
  // What the kubelet makes: ..2026_x/ with the files, ..data -> ..2026_x, name -> ..data/name.
  write("..2026_01/a.yaml", policy("gen-one", 1));
  std::filesystem::create_directory_symlink("..2026_01", dir_ / "..data");
  std::filesystem::create_symlink("..data/a.yaml", dir_ / "a.yaml");
  PolicyLoad load = load_policies(dir_);
  ASSERT_TRUE(load.ok()) << load.errors.front();
  ASSERT_EQ(load.policies.size(), 1u);
  EXPECT_EQ(load.policies[0].name, "gen-one");
  const std::string first_fingerprint = load.fingerprint;

  write("..2026_02/a.yaml", policy("gen-two", 1));
  std::filesystem::create_directory_symlink("..2026_02", dir_ / "..data_tmp");
  std::filesystem::rename(dir_ / "..data_tmp", dir_ / "..data");  // the atomic swap
  load = load_policies(dir_);
  ASSERT_EQ(load.policies.size(), 1u);
  EXPECT_EQ(load.policies[0].name, "gen-two");
  EXPECT_NE(load.fingerprint, first_fingerprint);
}

TEST_F(PolicyDirectory, ReadingThenParsingIsLoading) {
  // The store's poller reads and fingerprints the files, and parses only when that changed.
  write("a.yaml", policy("ay", 1));
  write("b.yaml", "garbage: [");
  const PolicyFiles files = read_policy_files(dir_);
  ASSERT_EQ(files.files.size(), 2u);
  EXPECT_EQ(files.files[0].first, "a.yaml");
  EXPECT_EQ(files.files[0].second, policy("ay", 1));
  EXPECT_TRUE(files.errors.empty());
  const PolicyLoad parsed = parse_policy_files(files);
  const PolicyLoad loaded = load_policies(dir_);
  EXPECT_EQ(parsed.fingerprint, loaded.fingerprint);
  EXPECT_EQ(parsed.files, loaded.files);
  EXPECT_EQ(parsed.errors, loaded.errors);
  ASSERT_EQ(parsed.policies.size(), 1u);
  EXPECT_EQ(parsed.policies[0].name, "ay");
  EXPECT_FALSE(parsed.ok());

  EXPECT_EQ(read_policy_files(dir_).fingerprint, files.fingerprint) << "unchanged files";
  write("b.yaml", policy("bee", 2));
  EXPECT_NE(read_policy_files(dir_).fingerprint, files.fingerprint);
  EXPECT_THAT(read_policy_files(dir_ / "nope").errors, ElementsAre((dir_ / "nope").string() + ": no such file or directory"));
}

TEST_F(PolicyDirectory, MissingPathIsAnError) {
  PolicyLoad load = load_policies(dir_ / "nope");
  EXPECT_THAT(load.errors, ElementsAre((dir_ / "nope").string() + ": no such file or directory"));
}

TEST(PolicyExamples, TheShippedExamplesAreValid) {
  PolicyLoad load = load_policies(std::filesystem::path(SIZEGUARD_SOURCE_DIR) / "policies" / "examples");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
  EXPECT_GE(load.policies.size(), 3u);
  load = load_policies(std::filesystem::path(SIZEGUARD_SOURCE_DIR) / "deploy" / "base" / "policies");
  EXPECT_TRUE(load.ok()) << ::testing::PrintToString(load.errors);
}

}  // namespace
}  // namespace sizeguard
