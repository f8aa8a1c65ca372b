#include "kube/jsonpatch.h"

#include <gtest/gtest.h>

#include "support/fixtures.h"
#include "kube/workload.h"

namespace sizeguard {
namespace {

// Every builder result must be exactly what applying its patch to the original gives.
void expect_patch_applies(const Json& original, const PatchBuilder& builder, const Json& expected) {
  const Json patched = original.patch(builder.operations());
  EXPECT_EQ(patched, expected) << "patch: " << builder.operations().dump();
  EXPECT_EQ(builder.result(), expected);
}

TEST(PointerEscaping, Rfc6901) {
  EXPECT_EQ(escape_pointer_token("sizeguard.io/reason"), "sizeguard.io~1reason");
  EXPECT_EQ(escape_pointer_token("a~b"), "a~0b");
  EXPECT_EQ(escape_pointer_token("~/"), "~0~1");
  EXPECT_EQ(escape_pointer_token("~1"), "~01") << "escape ~ first, or ~1 would decode to /";
  EXPECT_EQ(escape_pointer_token(""), "");
  EXPECT_EQ(make_pointer({"metadata", "annotations", "sizeguard.io/rightsized"}),
            "/metadata/annotations/sizeguard.io~1rightsized");
  EXPECT_EQ(make_pointer({}), "");
}

TEST(PointerEscaping, SplitIsTheInverseOfMake) {
  const std::vector<std::string> tokens{"metadata", "annotations", "a/b~c", "", "~1"};
  EXPECT_EQ(split_pointer(make_pointer(tokens)), tokens);
  EXPECT_EQ(split_pointer("/spec/template/spec/containers/0"),
            (std::vector<std::string>{"spec", "template", "spec", "containers", "0"}));
  EXPECT_TRUE(split_pointer("").empty());
}

TEST(PatchBuilder, AnnotationWithSlashOnObjectWithoutAnnotations) {
  const Json original = {{"metadata", {{"name", "x"}}}};
  PatchBuilder builder(original);
  builder.set({"metadata", "annotations", "sizeguard.io/reason"}, "because");
  ASSERT_EQ(builder.operations().size(), 1u);
  EXPECT_EQ(builder.operations()[0]["op"], "add");
  EXPECT_EQ(builder.operations()[0]["path"], "/metadata/annotations");
  expect_patch_applies(original, builder,
                       {{"metadata", {{"name", "x"}, {"annotations", {{"sizeguard.io/reason", "because"}}}}}});
}

TEST(PatchBuilder, ExistingAnnotationsGetOneMemberAdded) {
  const Json original = {{"metadata", {{"annotations", {{"a~b", "1"}}}}}};
  PatchBuilder builder(original);
  builder.set({"metadata", "annotations", "x/y~z"}, "2");
  EXPECT_EQ(builder.operations()[0]["path"], "/metadata/annotations/x~1y~0z");
  expect_patch_applies(original, builder, {{"metadata", {{"annotations", {{"a~b", "1"}, {"x/y~z", "2"}}}}}});
}

TEST(PatchBuilder, ContainerWithoutResourcesGetsResourcesAndRequests) {
  const Json original = {{"spec", {{"containers", Json::array({{{"name", "app"}}})}}}};
  PatchBuilder builder(original);
  builder.set({"spec", "containers", "0", "resources", "requests", "cpu"}, "250m");
  builder.set({"spec", "containers", "0", "resources", "requests", "memory"}, "256Mi");
  builder.set({"spec", "containers", "0", "resources", "limits", "memory"}, "256Mi");
  ASSERT_EQ(builder.operations().size(), 3u);
  EXPECT_EQ(builder.operations()[0]["path"], "/spec/containers/0/resources");
  EXPECT_EQ(builder.operations()[1]["path"], "/spec/containers/0/resources/requests/memory");
  EXPECT_EQ(builder.operations()[2]["path"], "/spec/containers/0/resources/limits");
  expect_patch_applies(original, builder,
                       {{"spec", {{"containers", Json::array({{{"name", "app"},
                                                               {"resources", {{"requests", {{"cpu", "250m"}, {"memory", "256Mi"}}},
                                                                              {"limits", {{"memory", "256Mi"}}}}}}})}}}});
}

TEST(PatchBuilder, EmptyResourcesObjectFromTheApiserver) {
  // Real Pods arrive with "resources": {} — the builder must add inside it, not replace it.
  const Json original = {{"spec", {{"containers", Json::array({{{"name", "app"}, {"resources", Json::object()}}})}}}};
  PatchBuilder builder(original);
  builder.set({"spec", "containers", "0", "resources", "requests", "cpu"}, "100m");
  EXPECT_EQ(builder.operations()[0]["path"], "/spec/containers/0/resources/requests");
  expect_patch_applies(original, builder,
                       {{"spec", {{"containers", Json::array({{{"name", "app"}, {"resources", {{"requests", {{"cpu", "100m"}}}}}}})}}}});
}

TEST(PatchBuilder, ReplaceExistingAndSkipEqual) {
  const Json original = {{"spec", {{"replicas", 3}, {"paused", false}}}};
  PatchBuilder builder(original);
  builder.set({"spec", "replicas"}, 3);
  EXPECT_TRUE(builder.empty()) << "setting an equal value is a no-op";
  builder.set({"spec", "replicas"}, 5);
  ASSERT_EQ(builder.operations().size(), 1u);
  EXPECT_EQ(builder.operations()[0]["op"], "replace");
  expect_patch_applies(original, builder, {{"spec", {{"replicas", 5}, {"paused", false}}}});
}

TEST(PatchBuilder, NullParentIsReplaced) {
  const Json original = {{"metadata", {{"annotations", nullptr}}}};
  PatchBuilder builder(original);
  builder.set({"metadata", "annotations", "k"}, "v");
  EXPECT_EQ(builder.operations()[0]["op"], "replace");
  expect_patch_applies(original, builder, {{"metadata", {{"annotations", {{"k", "v"}}}}}});
}

TEST(PatchBuilder, RemoveOnlyWhenPresent) {
  const Json original = {{"spec", {{"containers", Json::array({{{"name", "a"}, {"resources", {{"limits", {{"cpu", "1"}}}}}}})}}}};
  PatchBuilder builder(original);
  builder.remove({"spec", "containers", "0", "resources", "limits", "memory"});
  builder.remove({"spec", "containers", "3"});
  builder.remove({"nothing", "here"});
  EXPECT_TRUE(builder.empty());
  builder.remove({"spec", "containers", "0", "resources", "limits", "cpu"});
  ASSERT_EQ(builder.operations().size(), 1u);
  expect_patch_applies(original, builder,
                       {{"spec", {{"containers", Json::array({{{"name", "a"}, {"resources", {{"limits", Json::object()}}}}})}}}});
}

TEST(PatchBuilder, OutOfRangeArrayIndexIsNotPatched) {
  const Json original = {{"spec", {{"containers", Json::array()}}}};
  PatchBuilder builder(original);
  builder.set({"spec", "containers", "0", "name"}, "x");
  EXPECT_TRUE(builder.empty());
}

TEST(PatchBuilder, RealDeploymentTemplateFromTheApiserver) {
  const Json review = Json::parse(test::load_apiserver_fixture("deployment-create.json"));
  const Json& deployment = review["request"]["object"];
  const auto refs = containers(deployment, WorkloadKind::Deployment);
  ASSERT_FALSE(refs.empty());
  const auto tokens = split_pointer(refs[0].pointer);
  PatchBuilder builder(deployment);
  auto cpu = tokens;
  cpu.insert(cpu.end(), {"resources", "requests", "cpu"});
  builder.set(cpu, "350m");
  builder.set({"metadata", "annotations", "sizeguard.io/rightsized"}, "{}");
  const Json patched = deployment.patch(builder.operations());
  EXPECT_EQ(patched["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"], "350m");
  EXPECT_EQ(patched["metadata"]["annotations"]["sizeguard.io/rightsized"], "{}");
  EXPECT_TRUE(patched["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
}

}  // namespace
}  // namespace sizeguard
