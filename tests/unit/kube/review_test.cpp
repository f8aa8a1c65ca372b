#include "kube/review.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "support/fixtures.h"

namespace sizeguard {
namespace {

AdmissionRequest decode_ok(std::string_view body) {
  auto result = decode_admission_review(body);
  if (auto* error = std::get_if<DecodeError>(&result)) {
    ADD_FAILURE() << "decode failed: " << error->message;
    return {};
  }
  return std::get<AdmissionRequest>(std::move(result));
}

std::string decode_error(std::string_view body) {
  auto result = decode_admission_review(body);
  if (auto* error = std::get_if<DecodeError>(&result)) return error->message;
  ADD_FAILURE() << "expected a decode error for: " << body;
  return "";
}

std::string unbase64(const std::string& text) {
  std::string out(text.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '\0') out.pop_back();  // EVP pads with zero bytes
  return out;
}

struct FixtureExpectation {
  const char* file;
  Operation operation;
  const char* kind;
  const char* display_name;
  const char* username;
  bool dry_run;
  bool has_object;
  bool has_old_object;
  const char* sub_resource;
};

class RealFixtures : public ::testing::TestWithParam<FixtureExpectation> {};

TEST_P(RealFixtures, DecodeAsTheApiserverSentThem) {
  const auto& expected = GetParam();
  const AdmissionRequest request = decode_ok(test::load_apiserver_fixture(expected.file));
  EXPECT_EQ(request.api_version, "admission.k8s.io/v1");
  EXPECT_FALSE(request.uid.empty());
  EXPECT_EQ(request.operation, expected.operation);
  EXPECT_EQ(request.kind.kind, expected.kind);
  EXPECT_EQ(request.display_name(), expected.display_name);
  EXPECT_EQ(request.user_info.username, expected.username);
  EXPECT_EQ(request.dry_run, expected.dry_run);
  EXPECT_EQ(request.object.is_object(), expected.has_object);
  EXPECT_EQ(request.old_object.is_object(), expected.has_old_object);
  EXPECT_EQ(request.sub_resource, expected.sub_resource);
  EXPECT_EQ(request.namespace_, "webhook-test");
  EXPECT_TRUE(request.subject().is_object());
  EXPECT_FALSE(request.user_info.groups.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Shared, RealFixtures,
    ::testing::Values(
        FixtureExpectation{"deployment-create.json", Operation::Create, "Deployment", "demo", "kubernetes-admin", false, true, false, ""},
        FixtureExpectation{"deployment-create-dryrun.json", Operation::Create, "Deployment", "dry", "kubernetes-admin", true, true, false, ""},
        FixtureExpectation{"deployment-create-server-side-apply.json", Operation::Create, "Deployment", "ssa", "kubernetes-admin", false, true, false, ""},
        FixtureExpectation{"deployment-update.json", Operation::Update, "Deployment", "demo", "kubernetes-admin", false, true, true, ""},
        FixtureExpectation{"deployment-delete.json", Operation::Delete, "Deployment", "demo", "kubernetes-admin", false, false, true, ""},
        FixtureExpectation{"pod-create-from-replicaset.json", Operation::Create, "Pod", "demo-6f8547b4f8-",
                           "system:serviceaccount:kube-system:replicaset-controller", false, true, false, ""},
        FixtureExpectation{"pod-create-kubectl-run.json", Operation::Create, "Pod", "user-pod", "kubernetes-admin", false, true, false, ""},
        FixtureExpectation{"pod-delete-garbage-collector.json", Operation::Delete, "Pod", "demo-6f8547b4f8-jzfwf",
                           "system:serviceaccount:kube-system:generic-garbage-collector", false, false, true, ""},
        FixtureExpectation{"pod-delete-kubectl.json", Operation::Delete, "Pod", "demo-6f8547b4f8-598sc", "kubernetes-admin", false, false, true, ""},
        FixtureExpectation{"scale-update.json", Operation::Update, "Scale", "demo", "kubernetes-admin", false, true, true, "scale"},
        FixtureExpectation{"validate-deployment-create-denied.json", Operation::Create, "Deployment", "denied", "kubernetes-admin", false, true, false, ""},
        FixtureExpectation{"validate-pod-create-from-replicaset.json", Operation::Create, "Pod", "demo-6f8547b4f8-598sc",
                           "system:serviceaccount:kube-system:replicaset-controller", false, true, false, ""}),
    [](const auto& info) {
      std::string name = info.param.file;
      name = name.substr(0, name.find('.'));
      for (char& c : name) if (c == '-') c = '_';
      return name;
    });

TEST(ReviewDecode, EveryFixtureInTheSharedDirectoryDecodes) {
  const auto files = test::apiserver_fixtures();
  ASSERT_GE(files.size(), 12u);  // the 12 bodies the apiserver sent
  for (const auto& file : files) {
    auto result = decode_admission_review(test::read_file(file));
    EXPECT_TRUE(std::holds_alternative<AdmissionRequest>(result)) << file;
  }
}

TEST(ReviewDecode, ObjectsComeWithoutManagedFieldsAndOtherwiseWhole) {
  for (const char* file : {"pod-create-from-replicaset.json", "deployment-update.json", "pod-delete-kubectl.json"}) {
    SCOPED_TRACE(file);
    const std::string body = test::load_apiserver_fixture(file);
    const Json sent = Json::parse(body)["request"];
    const AdmissionRequest request = decode_ok(body);
    bool had_managed_fields = false;
    for (const auto& [key, decoded] : {std::pair<const char*, const Json*>{"object", &request.object},
                                       std::pair<const char*, const Json*>{"oldObject", &request.old_object}}) {
      if (!sent.contains(key) || sent[key].is_null()) continue;
      Json expected = sent[key];
      had_managed_fields = had_managed_fields || expected["metadata"].contains("managedFields");
      expected["metadata"].erase("managedFields");
      EXPECT_EQ(*decoded, expected) << key;
    }
    EXPECT_TRUE(had_managed_fields) << "the fixture should carry managedFields";
  }
}

TEST(ReviewDecode, ScaleKeepsResourceAndRequestFields) {
  const AdmissionRequest request = decode_ok(test::load_apiserver_fixture("scale-update.json"));
  EXPECT_EQ(request.kind.group, "autoscaling");
  EXPECT_EQ(request.resource.group, "apps");
  EXPECT_EQ(request.resource.resource, "deployments");
  EXPECT_EQ(request.request_sub_resource, "scale");
  EXPECT_EQ(request.object["spec"]["replicas"], 3);
  EXPECT_EQ(request.old_object["spec"]["replicas"], 2);
}

TEST(ReviewDecode, UserInfoExtraAndGroups) {
  const AdmissionRequest request = decode_ok(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
    "request":{"uid":"u1","operation":"CONNECT","kind":{"kind":"Pod"},
    "userInfo":{"username":"alice","uid":"42","groups":["a","b"],"extra":{"scopes":["x","y"]}}}})");
  EXPECT_EQ(request.operation, Operation::Connect);
  EXPECT_EQ(request.user_info.uid, "42");
  EXPECT_EQ(request.user_info.groups, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(request.user_info.extra.at("scopes"), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(request.object.is_null());
  EXPECT_EQ(request.request_kind.kind, "Pod") << "requestKind defaults to kind";
}

TEST(ReviewDecode, V1beta1IsAccepted) {
  const AdmissionRequest request = decode_ok(
      R"({"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"b1","operation":"CREATE"}})");
  EXPECT_EQ(request.api_version, "admission.k8s.io/v1beta1");
}

TEST(ReviewDecode, ErrorsSayExactlyWhatIsWrong) {
  EXPECT_NE(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionRev)").find("not valid JSON"), std::string::npos);
  EXPECT_EQ(decode_error("[1,2]"), "body is a JSON array, expected an AdmissionReview object");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"Pod"})"),
            "kind is \"Pod\", expected AdmissionReview");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1"})"), "kind is missing, expected AdmissionReview");
  EXPECT_EQ(decode_error(R"({"apiVersion":"v1","kind":"AdmissionReview","request":{}})"),
            "apiVersion \"v1\" is not supported (admission.k8s.io/v1, admission.k8s.io/v1beta1)");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"})"), "request is missing");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[]})"),
            "request must be an object, got array");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}})"),
            "request.uid is missing or empty");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}})"),
            "request.uid must be a string, got number");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","operation":"PATCH"}})"),
            "request.operation \"PATCH\" is not CREATE, UPDATE, DELETE or CONNECT");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE","object":"x"}})"),
            "request.object must be an object, got string");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE","dryRun":"yes"}})"),
            "request.dryRun must be a boolean, got string");
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","operation":"CREATE","userInfo":{"groups":[1]}}})"),
            "request.userInfo.groups must be an array of strings");
  EXPECT_NE(decode_error("").find("not valid JSON"), std::string::npos);
  EXPECT_EQ(decode_error(R"({"kind":"AdmissionReview","request":{}})"),
            "apiVersion is missing, expected admission.k8s.io/v1 or admission.k8s.io/v1beta1");
}

// Go's encoding/json refuses a leading byte order mark (so the apiserver never sends one);
// nlohmann and simdjson would skip it and decode.
TEST(ReviewDecode, ByteOrderMarkIsADecodeError) {
  const std::string review = test::load_apiserver_fixture("pod-create-kubectl-run.json");
  ASSERT_TRUE(std::holds_alternative<AdmissionRequest>(decode_admission_review(review)));
  EXPECT_EQ(decode_error("\xEF\xBB\xBF" + review), "body is not valid JSON: it starts with a UTF-8 byte order mark");
}

// Found by tests/fuzz/admission_fuzz: a number beyond double's range threw out of decode
// (nlohmann reports it as out_of_range, not parse_error) instead of becoming a DecodeError.
TEST(ReviewDecode, NumberBeyondDoubleRangeIsADecodeError) {
  EXPECT_EQ(decode_error(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a",)"
                         R"("operation":"CREATE","object":{"spec":{"replicas":1e400}}}})"),
            "body is not valid JSON: [json.exception.out_of_range.406] number overflow parsing '1e400'");
}

// Found with the admission_fuzz harness on a hand-made input (its 32 KiB inputs cannot nest
// this deep): an object nested a million levels deep (2 MB, under the body limit) overflowed
// the stack in /mutate's recursive JSON copies. Decode now refuses what Go's encoding/json,
// and so the apiserver, refuses: more than 10000 levels.
TEST(ReviewDecode, NestingDeeperThanTheApiserverAcceptsIsADecodeError) {
  const std::string prefix = R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a",)"
                             R"("operation":"CREATE","object":{"kind":"Pod","x":)";
  auto review = [&](size_t arrays) { return prefix + std::string(arrays, '[') + std::string(arrays, ']') + "}}}"; };
  // Three objects enclose the arrays: 9997 arrays reach 10000 levels exactly.
  EXPECT_TRUE(std::holds_alternative<AdmissionRequest>(decode_admission_review(review(9997))));
  EXPECT_EQ(decode_error(review(9998)), "body nests arrays and objects more than 10000 levels deep (at byte " +
                                            std::to_string(prefix.size() + 9997) + ")");
  EXPECT_EQ(decode_error(review(1000000)).substr(0, 43), "body nests arrays and objects more than 100");
  // Brackets inside strings, escaped quotes included, are text.
  const auto in_string = decode_admission_review(prefix + "\"\\\"" + std::string(20000, '[') + "\"}}}");
  ASSERT_TRUE(std::holds_alternative<AdmissionRequest>(in_string));
  EXPECT_EQ(std::get<AdmissionRequest>(in_string).object["x"].get<std::string>().size(), 20001u);
  // An escaped backslash does not escape the quote after it: the nesting after the string counts.
  const std::string after = prefix + "\"a\\\\\",\"y\":";
  EXPECT_EQ(decode_error(after + std::string(9998, '[') + std::string(9998, ']') + "}}}"),
            "body nests arrays and objects more than 10000 levels deep (at byte " +
                std::to_string(after.size() + 9997) + ")");
  EXPECT_TRUE(std::holds_alternative<AdmissionRequest>(
      decode_admission_review(after + std::string(9997, '[') + std::string(9997, ']') + "}}}")));
}

TEST(ReviewEncode, AllowedWithoutPatchHasNoPatchType) {
  AdmissionResponse response;
  response.uid = "abc";
  const Json out = Json::parse(encode_admission_review(response, "admission.k8s.io/v1"));
  EXPECT_EQ(out["apiVersion"], "admission.k8s.io/v1");
  EXPECT_EQ(out["kind"], "AdmissionReview");
  EXPECT_EQ(out["response"]["uid"], "abc");
  EXPECT_EQ(out["response"]["allowed"], true);
  EXPECT_FALSE(out["response"].contains("patchType"));
  EXPECT_FALSE(out["response"].contains("patch"));
  EXPECT_FALSE(out["response"].contains("status"));
  EXPECT_FALSE(out["response"].contains("warnings"));
  // An empty patch array is no patch.
  response.patch = Json::array();
  EXPECT_FALSE(Json::parse(encode_admission_review(response, "admission.k8s.io/v1"))["response"].contains("patch"));
}

TEST(ReviewEncode, PatchIsBase64JsonPatchInTheRequestApiVersion) {
  AdmissionResponse response;
  response.uid = "p1";
  response.patch = Json::array({{{"op", "add"}, {"path", "/metadata/annotations"}, {"value", {{"a", "b"}}}}});
  response.warnings = {"sizeguard: hello"};
  const Json out = Json::parse(encode_admission_review(response, "admission.k8s.io/v1beta1"));
  EXPECT_EQ(out["apiVersion"], "admission.k8s.io/v1beta1");
  EXPECT_EQ(out["response"]["patchType"], "JSONPatch");
  EXPECT_EQ(Json::parse(unbase64(out["response"]["patch"])), response.patch);
  EXPECT_EQ(out["response"]["warnings"], Json::array({"sizeguard: hello"}));
}

TEST(ReviewEncode, DenialCarriesStatusWithCauses) {
  AdmissionResponse response;
  response.uid = "d1";
  response.allowed = false;
  response.status = Status{403, "Forbidden", "replicas 1 below minimum 2",
                           {{"ReplicasBelowMin", "replicas 1 < min 2 (policy prod-floor)", "spec.replicas"}}};
  response.audit_annotations["sizeguard.io/policy"] = "prod-floor";
  const Json out = Json::parse(encode_admission_review(response, "admission.k8s.io/v1"));
  const Json& status = out["response"]["status"];
  EXPECT_EQ(out["response"]["allowed"], false);
  EXPECT_EQ(status["code"], 403);
  EXPECT_EQ(status["reason"], "Forbidden");
  EXPECT_EQ(status["status"], "Failure");
  EXPECT_EQ(status["message"], "replicas 1 below minimum 2");
  EXPECT_EQ(status["details"]["causes"][0]["reason"], "ReplicasBelowMin");
  EXPECT_EQ(status["details"]["causes"][0]["field"], "spec.replicas");
  EXPECT_EQ(out["response"]["auditAnnotations"]["sizeguard.io/policy"], "prod-floor");
}

TEST(ReviewEncode, InvalidUtf8InWarningsDoesNotThrow) {
  AdmissionResponse response;
  response.uid = "u";
  response.warnings = {std::string("bad \xff byte")};
  EXPECT_NO_THROW({
    const Json out = Json::parse(encode_admission_review(response, "admission.k8s.io/v1"));
    EXPECT_EQ(out["response"]["warnings"].size(), 1u);
  });
}

TEST(ReviewRoundTrip, DecodedUidIsEchoed) {
  for (const auto& file : test::apiserver_fixtures()) {
    const AdmissionRequest request = decode_ok(test::read_file(file));
    AdmissionResponse response;
    response.uid = request.uid;
    const Json out = Json::parse(encode_admission_review(response, request.api_version));
    EXPECT_EQ(out["response"]["uid"], request.uid) << file;
  }
}

}  // namespace
}  // namespace sizeguard
