// apimachinery's own Quantity vectors, table-driven: every parse / canonical-form / compare /
// rounding / arithmetic vector of
//   kubernetes/kubernetes staging/src/k8s.io/apimachinery/pkg/api/resource/quantity_test.go
// (TestQuantityParse with its negated and '+' variants and its invalid list,
// TestParseQuantityString, TestQuantityString with its alternates and negations,
// TestQuantityParseEmit, TestParseQuantity, TestMustParseNearMaxInt64, TestQuantityCmp,
// TestQuantityRoundUp, TestQuantityNeg, TestMilliNewSet, TestNewSet, TestNewScaledSet,
// TestScaledValue, TestNegativeValueRoundsAwayFromZero, TestAdd, TestSub, TestMul,
// TestNegAndSubAtMostNegative, TestSubMostNegativeCrossScale,
// TestZeroSubMostNegativeInheritsFormat, TestBinarySIPastEiArithmeticRoundTrip,
// TestBinarySIZeroExponentString, TestQuantity{Add,Sub}ZeroPreservesSuffix,
// TestInterpretExponentInt32Bounds, TestQuantityAs{Approximate,}Float64 (the ones a parsed
// value can reach)). Expected values are written the way the Go tests build them:
// decQuantity(m, e, format) is m x 10^e.
//
// Left out, as no parsed quantity can reach them (our Quantity, like a parsed k8s one, is
// always a whole number of nano-units): TestQuantityStringBelowNano (1e-12) and the
// TestQuantityCmpInt64AndDec rows built from sub-nano int64 amounts (e.g. (10^18-1)e-17,
// which the apiserver's own parse rounds up to 10). TestJSONWhitespace is about the JSON
// decoder's trimming, not the quantity grammar (" 1" is invalid in quantity_test.go too).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kube/quantity.h"

namespace sizeguard {
namespace {

using F = Quantity::Format;

Quantity q(const std::string& text) {
  std::string error;
  auto parsed = Quantity::parse(text, &error);
  EXPECT_TRUE(parsed.has_value()) << text << ": " << error;
  return parsed.value_or(Quantity{});
}

// decQuantity(m, e, format): m x 10^e. `m` is text so it can be wider than an int64.
Quantity dec(const std::string& m, int e, F format) { return q(m + "e" + std::to_string(e)).with_format(format); }

const char* name(F f) { return f == F::BinarySI ? "BinarySI" : f == F::DecimalSI ? "DecimalSI" : "DecimalExponent"; }

// --- TestQuantityParse -------------------------------------------------------------------

struct ParseCase {
  std::string input;
  std::string mantissa;
  int exponent;
  F format;
};

const std::string kMaxAllowed = "9223372036854775807";

const std::vector<ParseCase> kParse = {
    {"0", "0", 0, F::DecimalSI}, {"0n", "0", 0, F::DecimalSI}, {"0u", "0", 0, F::DecimalSI},
    {"0m", "0", 0, F::DecimalSI}, {"0Ki", "0", 0, F::BinarySI}, {"0k", "0", 0, F::DecimalSI},
    {"0Mi", "0", 0, F::BinarySI}, {"0M", "0", 0, F::DecimalSI}, {"0Gi", "0", 0, F::BinarySI},
    {"0G", "0", 0, F::DecimalSI}, {"0Ti", "0", 0, F::BinarySI}, {"0T", "0", 0, F::DecimalSI},
    // Quantity less numbers are allowed
    {"1", "1", 0, F::DecimalSI},
    // Binary suffixes
    {"1Ki", "1024", 0, F::BinarySI}, {"8Ki", "8192", 0, F::BinarySI}, {"7Mi", "7340032", 0, F::BinarySI},
    {"6Gi", "6442450944", 0, F::BinarySI}, {"5Ti", "5497558138880", 0, F::BinarySI},
    {"4Pi", "4503599627370496", 0, F::BinarySI}, {"3Ei", "3458764513820540928", 0, F::BinarySI},
    {"10Ti", "10995116277760", 0, F::BinarySI}, {"100Ti", "109951162777600", 0, F::BinarySI},
    // Decimal suffixes
    {"5n", "5", -9, F::DecimalSI}, {"4u", "4", -6, F::DecimalSI}, {"3m", "3", -3, F::DecimalSI},
    {"9", "9", 0, F::DecimalSI}, {"8k", "8", 3, F::DecimalSI}, {"50k", "5", 4, F::DecimalSI},
    {"7M", "7", 6, F::DecimalSI}, {"6G", "6", 9, F::DecimalSI}, {"5T", "5", 12, F::DecimalSI},
    {"40T", "4", 13, F::DecimalSI}, {"300T", "3", 14, F::DecimalSI}, {"2P", "2", 15, F::DecimalSI},
    {"1E", "1", 18, F::DecimalSI},
    // Decimal exponents
    {"1E-3", "1", -3, F::DecimalExponent}, {"1e3", "1", 3, F::DecimalExponent},
    {"1E6", "1", 6, F::DecimalExponent}, {"1e9", "1", 9, F::DecimalExponent},
    {"1E12", "1", 12, F::DecimalExponent}, {"1e15", "1", 15, F::DecimalExponent},
    {"1E18", "1", 18, F::DecimalExponent},
    // Nonstandard but still parsable
    {"1e14", "1", 14, F::DecimalExponent}, {"1e13", "1", 13, F::DecimalExponent},
    {"1e3", "1", 3, F::DecimalExponent}, {"100.035k", "100035", 0, F::DecimalSI},
    // Things that look like floating point
    {"0.001", "1", -3, F::DecimalSI}, {"0.0005k", "5", -1, F::DecimalSI}, {"0.005", "5", -3, F::DecimalSI},
    {"0.05", "5", -2, F::DecimalSI}, {"0.5", "5", -1, F::DecimalSI}, {"0.00050k", "5", -1, F::DecimalSI},
    {"0.00500", "5", -3, F::DecimalSI}, {"0.05000", "5", -2, F::DecimalSI}, {"0.50000", "5", -1, F::DecimalSI},
    {"0.5e0", "5", -1, F::DecimalExponent}, {"0.5e-1", "5", -2, F::DecimalExponent},
    {"0.5e-2", "5", -3, F::DecimalExponent}, {"0.5e0", "5", -1, F::DecimalExponent},
    {"10.035M", "10035", 3, F::DecimalSI},
    {"1.2e3", "12", 2, F::DecimalExponent}, {"1.3E+6", "13", 5, F::DecimalExponent},
    {"1.40e9", "14", 8, F::DecimalExponent}, {"1.53E12", "153", 10, F::DecimalExponent},
    {"1.6e15", "16", 14, F::DecimalExponent}, {"1.7E18", "17", 17, F::DecimalExponent},
    {"9.01", "901", -2, F::DecimalSI}, {"8.1k", "81", 2, F::DecimalSI}, {"7.123456M", "7123456", 0, F::DecimalSI},
    {"6.987654321G", "6987654321", 0, F::DecimalSI}, {"5.444T", "5444", 9, F::DecimalSI},
    {"40.1T", "401", 11, F::DecimalSI}, {"300.2T", "3002", 11, F::DecimalSI}, {"2.5P", "25", 14, F::DecimalSI},
    {"1.01E", "101", 16, F::DecimalSI},
    // Things that saturate/round
    {"3.001n", "4", -9, F::DecimalSI}, {"1.1E-9", "2", -9, F::DecimalExponent},
    {"0.0000000001", "1", -9, F::DecimalSI}, {"0.0000000005", "1", -9, F::DecimalSI},
    {"0.00000000050", "1", -9, F::DecimalSI}, {"0.5e-9", "1", -9, F::DecimalExponent},
    {"0.9n", "1", -9, F::DecimalSI}, {"0.00000012345", "124", -9, F::DecimalSI},
    {"0.00000012354", "124", -9, F::DecimalSI}, {"9Ei", kMaxAllowed, 0, F::BinarySI},
    {"9223372036854775807Ki", kMaxAllowed, 0, F::BinarySI}, {"12E", "12", 18, F::DecimalSI},
    // We'll accept fractional binary stuff, too.
    {"100.035Ki", "10243584", -2, F::BinarySI}, {"0.5Mi", "524288", 0, F::BinarySI},
    {"0.05Gi", "536870912", -1, F::BinarySI}, {"0.025Ti", "274877906944", -1, F::BinarySI},
    // Things written by trolls
    {"0.000000000001Ki", "2", -9, F::DecimalSI},  // rounds up, changes format
    {".001", "1", -3, F::DecimalSI}, {".0001k", "100", -3, F::DecimalSI}, {"1.", "1", 0, F::DecimalSI},
    {"1.G", "1", 9, F::DecimalSI},
};

class ApimachineryParse : public testing::TestWithParam<ParseCase> {};

TEST_P(ApimachineryParse, ValueAndFormat) {
  const auto& c = GetParam();
  const Quantity expected = dec(c.mantissa, c.exponent, c.format);
  const Quantity got = q(c.input);
  EXPECT_EQ(got, expected) << c.input << ": got " << got.to_string() << ", want " << expected.to_string();
  EXPECT_EQ(name(got.format()), name(c.format)) << c.input;
  // The canonical text parses back to the same value.
  EXPECT_EQ(q(got.to_string()), got) << c.input << " -> " << got.to_string();
}

TEST_P(ApimachineryParse, NegatedValueAndFormat) {
  const auto& c = GetParam();
  const Quantity got = q("-" + c.input);
  EXPECT_EQ(got, Quantity() - dec(c.mantissa, c.exponent, c.format)) << "-" << c.input << ": got " << got.to_string();
  EXPECT_EQ(name(got.format()), name(c.format)) << "-" << c.input;
}

TEST_P(ApimachineryParse, ExplicitPlusValueAndFormat) {
  const auto& c = GetParam();
  const Quantity got = q("+" + c.input);
  EXPECT_EQ(got, dec(c.mantissa, c.exponent, c.format)) << "+" << c.input << ": got " << got.to_string();
  EXPECT_EQ(name(got.format()), name(c.format)) << "+" << c.input;
}

INSTANTIATE_TEST_SUITE_P(QuantityTestGo, ApimachineryParse, testing::ValuesIn(kParse));

TEST(ApimachineryQuantity, EmptyStringIsAnError) { EXPECT_FALSE(Quantity::parse("")); }

class ApimachineryInvalid : public testing::TestWithParam<std::string> {};

TEST_P(ApimachineryInvalid, IsRejected) { EXPECT_FALSE(Quantity::parse(GetParam())) << GetParam(); }

INSTANTIATE_TEST_SUITE_P(QuantityTestGo, ApimachineryInvalid,
                         testing::Values("1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-",
                                         // an exponent outside the int32 scale is rejected rather than truncated
                                         "1e4294967297",
                                         // trailing whitespace is forbidden
                                         " 1", "1 "));

// --- TestParseQuantityString: the scanner reads a missing number as 0 -----------------------

TEST(ApimachineryQuantity, ParseQuantityStringReadsDigitlessNumbersAsZero) {
  EXPECT_EQ(q("0.025Ti"), dec("274877906944", -1, F::BinarySI));
  EXPECT_EQ(q("1.025Ti"), dec("1126999418470.4", 0, F::BinarySI));
  EXPECT_EQ(q("-1.025Ti"), dec("-1126999418470.4", 0, F::BinarySI));
  EXPECT_TRUE(q(".").is_zero());
  EXPECT_TRUE(q("-.").is_zero());
  EXPECT_EQ(q("1E-3"), dec("1", -3, F::DecimalExponent));
  // The suffix alone ("E-3" of "1E-3" without its number) reads 0 as well.
  EXPECT_TRUE(q("E-3").is_zero());
  EXPECT_EQ(q("E-3").to_string(), "0");
}

TEST(ApimachineryQuantity, ParseZero) { EXPECT_EQ(q("0").to_string(), "0"); }

// --- TestQuantityString: canonical form, alternates, negations ----------------------------

struct StringCase {
  std::string mantissa;
  int exponent;
  F format;
  std::string expect;
  std::string alternate;
};

const std::vector<StringCase> kString = {
    {"1073741824", 0, F::BinarySI, "1Gi", "1024Mi"}, {"314572800", 0, F::BinarySI, "300Mi", "307200Ki"},
    {"6144", 0, F::BinarySI, "6Ki", ""}, {"1074815565824", 0, F::BinarySI, "1001Gi", "1025024Mi"},
    {"1099511627776", 0, F::BinarySI, "1Ti", "1024Gi"}, {"5", 0, F::BinarySI, "5", "5000m"},
    {"500", -3, F::BinarySI, "500m", "0.5"}, {"1", 9, F::DecimalSI, "1G", "1000M"},
    {"1000", 6, F::DecimalSI, "1G", "0.001T"}, {"1000000", 3, F::DecimalSI, "1G", ""},
    {"1000000000", 0, F::DecimalSI, "1G", ""}, {"1", -3, F::DecimalSI, "1m", "1000u"},
    {"80", -3, F::DecimalSI, "80m", ""}, {"1080", -3, F::DecimalSI, "1080m", "1.08"},
    {"108", -2, F::DecimalSI, "1080m", "1080000000n"}, {"10800", -4, F::DecimalSI, "1080m", ""},
    {"300", 6, F::DecimalSI, "300M", ""}, {"1", 12, F::DecimalSI, "1T", ""},
    // DecimalSI has no suffix beyond "E": exponent notation.
    {"1", 18, F::DecimalSI, "1E", ""}, {"1", 21, F::DecimalSI, "1e21", "1000E"},
    {"5", 21, F::DecimalSI, "5e21", "5000E"}, {"1", 24, F::DecimalSI, "1e24", "1000000E"},
    // BinarySI has no suffix beyond "Ei": exact decimal.
    {"1", 70, F::BinarySI, "10e69", ""}, {"2", 70, F::BinarySI, "20e69", ""}, {"1", 72, F::BinarySI, "1e72", ""},
    {"1234567", 6, F::DecimalSI, "1234567M", ""}, {"1234567", -3, F::BinarySI, "1234567m", ""},
    {"3", 3, F::DecimalSI, "3k", ""}, {"1025", 0, F::BinarySI, "1025", ""}, {"0", 0, F::DecimalSI, "0", ""},
    {"0", 0, F::BinarySI, "0", ""}, {"1", 9, F::DecimalExponent, "1e9", ".001e12"},
    {"1", -3, F::DecimalExponent, "1e-3", "0.001e0"}, {"1", -9, F::DecimalExponent, "1e-9", "1000e-12"},
    {"80", -3, F::DecimalExponent, "80e-3", ""}, {"300", 6, F::DecimalExponent, "300e6", ""},
    {"1", 12, F::DecimalExponent, "1e12", ""}, {"1", 3, F::DecimalExponent, "1e3", ""},
    {"3", 3, F::DecimalExponent, "3e3", ""}, {"3", 3, F::DecimalSI, "3k", ""},
    {"0", 0, F::DecimalExponent, "0", "00"}, {"1", -9, F::DecimalSI, "1n", ""}, {"80", -9, F::DecimalSI, "80n", ""},
    {"1080", -9, F::DecimalSI, "1080n", ""}, {"108", -8, F::DecimalSI, "1080n", ""},
    {"10800", -10, F::DecimalSI, "1080n", ""}, {"1", -6, F::DecimalSI, "1u", ""}, {"80", -6, F::DecimalSI, "80u", ""},
    {"1080", -6, F::DecimalSI, "1080u", ""},
};

class ApimachineryString : public testing::TestWithParam<StringCase> {};

TEST_P(ApimachineryString, CanonicalFormAlternateAndNegation) {
  const auto& c = GetParam();
  const Quantity value = dec(c.mantissa, c.exponent, c.format);
  EXPECT_EQ(value.to_string(), c.expect);
  // The canonical text parses (and is its own canonical form when it keeps the family).
  EXPECT_EQ(q(c.expect), value);
  if (!c.alternate.empty()) {
    EXPECT_EQ(q(c.alternate).to_string(), c.expect) << c.alternate;
  }
  if (!value.is_zero()) {
    EXPECT_EQ((Quantity() - value).with_format(c.format).to_string(), "-" + c.expect);
  }
}

INSTANTIATE_TEST_SUITE_P(QuantityTestGo, ApimachineryString, testing::ValuesIn(kString));

// --- TestQuantityParseEmit ----------------------------------------------------------------

struct EmitCase {
  std::string in, expect;
};

class ApimachineryParseEmit : public testing::TestWithParam<EmitCase> {};

TEST_P(ApimachineryParseEmit, CanonicalAndNegated) {
  const auto& c = GetParam();
  EXPECT_EQ(q(c.in).to_string(), c.expect) << c.in;
  EXPECT_EQ(q("-" + c.in).to_string(), "-" + c.expect) << "-" << c.in;
}

INSTANTIATE_TEST_SUITE_P(QuantityTestGo, ApimachineryParseEmit,
                         testing::Values(EmitCase{"1Ki", "1Ki"}, EmitCase{"1Mi", "1Mi"}, EmitCase{"1Gi", "1Gi"},
                                         EmitCase{"1024Mi", "1Gi"}, EmitCase{"1000M", "1G"}, EmitCase{".001Ki", "1024m"},
                                         EmitCase{".000001Ki", "1024u"}, EmitCase{".000000001Ki", "1024n"},
                                         EmitCase{".000000000001Ki", "2n"}));

// --- TestParseQuantity: values around 2^63 keep every digit -------------------------------

struct BigCase {
  std::string input;
  std::string value;      // wantAsDec
  std::string canonical;  // empty: the input itself
};

class ApimachineryParseQuantity : public testing::TestWithParam<BigCase> {};

TEST_P(ApimachineryParseQuantity, ExactValueAndCanonicalForm) {
  const auto& c = GetParam();
  const Quantity got = q(c.input);
  EXPECT_EQ(got, q(c.value)) << c.input;
  EXPECT_EQ(got.to_string(), c.canonical.empty() ? c.input : c.canonical) << c.input;
}

INSTANTIATE_TEST_SUITE_P(
    QuantityTestGo, ApimachineryParseQuantity,
    testing::Values(
        // min/max 18 digits
        BigCase{"-999999999999999999", "-999999999999999999", ""}, BigCase{"999999999999999999", "999999999999999999", ""},
        BigCase{"-999999999999999999.0", "-999999999999999999", "-999999999999999999"},
        BigCase{"999999999999999999.0", "999999999999999999", "999999999999999999"},
        BigCase{"-999999999999999999.1", "-999999999999999999.1", "-999999999999999999100m"},
        BigCase{"999999999999999999.1", "999999999999999999.1", "999999999999999999100m"},
        // min/max 19 digits
        BigCase{"-9999999999999999999", "-9999999999999999999", ""}, BigCase{"9999999999999999999", "9999999999999999999", ""},
        BigCase{"-1E", "-1000000000000000000", ""}, BigCase{"1E", "1000000000000000000", ""},
        BigCase{"-1000000000000000000", "-1000000000000000000", "-1E"},
        BigCase{"1000000000000000000", "1000000000000000000", "1E"},
        BigCase{"-9999999999999999999.0", "-9999999999999999999", "-9999999999999999999"},
        BigCase{"9999999999999999999.0", "9999999999999999999", "9999999999999999999"},
        BigCase{"-1.0E", "-1000000000000000000", "-1E"}, BigCase{"1.0E", "1000000000000000000", "1E"},
        BigCase{"-1000000000000000000.0", "-1000000000000000000", "-1E"},
        BigCase{"1000000000000000000.0", "1000000000000000000", "1E"},
        BigCase{"-9999999999999999999000m", "-9999999999999999999", "-9999999999999999999"},
        BigCase{"9999999999999999999000m", "9999999999999999999", "9999999999999999999"},
        BigCase{"-9999999999999999999.1", "-9999999999999999999.1", "-9999999999999999999100m"},
        BigCase{"9999999999999999999.1", "9999999999999999999.1", "9999999999999999999100m"},
        BigCase{"-1.0000000000000000001E", "-1000000000000000000.1", "-1000000000000000000100m"},
        BigCase{"1.0000000000000000001E", "1000000000000000000.1", "1000000000000000000100m"},
        BigCase{"-1000000000000000000.1", "-1000000000000000000.1", "-1000000000000000000100m"},
        BigCase{"1000000000000000000.1", "1000000000000000000.1", "1000000000000000000100m"},
        BigCase{"-1.000000000000000001E", "-1000000000000000001", "-1000000000000000001"},
        BigCase{"1.000000000000000001E", "1000000000000000001", "1000000000000000001"},
        BigCase{"-1000000000000000001", "-1000000000000000001", ""}, BigCase{"1000000000000000001", "1000000000000000001", ""},
        // min/max 20 digits
        BigCase{"-10E", "-10000000000000000000", ""}, BigCase{"10E", "10000000000000000000", ""},
        BigCase{"-10000000000000000000", "-10000000000000000000", "-10E"},
        BigCase{"10000000000000000000", "10000000000000000000", "10E"},
        BigCase{"-10.0E", "-10000000000000000000", "-10E"}, BigCase{"10.0E", "10000000000000000000", "10E"},
        BigCase{"-10000000000000000000.0", "-10000000000000000000", "-10E"},
        BigCase{"10000000000000000000.0", "10000000000000000000", "10E"},
        BigCase{"-10000000000000000000000m", "-10000000000000000000", "-10E"},
        BigCase{"10000000000000000000000m", "10000000000000000000", "10E"},
        BigCase{"-10.0000000000000000001E", "-10000000000000000000.1", "-10000000000000000000100m"},
        BigCase{"10.0000000000000000001E", "10000000000000000000.1", "10000000000000000000100m"},
        BigCase{"-10000000000000000000.1", "-10000000000000000000.1", "-10000000000000000000100m"},
        BigCase{"10000000000000000000.1", "10000000000000000000.1", "10000000000000000000100m"},
        BigCase{"-10.000000000000000001E", "-10000000000000000001", "-10000000000000000001"},
        BigCase{"10.000000000000000001E", "10000000000000000001", "10000000000000000001"},
        BigCase{"-10000000000000000001", "-10000000000000000001", ""},
        BigCase{"10000000000000000001", "10000000000000000001", ""},
        // min/max int64 - 1
        BigCase{"-9223372036854775809", "-9223372036854775809", ""}, BigCase{"9223372036854775806", "9223372036854775806", ""},
        BigCase{"-9223372036854775809.0", "-9223372036854775809", "-9223372036854775809"},
        BigCase{"9223372036854775806.0", "9223372036854775806", "9223372036854775806"},
        BigCase{"-9223372036854775809000m", "-9223372036854775809", "-9223372036854775809"},
        BigCase{"9223372036854775806000m", "9223372036854775806", "9223372036854775806"},
        BigCase{"-9223372036854775809.1", "-9223372036854775809.1", "-9223372036854775809100m"},
        BigCase{"9223372036854775806.1", "9223372036854775806.1", "9223372036854775806100m"},
        // min/max int64
        BigCase{"-9223372036854775808", "-9223372036854775808", ""}, BigCase{"9223372036854775807", "9223372036854775807", ""},
        BigCase{"-9223372036854775808.0", "-9223372036854775808", "-9223372036854775808"},
        BigCase{"9223372036854775807.0", "9223372036854775807", "9223372036854775807"},
        BigCase{"-9223372036854775808000m", "-9223372036854775808", "-9223372036854775808"},
        BigCase{"9223372036854775807000m", "9223372036854775807", "9223372036854775807"},
        BigCase{"-9223372036854775808.1", "-9223372036854775808.1", "-9223372036854775808100m"},
        BigCase{"9223372036854775807.1", "9223372036854775807.1", "9223372036854775807100m"},
        // min/max int64 + 1
        BigCase{"-9223372036854775807", "-9223372036854775807", ""}, BigCase{"9223372036854775808", "9223372036854775808", ""},
        BigCase{"-9223372036854775807.0", "-9223372036854775807", "-9223372036854775807"},
        BigCase{"9223372036854775808.0", "9223372036854775808", "9223372036854775808"},
        BigCase{"-9223372036854775807000m", "-9223372036854775807", "-9223372036854775807"},
        BigCase{"9223372036854775808000m", "9223372036854775808", "9223372036854775808"},
        BigCase{"-9223372036854775807.1", "-9223372036854775807.1", "-9223372036854775807100m"},
        BigCase{"9223372036854775808.1", "9223372036854775808.1", "9223372036854775808100m"}));

// The exact values above, checked against digits written out by hand (not via parse).
TEST(ApimachineryQuantity, ValuesAroundTwoToTheSixtyThreeAreExact) {
  EXPECT_GT(q("9223372036854775808"), q("9223372036854775807"));
  EXPECT_LT(q("-9223372036854775809"), q("-9223372036854775808"));
  EXPECT_EQ(q("10E") - q("1E") * 9, q("1E"));
  EXPECT_EQ(q("9223372036854775808.1") - q("9223372036854775808"), q("100m"));
  EXPECT_EQ(q("1e100").to_string(), "10e99");
  EXPECT_EQ((q("1e100") - q("1e100")).to_string(), "0");
}

// TestMustParseNearMaxInt64
TEST(ApimachineryQuantity, MustParseNearMaxInt64) {
  EXPECT_EQ(q("9223372036854775807").to_string(), "9223372036854775807");
  EXPECT_EQ(q("9223372036854775806").to_string(), "9223372036854775806");
  EXPECT_EQ(q("9223372036854775808").to_string(), "9223372036854775808");
}

// --- TestInterpretExponentInt32Bounds (through parse) -------------------------------------

TEST(ApimachineryQuantity, ExponentsWithinTheInt32Scale) {
  for (const char* ok : {"e14", "E2147483647", "E-2147483647"}) EXPECT_TRUE(Quantity::parse(std::string("1") + ok)) << ok;
  for (const char* bad : {"E2147483648", "E-2147483648", "E4294967297", "E8589934592", "E9223372036854775807",
                          "E9223372036854775808", "E6024865272343"}) {
    EXPECT_FALSE(Quantity::parse(std::string("1") + bad)) << bad;
  }
  EXPECT_EQ(q("1E2147483647").to_string(), "10e2147483646");
  EXPECT_GT(q("1E2147483647"), q("9E2147483646"));
  EXPECT_EQ(q("1E-2147483647").to_string(), "1e-9");
}

// --- TestQuantityCmp ----------------------------------------------------------------------

TEST(ApimachineryQuantity, Cmp) {
  EXPECT_EQ(q("0") <=> q("0"), std::strong_ordering::equal);
  EXPECT_EQ(q("100m") <=> q("50m"), std::strong_ordering::greater);
  EXPECT_EQ(q("50m") <=> q("100m"), std::strong_ordering::less);
  EXPECT_EQ(q("10000T") <=> q("100Gi"), std::strong_ordering::greater);
}

// TestQuantityCmpInt64AndDec, the rows a parsed value can hold.
TEST(ApimachineryQuantity, CmpInt64AndDec) {
  struct Row {
    const char *a, *b;
    std::strong_ordering cmp;
  };
  const Row rows[] = {
      {"901e-2", "901e-2", std::strong_ordering::equal}, {"90e-1", "901e-2", std::strong_ordering::less},
      {"901e-2", "900e-2", std::strong_ordering::greater}, {"0", "0", std::strong_ordering::equal},
      {"0e1", "0e-1", std::strong_ordering::equal}, {"0e-1", "0e1", std::strong_ordering::equal},
      {"800e-3", "1", std::strong_ordering::less}, {"800e-3", "79e-2", std::strong_ordering::greater},
      {"9223372036854775807", "1e-1", std::strong_ordering::greater},
      {"9223372036854775807e1", "1", std::strong_ordering::greater},
      {"9223372036854775807e1", "1e1", std::strong_ordering::greater},
      {"9223372036854775807e1", "0e1", std::strong_ordering::greater},
      {"9223372036854775807e-16", "1e3", std::strong_ordering::less},
      {"-9223372036854775808", "0", std::strong_ordering::less},
      {"-9223372036854775808e-18", "-1", std::strong_ordering::less},
      {"-9223372036854775808e-19", "-1", std::strong_ordering::greater},
      {"1000000000000000000e-17", "1e1", std::strong_ordering::equal},
      {"1000000000000000000e-17", "-10", std::strong_ordering::greater},
      {"-1000000000000000000e-17", "-10", std::strong_ordering::equal},
      {"1000000000000000000e-17", "1", std::strong_ordering::greater},
      {"1000000000000000001e-17", "1e1", std::strong_ordering::greater},
  };
  for (const auto& row : rows) {
    EXPECT_EQ(q(row.a) <=> q(row.b), row.cmp) << row.a << " vs " << row.b;
    EXPECT_EQ(q(row.b) <=> q(row.a), 0 <=> row.cmp) << row.b << " vs " << row.a;
  }
}

// --- TestQuantityRoundUp, TestQuantityNeg -------------------------------------------------

TEST(ApimachineryQuantity, RoundUp) {
  struct Row {
    const char* in;
    int scale;
    const char* expect;
  };
  const Row rows[] = {{"9.01", -3, "9.01"}, {"9.01", -2, "9.01"}, {"9.01", -1, "9.1"}, {"9.01", 0, "10"},
                      {"9.01", 1, "10"},    {"9.01", 2, "100"},   {"-9.01", -3, "-9.01"}, {"-9.01", -2, "-9.01"},
                      {"-9.01", -1, "-9.1"}, {"-9.01", 0, "-10"}, {"-9.01", 1, "-10"},  {"-9.01", 2, "-100"}};
  for (const auto& row : rows) {
    EXPECT_EQ(q(row.in).rounded_up(row.scale), q(row.expect)) << row.in << " at " << row.scale;
  }
  // The same through the exact path, far beyond int64.
  EXPECT_EQ(q("12000000000000000000.01").rounded_up(0), q("12000000000000000001"));
  EXPECT_EQ(q("-12000000000000000000.01").rounded_up(-1), q("-12000000000000000000.1"));
}

TEST(ApimachineryQuantity, Neg) {
  EXPECT_EQ((Quantity() - dec("901", -2, F::DecimalSI)).to_string(), "-9010m");
  EXPECT_EQ((Quantity() - dec("10", 0, F::BinarySI)), dec("-10", 0, F::BinarySI));
  EXPECT_EQ((Quantity() - dec("-10", 0, F::BinarySI)), dec("10", 0, F::BinarySI));
}

// --- TestMilliNewSet, TestNewSet, TestNewScaledSet, TestScaledValue ------------------------

TEST(ApimachineryQuantity, MilliNewSet) {
  EXPECT_EQ(Quantity::from_milli(1).to_string(), "1m");
  EXPECT_EQ(Quantity::from_milli(1000).to_string(), "1");
  EXPECT_EQ(Quantity::from_milli(1234000).to_string(), "1234");
  EXPECT_EQ(Quantity::from_milli(1024, F::BinarySI).to_string(), "1024m");
  EXPECT_EQ(Quantity::from_milli(1000000, F::DecimalExponent).to_string(), "1e3");
  EXPECT_EQ(Quantity::from_milli(1024 * 1024, F::BinarySI).to_string(), "1048576m");
  for (int64_t milli : {int64_t{1}, int64_t{1000}, int64_t{1234000}}) {
    EXPECT_EQ(q(Quantity::from_milli(milli).to_string()).milli_value(), milli);
  }
}

TEST(ApimachineryQuantity, NewSet) {
  EXPECT_EQ(Quantity::from_int(1).to_string(), "1");
  EXPECT_EQ(Quantity::from_int(1000).to_string(), "1k");
  EXPECT_EQ(Quantity::from_int(1234000).to_string(), "1234k");
  EXPECT_EQ(Quantity::from_int(1024, F::BinarySI).to_string(), "1Ki");
  EXPECT_EQ(Quantity::from_int(1000000, F::DecimalExponent).to_string(), "1e6");
  EXPECT_EQ(Quantity::from_int(1024 * 1024, F::BinarySI).to_string(), "1Mi");
  for (int64_t value : {int64_t{1}, int64_t{1000}, int64_t{1234000}, int64_t{1024}, int64_t{1024 * 1024}}) {
    EXPECT_EQ(q(Quantity::from_int(value, F::BinarySI).to_string()).value(), value);
  }
}

TEST(ApimachineryQuantity, NewScaledSet) {
  struct Row {
    const char* value;
    int scale;
    const char* expect;
  };
  const Row rows[] = {{"1", -9, "1n"}, {"1000", -9, "1u"}, {"1", -6, "1u"}, {"1000", -6, "1m"}, {"1", -3, "1m"},
                      {"1000", -3, "1"}, {"1", 0, "1"},     {"0", -9, "0"},  {"0", -6, "0"},     {"0", -3, "0"},
                      {"0", 0, "0"}};
  for (const auto& row : rows) EXPECT_EQ(dec(row.value, row.scale, F::DecimalSI).to_string(), row.expect);
}

TEST(ApimachineryQuantity, ScaledValue) {
  // NewScaledQuantity(1, from).ScaledValue(to) for the scales our API exposes (milli, units).
  EXPECT_EQ(q("1n").milli_value(), 1);
  EXPECT_EQ(q("1n").value(), 1);
  EXPECT_EQ(q("1u").milli_value(), 1);
  EXPECT_EQ(q("1u").value(), 1);
  EXPECT_EQ(q("1m").milli_value(), 1);
  EXPECT_EQ(q("1m").value(), 1);
  EXPECT_EQ(q("1").milli_value(), 1000);
  EXPECT_EQ(q("1").value(), 1);
}

// --- TestNegativeValueRoundsAwayFromZero ---------------------------------------------------

TEST(ApimachineryQuantity, NegativeValueRoundsAwayFromZero) {
  struct Row {
    const char* input;
    int64_t value, milli;
  };
  const Row rows[] = {{"-.484785E-7466", -1, -1}, {".484785E-7466", 1, 1},   {"-.484785E-1", -1, -49},
                      {".484785E-1", 1, 49},      {"-0.0005", -1, -1},       {"0.0005", 1, 1},
                      {"-1500m", -2, -1500},      {"1500m", 2, 1500},        {"-9.5000000001Gi", -10200547329, -10200547328108},
                      {"9.5000000001Gi", 10200547329, 10200547328108},      {"-1", -1, -1000},
                      {"1", 1, 1000},             {"0", 0, 0}};
  for (const auto& row : rows) {
    EXPECT_EQ(q(row.input).value(), row.value) << row.input;
    EXPECT_EQ(q(row.input).milli_value(), row.milli) << row.input;
  }
}

// --- TestAdd, TestSub, TestMul ------------------------------------------------------------

TEST(ApimachineryQuantity, Add) {
  EXPECT_EQ(dec("10", 0, F::DecimalSI) + dec("1", 1, F::DecimalSI), q("20"));
  EXPECT_EQ(dec("10", 0, F::DecimalSI) + dec("1", 0, F::BinarySI), q("11"));
  EXPECT_EQ(dec("10", 0, F::BinarySI) + dec("1", 0, F::DecimalSI), q("11"));
  EXPECT_EQ(Quantity() + dec("50", 0, F::DecimalSI), q("50"));
  EXPECT_EQ(dec("50", 0, F::DecimalSI) + Quantity(), q("50"));
  EXPECT_EQ(Quantity() + Quantity(), q("0"));
}

TEST(ApimachineryQuantity, Sub) {
  EXPECT_EQ(dec("10", 0, F::DecimalSI) - dec("1", 1, F::DecimalSI), q("0"));
  EXPECT_EQ(dec("10", 0, F::DecimalSI) - dec("1", 0, F::BinarySI), q("9"));
  EXPECT_EQ(dec("10", 0, F::BinarySI) - dec("1", 0, F::DecimalSI), q("9"));
  EXPECT_EQ(Quantity() - dec("50", 0, F::DecimalSI), q("-50"));
  EXPECT_EQ(dec("50", 0, F::DecimalSI) - Quantity(), q("50"));
  EXPECT_EQ(Quantity() - Quantity(), q("0"));
}

TEST(ApimachineryQuantity, Mul) {
  const std::string most_positive = "9223372036854775807", most_negative = "-9223372036854775808";
  struct Row {
    std::string a;
    int64_t b;
    std::string expected;
  };
  const Row rows[] = {
      {"10", 10, "100"}, {"10", 1, "10"}, {"0", 50, "0"}, {"50", 0, "0"}, {"0", 0, "0"}, {"10", -10, "-100"},
      {"-10", 1, "-10"}, {"-50", 0, "0"}, {"-50", -50, "2500"}, {"0", -50, "0"},
      {most_positive, 0, "0"}, {most_positive, 1, most_positive}, {most_positive, -1, "-" + most_positive},
      {"4611686018427387903", 2, "9223372036854775806"}, {"-4611686018427387903", -2, "9223372036854775806"},
      {most_positive, 2, "18446744073709551614"}, {most_positive, 10, most_positive + "0"},
      {most_positive, -10, "-" + most_positive + "0"}, {most_negative, 0, "0"}, {most_negative, 1, most_negative},
      {most_negative, -1, "9223372036854775808"}, {"-4611686018427387904", 2, most_negative},
      {"4611686018427387904", -2, most_negative}, {most_negative, 2, "-18446744073709551616"},
      {most_negative, 10, most_negative + "0"}, {most_negative, -10, "92233720368547758080"},
  };
  for (const auto& row : rows) EXPECT_EQ(q(row.a) * row.b, q(row.expected)) << row.a << " * " << row.b;
  EXPECT_EQ(dec("10", 0, F::BinarySI) * 1, dec("10", 0, F::BinarySI));
  EXPECT_EQ(name((dec("10", 0, F::BinarySI) * -1).format()), name(F::BinarySI));
}

// --- TestNegAndSubAtMostNegative and neighbours --------------------------------------------

TEST(ApimachineryQuantity, NegAndSubAtMostNegative) {
  const Quantity most_negative = q("-9223372036854775808");
  EXPECT_EQ((Quantity() - most_negative).to_string(), "9223372036854775808");
  EXPECT_FALSE((Quantity() - most_negative).is_negative());
  EXPECT_EQ((q("1") - most_negative).to_string(), "9223372036854775809");
  EXPECT_EQ((Quantity() - q("-9223372036854775807")).to_string(), "9223372036854775807");
  EXPECT_EQ((Quantity() - q("-9223372036854775808m")).to_string(), "9223372036854775808m");
  EXPECT_EQ((q("1m") - q("-9223372036854775808m")).to_string(), "9223372036854775809m");
  // TestSubMostNegativeCrossScale
  EXPECT_EQ((q("1e1").with_format(F::DecimalSI) - most_negative).to_string(), "9223372036854775818");
  // TestZeroSubMostNegativeInheritsFormat: the zero receiver takes the subtrahend's format.
  const Quantity binary = Quantity() - most_negative.with_format(F::BinarySI);
  EXPECT_EQ(name(binary.format()), name(F::BinarySI));
  EXPECT_EQ(binary.to_string(), "8Ei");
  EXPECT_EQ(binary, q("9223372036854775808"));
}

TEST(ApimachineryQuantity, BinarySIPastEiArithmeticRoundTrip) {
  const Quantity big = q("1Ei") * 1024;  // 2^70
  EXPECT_EQ(big.to_string(), "1180591620717411303424");
  EXPECT_EQ(q(big.to_string()), big);
}

TEST(ApimachineryQuantity, BinarySIZeroExponentString) {
  EXPECT_EQ(dec("2000", 0, F::BinarySI).to_string(), "2000");
  EXPECT_EQ(dec("-2000", 0, F::BinarySI).to_string(), "-2000");
}

TEST(ApimachineryQuantity, AddAndSubZeroPreserveSuffix) {
  for (const char* text : {"100m", "1Gi"}) {
    const Quantity value = q(text), zero = q("0");
    EXPECT_EQ((value + zero).to_string(), text);
    EXPECT_EQ((zero + value).to_string(), text);
    EXPECT_EQ((value - zero).to_string(), text);
    EXPECT_EQ((zero - value).to_string(), "-" + std::string(text));
  }
}

// --- TestQuantityAsApproximateFloat64 / AsFloat64Slow, reachable rows -----------------------

TEST(ApimachineryQuantity, AsFloat64) {
  EXPECT_EQ(q("9223372036854775807").as_double(), static_cast<double>(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(q("9Ei").as_double(), static_cast<double>(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(q("12E").as_double(), 1.2e19);
  EXPECT_EQ(q("12e500").as_double(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(q("-12e500").as_double(), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(q("2Ki").as_double(), 2048);
  EXPECT_EQ(q("1.1Ki").as_double(), 1126.4);
  EXPECT_EQ(q("1Mi").as_double(), 1.048576e+06);
  EXPECT_EQ(q("2Gi").as_double(), 2.147483648e+09);
  EXPECT_EQ(q("0e500").as_double(), 0.0);
}

}  // namespace
}  // namespace sizeguard
