// Quantity semantics follow k8s.io/apimachinery pkg/api/resource: what parses, how values
// round and cap, and the canonical string the apiserver writes back.
#include "kube/quantity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace sizeguard {
namespace {

Quantity q(std::string_view text) {
  std::string error;
  auto parsed = Quantity::parse(text, &error);
  EXPECT_TRUE(parsed.has_value()) << text << ": " << error;
  return parsed.value_or(Quantity{});
}

struct Canonical {
  std::string input;
  std::string canonical;
};

class QuantityCanonical : public testing::TestWithParam<Canonical> {};

TEST_P(QuantityCanonical, FormatsAsTheApiserver) {
  const auto& c = GetParam();
  const Quantity parsed = q(c.input);
  EXPECT_EQ(parsed.to_string(), c.canonical) << "input " << c.input;
  // The canonical form parses back to the same value and is a fixed point.
  const Quantity again = q(parsed.to_string());
  EXPECT_EQ(again, parsed);
  EXPECT_EQ(again.to_string(), c.canonical);
}

INSTANTIATE_TEST_SUITE_P(Forms, QuantityCanonical, testing::Values(
    // Zero in every family, and the apiserver's digit-less forms.
    Canonical{".", "0"}, Canonical{"-.", "0"}, Canonical{"+.", "0"}, Canonical{"-", "0"}, Canonical{"+", "0"},
    Canonical{"E-3", "0"}, Canonical{"Ki", "0"}, Canonical{"m", "0"}, Canonical{"e3", "0"}, Canonical{"Ti", "0"},
    Canonical{"0", "0"}, Canonical{"00", "0"}, Canonical{"0n", "0"}, Canonical{"0u", "0"},
    Canonical{"0m", "0"}, Canonical{"0k", "0"}, Canonical{"0Ki", "0"}, Canonical{"0Mi", "0"},
    Canonical{"0Ei", "0"}, Canonical{"0e3", "0"}, Canonical{"-0", "0"}, Canonical{"+0", "0"},
    Canonical{"0.0", "0"}, Canonical{".0", "0"}, Canonical{"0.", "0"}, Canonical{"0.000m", "0"},
    // Binary suffixes.
    Canonical{"1Ki", "1Ki"}, Canonical{"8Ki", "8Ki"}, Canonical{"7Mi", "7Mi"},
    Canonical{"6Gi", "6Gi"}, Canonical{"5Ti", "5Ti"}, Canonical{"4Pi", "4Pi"},
    Canonical{"3Ei", "3Ei"}, Canonical{"10Ti", "10Ti"}, Canonical{"100Ti", "100Ti"},
    Canonical{"1024Mi", "1Gi"}, Canonical{"1024Ki", "1Mi"}, Canonical{"307200Ki", "300Mi"},
    Canonical{"1025024Mi", "1001Gi"}, Canonical{"1024Gi", "1Ti"}, Canonical{"2048Ei", "9223372036854775807"},
    Canonical{"1.5Mi", "1536Ki"}, Canonical{"1.5Gi", "1536Mi"}, Canonical{"0.5Mi", "512Ki"},
    Canonical{"0.5Ki", "512"}, Canonical{"1Mi", "1Mi"}, Canonical{"1025Ki", "1025Ki"},
    Canonical{"100.035Ki", "102435840m"}, Canonical{"0.05Gi", "53687091200m"},
    Canonical{"0.025Ti", "27487790694400m"}, Canonical{"0.1Ki", "102400m"},
    Canonical{"0.000000000001Ki", "2n"}, Canonical{"1Ki", "1Ki"}, Canonical{"-1Ki", "-1Ki"},
    Canonical{"-1.5Mi", "-1536Ki"},

    // Decimal SI suffixes.
    Canonical{"5n", "5n"}, Canonical{"4u", "4u"}, Canonical{"3m", "3m"}, Canonical{"9", "9"},
    Canonical{"8k", "8k"}, Canonical{"50k", "50k"}, Canonical{"7M", "7M"}, Canonical{"6G", "6G"},
    Canonical{"5T", "5T"}, Canonical{"40T", "40T"}, Canonical{"300T", "300T"},
    Canonical{"2P", "2P"}, Canonical{"1E", "1E"}, Canonical{"1G", "1G"}, Canonical{"1000M", "1G"},
    Canonical{"0.001T", "1G"}, Canonical{"1000000k", "1G"}, Canonical{"1000000000", "1G"},
    Canonical{"1000u", "1m"}, Canonical{"80m", "80m"}, Canonical{"1.08", "1080m"},
    Canonical{"1080000000n", "1080m"}, Canonical{"1234567M", "1234567M"}, Canonical{"3k", "3k"},
    Canonical{"1025", "1025"}, Canonical{"2000m", "2"}, Canonical{"1500m", "1500m"},
    Canonical{"1.5", "1500m"}, Canonical{"500m", "500m"}, Canonical{"0.5", "500m"},
    Canonical{".5", "500m"}, Canonical{"+1", "1"}, Canonical{"+.5", "500m"}, Canonical{"-.5", "-500m"},
    Canonical{"100m", "100m"}, Canonical{"0.1", "100m"}, Canonical{"250m", "250m"},
    Canonical{"128974848", "128974848"}, Canonical{"129e6", "129e6"}, Canonical{"129M", "129M"},
    Canonical{"123Mi", "123Mi"}, Canonical{"100.035k", "100035"}, Canonical{"10.035M", "10035k"},
    Canonical{"9.01", "9010m"}, Canonical{"8.1k", "8100"}, Canonical{"7.123456M", "7123456"},
    Canonical{"6.987654321G", "6987654321"}, Canonical{"5.444T", "5444G"}, Canonical{"40.1T", "40100G"},
    Canonical{"300.2T", "300200G"}, Canonical{"2.5P", "2500T"}, Canonical{"1.01E", "1010P"},
    Canonical{"1n", "1n"}, Canonical{"80n", "80n"}, Canonical{"1080n", "1080n"}, Canonical{"1u", "1u"},
    Canonical{"80u", "80u"}, Canonical{"1080u", "1080u"}, Canonical{"10m", "10m"},
    Canonical{"1.", "1"}, Canonical{"1.G", "1G"}, Canonical{".001", "1m"}, Canonical{".0001k", "100m"},
    Canonical{"0.001", "1m"}, Canonical{"0.0005k", "500m"}, Canonical{"0.005", "5m"},
    Canonical{"0.00050k", "500m"}, Canonical{"0.00500", "5m"}, Canonical{"0.05000", "50m"},
    Canonical{"0.50000", "500m"}, Canonical{"000123", "123"}, Canonical{"-5m", "-5m"},
    Canonical{"-1", "-1"}, Canonical{"-100", "-100"}, Canonical{"-1000", "-1k"},
    Canonical{"12000", "12k"}, Canonical{"12001", "12001"}, Canonical{"1200", "1200"},
    Canonical{"0.012", "12m"}, Canonical{"1.0001", "1000100u"},
    // Decimal exponents keep their family.
    Canonical{"1e3", "1e3"}, Canonical{"1E-3", "1e-3"}, Canonical{"1E6", "1e6"},
    Canonical{"1e9", "1e9"}, Canonical{"1E12", "1e12"}, Canonical{"1e15", "1e15"},
    Canonical{"1E18", "1e18"}, Canonical{"1e14", "100e12"}, Canonical{"1e13", "10e12"},
    Canonical{"1.2e3", "1200"}, Canonical{"1.3E+6", "1300e3"}, Canonical{"1.40e9", "1400e6"},
    Canonical{"1.53E12", "1530e9"}, Canonical{"1.6e15", "1600e12"}, Canonical{"1.7E18", "1700e15"},
    Canonical{"0.5e0", "500e-3"}, Canonical{"0.5e-1", "50e-3"}, Canonical{"0.5e-2", "5e-3"},
    Canonical{".001e12", "1e9"}, Canonical{"0.001e0", "1e-3"}, Canonical{"1000e-12", "1e-9"},
    Canonical{"80e-3", "80e-3"}, Canonical{"300e6", "300e6"}, Canonical{"3e3", "3e3"},
    Canonical{"1e0", "1"}, Canonical{"1e+0", "1"}, Canonical{"1e-0", "1"}, Canonical{"5e1", "50"},
    Canonical{"5e2", "500"}, Canonical{"1e-9", "1e-9"}, Canonical{"-1e3", "-1e3"},
    // Rounding below a nano-unit is away from zero; above 2^63-1 only binary values are
    // capped, decimal ones stay exact (as the apiserver keeps them in inf.Dec).
    Canonical{"3.001n", "4n"}, Canonical{"1.1E-9", "2e-9"}, Canonical{"0.0000000001", "1n"},
    Canonical{"0.0000000005", "1n"}, Canonical{"0.00000000050", "1n"}, Canonical{"0.5e-9", "1e-9"},
    Canonical{"0.9n", "1n"}, Canonical{"0.00000012345", "124n"}, Canonical{"0.00000012354", "124n"},
    Canonical{"-0.1n", "-1n"}, Canonical{"1e-100", "1e-9"},
    Canonical{"9Ei", "9223372036854775807"}, Canonical{"9223372036854775807Ki", "9223372036854775807"},
    Canonical{"12E", "12E"}, Canonical{"1e100", "10e99"}, Canonical{"-12E", "-12E"},
    Canonical{"9223372036854775807", "9223372036854775807"}, Canonical{"-9Ei", "-9223372036854775807"},
    Canonical{"9223372036854775808", "9223372036854775808"}, Canonical{"1000E", "1e21"},
    Canonical{"99999999999999999999999999999999999999999999", "99999999999999999999999999999999999999999999"},
    Canonical{"99999999999999999999999999999999999999999999.5n", "100e33"},
    Canonical{"0.00000000000000000000000000000000000000000001", "1n"}));

class QuantityRejects : public testing::TestWithParam<std::string> {};

TEST_P(QuantityRejects, WithAMessage) {
  std::string error;
  EXPECT_FALSE(Quantity::parse(GetParam(), &error).has_value()) << GetParam();
  EXPECT_NE(error.find("invalid quantity"), std::string::npos) << error;
}

INSTANTIATE_TEST_SUITE_P(Malformed, QuantityRejects, testing::Values(
    "", "Pi", "Ei", "-.Ei", "E-10", ".e-12", "1.1.1", "1Qi", "1e", "1E+", "1e-", "1ee3", "1e1e1", "1+1",
    "1-1", "1 ", " 1", "1 Ki", "1ki", "1KI", "1kb", "1Kii", "1MiB", "1i", "1m3", "1Mi3", "1e3Ki",
    "1k3", "abc", "1..", "..1", "1,5", "1_000", "0x10", "1e1.5", "1e99999999999",
    "1e-99999999999", "1e9223372036854775808", "1e2147483648", "1E-2147483649", "1.5.Gi", "--1",
    "+-1", "1/2", "NaN", "Inf", "1\n", "١"));

TEST(Quantity, ErrorSaysWhatWasWrong) {
  std::string error;
  ASSERT_FALSE(Quantity::parse("1Qi", &error));
  EXPECT_NE(error.find("\"1Qi\""), std::string::npos) << error;
  ASSERT_FALSE(Quantity::parse("1e99999999999", &error));
  EXPECT_NE(error.find("exponent out of range"), std::string::npos) << error;
  ASSERT_FALSE(Quantity::parse("", &error));
  EXPECT_NE(error.find("empty"), std::string::npos) << error;
  ASSERT_FALSE(Quantity::parse("1ki", &error));
  EXPECT_NE(error.find("unknown suffix \"ki\""), std::string::npos) << error;
}

// Found by tests/fuzz: a binary value that is no multiple of 1024 is written without a
// suffix, as the apiserver writes it; that text reads back as DecimalSI, whose canonical
// form differs. Same value throughout, stable from the second round.
TEST(Quantity, BinaryValuesWithoutABinarySuffixBecomeDecimal) {
  const Quantity binary = q("62.5Ki");
  EXPECT_EQ(binary.to_string(), "64000");
  const Quantity decimal = q(binary.to_string());
  EXPECT_EQ(decimal, binary);
  EXPECT_EQ(decimal.to_string(), "64k");
  EXPECT_EQ(q(decimal.to_string()).to_string(), "64k");
}

TEST(Quantity, ExponentsAtTheEdgeOfInt32) {
  EXPECT_EQ(q("1e2147483647").to_string(), "10e2147483646");
  EXPECT_EQ(q("1e-2147483647").to_string(), "1e-9");
  EXPECT_FALSE(Quantity::parse("1e-2147483648"));  // -MinInt32 does not fit the apiserver's scale
  // Found by tests/fuzz: digits push the value's exponent past 2^31-1; its text keeps the
  // exponent the parser accepts and writes more digits, so it reads back.
  const Quantity beyond = q("100000000e2147483647");
  EXPECT_EQ(beyond.to_string(), "1000000000e2147483646");
  EXPECT_EQ(q(beyond.to_string()), beyond);
}

struct Equivalent {
  std::vector<std::string> forms;
};

class QuantityEquivalent : public testing::TestWithParam<Equivalent> {};

TEST_P(QuantityEquivalent, CompareEqualExactly) {
  const auto& forms = GetParam().forms;
  for (const auto& a : forms) {
    for (const auto& b : forms) {
      EXPECT_EQ(q(a), q(b)) << a << " vs " << b;
      EXPECT_EQ(q(a) <=> q(b), std::strong_ordering::equal);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Forms, QuantityEquivalent, testing::Values(
    Equivalent{{"1Gi", "1024Mi", "1048576Ki", "1073741824", "1.073741824G", "1073741824e0",
                "1073741.824k", "1073741824000m"}},
    Equivalent{{"500m", "0.5", ".5", "+0.5", "5e-1", "500000u", "500000000n", "0.0005k"}},
    Equivalent{{"2", "2000m", "2e0", "+2", "0.002k", "2.000"}},
    Equivalent{{"1k", "1000", "1e3", "1E3", "1000000m", "0.001M"}},
    Equivalent{{"0", "0m", "0Ki", "-0", "0e9", "0.000"}},
    Equivalent{{"1536Ki", "1.5Mi", "1572864", "1572.864k"}},
    Equivalent{{"-1.5", "-1500m", "-1.5e0"}},
    Equivalent{{"9223372036854775807", "8Ei", "9Ei", "9223372036854775807Ki"}},
    Equivalent{{"10E", "1e19", "10000000000000000000", "10000000000000000000000m", "0.01e21"}}));

struct Ordered {
  std::string smaller;
  std::string larger;
};

class QuantityOrdering : public testing::TestWithParam<Ordered> {};

TEST_P(QuantityOrdering, IsExact) {
  const auto& o = GetParam();
  EXPECT_LT(q(o.smaller), q(o.larger)) << o.smaller << " < " << o.larger;
  EXPECT_GT(q(o.larger), q(o.smaller));
  EXPECT_NE(q(o.larger), q(o.smaller));
}

INSTANTIATE_TEST_SUITE_P(Pairs, QuantityOrdering, testing::Values(
    Ordered{"1", "1.000000001"}, Ordered{"999999999n", "1"}, Ordered{"1G", "1Gi"},
    Ordered{"1Mi", "1.048577M"}, Ordered{"1048575", "1Mi"}, Ordered{"100m", "101m"},
    Ordered{"-1", "0"}, Ordered{"-2", "-1"}, Ordered{"-1Ki", "-1k"}, Ordered{"1n", "1u"},
    Ordered{"1u", "1m"}, Ordered{"1m", "1"}, Ordered{"1", "1k"}, Ordered{"1k", "1Ki"},
    Ordered{"1Ki", "1M"}, Ordered{"1M", "1Mi"}, Ordered{"1Mi", "1G"}, Ordered{"1Gi", "1T"},
    Ordered{"1T", "1Ti"}, Ordered{"1Ti", "1P"}, Ordered{"1P", "1Pi"}, Ordered{"1Pi", "1E"},
    Ordered{"1E", "1Ei"}, Ordered{"9223372036854775806", "9223372036854775807"},
    Ordered{"9Ei", "9223372036854775808"}, Ordered{"12E", "12.000000000000000000001E"}, Ordered{"-1e100", "-12E"},
    Ordered{"-1e100", "1n"}, Ordered{"1e100", "1e101"}, Ordered{"99999999999999999999", "1e20"},
    Ordered{"0.1", "0.30000000000000001"}, Ordered{"4095m", "4.096"}));

TEST(Quantity, ArithmeticIsExact) {
  EXPECT_EQ(q("0.1") + q("0.2"), q("0.3"));  // the classic floating-point trap
  EXPECT_EQ((q("0.1") + q("0.2")).to_string(), "300m");
  EXPECT_EQ(q("1Gi") - q("512Mi"), q("512Mi"));
  EXPECT_EQ((q("1Gi") - q("512Mi")).to_string(), "512Mi");  // keeps the left operand's format
  EXPECT_EQ(q("250m") * 4, q("1"));
  EXPECT_EQ((q("1Mi") * 1024).to_string(), "1Gi");
  EXPECT_EQ(q("1") * -3, q("-3"));
  EXPECT_EQ(q("1") * 0, q("0"));
  // Past 2^63-1 the results stay exact, as the apiserver's (no saturation, no wrap).
  EXPECT_EQ((q("4Ei") * 4).to_string(), "16Ei");
  EXPECT_EQ((q("4Ei") * -4).to_string(), "-16Ei");
  EXPECT_EQ((q("9223372036854775807") + q("1")).to_string(), "9223372036854775808");
  EXPECT_EQ((q("9223372036854775807") * std::numeric_limits<int64_t>::max()).to_string(),
            "85070591730234615847396907784232501249");
}

TEST(Quantity, RatiosOfHugeValuesDoNotOverflow) {
  EXPECT_DOUBLE_EQ(q("1e401").ratio_to(q("1e400")), 10.0);  // as_double() is inf for both
  EXPECT_DOUBLE_EQ(q("12E").ratio_to(q("6E")), 2.0);
  EXPECT_DOUBLE_EQ(q("-12E").ratio_to(q("4")), -3e18);
  EXPECT_DOUBLE_EQ(q("2").ratio_to(q("500m")), 4.0);
  EXPECT_EQ(q("1").ratio_to(q("1e400")), 0.0);
  EXPECT_EQ(q("1e400").ratio_to(q("0")), HUGE_VAL);
  EXPECT_TRUE(std::isnan(q("0").ratio_to(q("0"))));
}

TEST(Quantity, MilliAndUnitValuesRoundAwayFromZero) {
  EXPECT_EQ(q("1").milli_value(), 1000);
  EXPECT_EQ(q("250m").milli_value(), 250);
  EXPECT_EQ(q("1.5").milli_value(), 1500);
  EXPECT_EQ(q("1n").milli_value(), 1);
  EXPECT_EQ(q("1500u").milli_value(), 2);
  EXPECT_EQ(q("-1500u").milli_value(), -2);
  EXPECT_EQ(q("1Gi").value(), 1073741824);
  EXPECT_EQ(q("1500m").value(), 2);
  EXPECT_EQ(q("100m").value(), 1);
  EXPECT_EQ(q("-100m").value(), -1);
  EXPECT_EQ(q("0").value(), 0);
  EXPECT_EQ(q("1Ei").value(), int64_t{1} << 60);
  EXPECT_EQ(q("8Ei").value(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(q("8Ei").milli_value(), std::numeric_limits<int64_t>::max());
  EXPECT_DOUBLE_EQ(q("1.5Gi").as_double(), 1.5 * 1024 * 1024 * 1024);
}

TEST(Quantity, Constructors) {
  EXPECT_EQ(Quantity::from_milli(1500).to_string(), "1500m");
  EXPECT_EQ(Quantity::from_milli(2000).to_string(), "2");
  EXPECT_EQ(Quantity::from_int(1073741824, Quantity::Format::BinarySI).to_string(), "1Gi");
  EXPECT_EQ(Quantity::from_int(1000, Quantity::Format::DecimalExponent).to_string(), "1e3");
  EXPECT_EQ(Quantity::from_int(0).to_string(), "0");
  EXPECT_TRUE(Quantity().is_zero());
  EXPECT_TRUE(q("-1m").is_negative());
}

TEST(Quantity, FormatFollowsTheSuffix) {
  EXPECT_EQ(q("1Gi").format(), Quantity::Format::BinarySI);
  EXPECT_EQ(q("1G").format(), Quantity::Format::DecimalSI);
  EXPECT_EQ(q("1").format(), Quantity::Format::DecimalSI);
  EXPECT_EQ(q("1e3").format(), Quantity::Format::DecimalExponent);
  EXPECT_EQ(q("1E").format(), Quantity::Format::DecimalSI);  // "E" alone is exa, not an exponent
}

// Every suffix times a spread of mantissas: the canonical form round-trips exactly and
// compares equal to the value it came from.
TEST(Quantity, CanonicalRoundTripAcrossSuffixes) {
  const char* suffixes[] = {"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi",
                            "Ti", "Pi", "Ei", "e0", "e3", "e-3", "e6", "E-9", "e+2"};
  const char* mantissas[] = {"1", "7", "10", "999", "1000", "1024", "1.5", "0.25", ".125",
                             "3.14159", "1000000", "0.001", "-2", "-0.5", "65536", "123456789"};
  int checked = 0;
  for (const char* suffix : suffixes) {
    for (const char* mantissa : mantissas) {
      const std::string text = std::string(mantissa) + suffix;
      std::string error;
      auto parsed = Quantity::parse(text, &error);
      ASSERT_TRUE(parsed) << text << ": " << error;
      auto reparsed = Quantity::parse(parsed->to_string(), &error);
      ASSERT_TRUE(reparsed) << parsed->to_string() << ": " << error;
      EXPECT_EQ(*reparsed, *parsed) << text << " -> " << parsed->to_string();
      EXPECT_EQ(reparsed->to_string(), parsed->to_string()) << text;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 22 * 16);
}

}  // namespace
}  // namespace sizeguard

namespace sizeguard {
namespace {

TEST(Quantity, RoundedToAStepAPersonWouldWrite) {
  EXPECT_EQ(Quantity::rounded_to_step(0.30000000000000004, "cpu").to_string(), "300m");  // not 301m
  EXPECT_EQ(Quantity::rounded_to_step(0.3001, "cpu").to_string(), "301m");
  EXPECT_EQ(Quantity::rounded_to_step(0.3009, "cpu", /*up=*/false).to_string(), "300m");
  EXPECT_EQ(Quantity::rounded_to_step(1.5 * 1024 * 1024 * 1024, "memory").to_string(), "1536Mi");
  EXPECT_EQ(Quantity::rounded_to_step(1024.0 * 1024 * 1024 + 1, "memory").to_string(), "1025Mi");
  EXPECT_EQ(Quantity::rounded_to_step(1024.0 * 1024 * 1024 + 1, "memory", false).to_string(), "1Gi");
  EXPECT_EQ(Quantity::rounded_to_step(3.5 * 1024 * 1024, "ephemeral-storage").format(), Quantity::Format::BinarySI);
}

}  // namespace
}  // namespace sizeguard
