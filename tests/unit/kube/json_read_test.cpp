#include "kube/json_read.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "support/fixtures.h"

namespace sizeguard {
namespace {

using Json = nlohmann::json;
using test::load_apiserver_fixture;
using test::apiserver_fixtures;

// Same value, and the same number kinds (nlohmann's == treats 1u and 1 as equal).
void expect_identical(const Json& actual, const Json& expected, const std::string& where = "$") {
  ASSERT_EQ(actual.type(), expected.type()) << where;
  if (actual.is_object()) {
    ASSERT_EQ(actual.size(), expected.size()) << where;
    for (auto it = expected.begin(); it != expected.end(); ++it) {
      ASSERT_TRUE(actual.contains(it.key())) << where << "." << it.key();
      expect_identical(actual.at(it.key()), it.value(), where + "." + it.key());
    }
  } else if (actual.is_array()) {
    ASSERT_EQ(actual.size(), expected.size()) << where;
    for (size_t i = 0; i < actual.size(); ++i) expect_identical(actual[i], expected[i], where + "[" + std::to_string(i) + "]");
  } else {
    EXPECT_EQ(actual, expected) << where;
  }
}

void expect_same_as_nlohmann(const std::string& text) {
  std::optional<Json> parsed = parse_json(text);
  ASSERT_TRUE(parsed.has_value()) << text.substr(0, 200);
  expect_identical(*parsed, Json::parse(text));
}

TEST(ParseJson, EveryApiserverFixtureParsesExactlyAsNlohmannDoes) {
  const auto fixtures = apiserver_fixtures();
  ASSERT_FALSE(fixtures.empty());
  for (const auto& path : fixtures) {
    SCOPED_TRACE(path.string());
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    expect_same_as_nlohmann(text.str());
  }
}

TEST(ParseJson, NumbersKeepNlohmannsKinds) {
  const std::string text =
      R"({"zero":0,"minusZero":-0,"small":7,"negative":-7,"int64max":9223372036854775807,)"
      R"("uint64max":18446744073709551615,"int64min":-9223372036854775808,"float":1.5,"exp":1e3,)"
      R"("tiny":5e-324,"huge":123456789012345678901234567890})";
  expect_same_as_nlohmann(text);
  const Json parsed = *parse_json(text);
  EXPECT_TRUE(parsed["small"].is_number_unsigned());
  EXPECT_TRUE(parsed["negative"].is_number_integer() && !parsed["negative"].is_number_unsigned());
  EXPECT_TRUE(parsed["exp"].is_number_float());
  EXPECT_TRUE(parsed["huge"].is_number_float());  // beyond 64 bits: nlohmann's double
}

TEST(ParseJson, RepeatedKeysKeepTheLastValueLikeNlohmann) {
  expect_same_as_nlohmann(R"({"a":1,"b":{"c":"x","c":"y"},"a":2})");
  EXPECT_EQ((*parse_json(R"({"a":1,"a":2})"))["a"], 2);
}

TEST(ParseJson, StringsWithEscapesAndUnicode) {
  expect_same_as_nlohmann(R"({"s":"tab\t quote\" slash\/ \u00e9 \ud83d\ude00 \u0000 end","e":""})");
}

TEST(ParseJson, NestingBeyondSimdjsonsDepthLimitStillParses) {
  const int depth = 5000;
  const std::string text = std::string(depth, '[') + "1" + std::string(depth, ']');
  std::optional<Json> parsed = parse_json(text);
  ASSERT_TRUE(parsed.has_value());
  const Json* inner = &*parsed;
  for (int i = 0; i < depth; ++i) inner = &inner->at(0);
  EXPECT_EQ(*inner, 1);
}

TEST(ParseJson, LargeBodiesUseTheirOwnParserAndStillMatch) {
  Json review = Json::parse(load_apiserver_fixture("pod-create-from-replicaset.json"));
  Json containers = Json::array();
  for (int i = 0; i < 2000; ++i) {
    Json container = review["request"]["object"]["spec"]["containers"][0];
    container["name"] = "c" + std::to_string(i);
    containers.push_back(container);
  }
  review["request"]["object"]["spec"]["containers"] = containers;
  const std::string text = review.dump();
  ASSERT_GT(text.size(), 256u * 1024);
  expect_same_as_nlohmann(text);
  expect_same_as_nlohmann(load_apiserver_fixture("pod-create-from-replicaset.json"));  // the reused parser after a big one
}

// parse_json(text, omit) against parse_json(text) with the members erased afterwards.
void expect_omitted(const std::string& text, std::initializer_list<std::string_view> omit, const Json& expected) {
  std::optional<Json> parsed = parse_json(text, omit);
  ASSERT_TRUE(parsed.has_value()) << text.substr(0, 200);
  expect_identical(*parsed, expected);
}

TEST(ParseJson, OmittedMembersAreLeftOutAndNothingElse) {
  // The member itself, with a same-named key elsewhere (kept) and a sibling (kept).
  expect_omitted(R"({"a":{"b":{"skip":[1,{"x":2}],"keep":3},"skip":4},"skip":5})", {"/a/b/skip"},
                 Json::parse(R"({"a":{"b":{"keep":3},"skip":4},"skip":5})"));
  // A repeated key: the last value wins in parse_json, so the omitted member is gone either way.
  expect_omitted(R"({"a":{"skip":1,"keep":2,"skip":3}})", {"/a/skip"}, Json::parse(R"({"a":{"keep":2}})"));
  // Missing, through a non-object (an array, a string) or a null: nothing is omitted.
  for (const std::string text : {R"({"a":[{"skip":1}]})", R"({"a":"skip"})", R"({"b":1})", R"({"a":null})", "[1]", "7"}) {
    expect_omitted(text, {"/a/skip", "/a/0/skip"}, Json::parse(text));
  }
  // Two pointers sharing a prefix, and a top-level member.
  expect_omitted(R"({"r":{"o":{"m":{"mf":[{}],"name":"x"}},"old":{"m":{"mf":{}}}},"top":1,"t":2})",
                 {"/r/o/m/mf", "/r/old/m/mf", "/top"}, Json::parse(R"({"r":{"o":{"m":{"name":"x"}},"old":{"m":{}}},"t":2})"));
}

TEST(ParseJson, OmittedMembersAreLeftOutOnNlohmannsPathToo) {
  // Nested deeper than simdjson accepts: nlohmann parses it, and the member is erased after.
  const int depth = 2000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  const std::string text = R"({"a":{"skip":)" + deep + R"(,"keep":)" + deep + "}}";
  Json expected = Json::parse(text);
  expected["a"].erase("skip");
  expect_omitted(text, {"/a/skip"}, expected);
}

TEST(ParseJson, ApiserverFixturesWithoutManagedFields) {
  for (const auto& path : apiserver_fixtures()) {
    SCOPED_TRACE(path.string());
    const std::string text = test::read_file(path);
    Json expected = Json::parse(text);
    for (const char* key : {"object", "oldObject"}) {
      Json& object = expected["request"][key];
      if (object.is_object() && object["metadata"].is_object()) object["metadata"].erase("managedFields");
    }
    expect_omitted(text, {"/request/object/metadata/managedFields", "/request/oldObject/metadata/managedFields"},
                   expected);
  }
}

TEST(ParseJson, InvalidDocumentsAreRejected) {
  for (const std::string& text : std::vector<std::string>{"", " ", "{", R"({"a":})", R"({"a":1} trailing)", "[1,]", R"({"a":"\x"})", "nul",
                                 std::string("{\"a\":\"\xff\xfe\"}"), std::string("{\"a\":\"\xc3\"}"), "01", "1e999"}) {
    EXPECT_FALSE(parse_json(text).has_value()) << text;
    EXPECT_TRUE(Json::parse(text, nullptr, false).is_discarded()) << "nlohmann accepts " << text;
  }
}

TEST(ParseJson, ScalarsAtTheTop) {
  for (const std::string& text : std::vector<std::string>{"1", "-2", "\"s\"", "true", "null", "2.5"}) expect_same_as_nlohmann(text);
}

}  // namespace
}  // namespace sizeguard
