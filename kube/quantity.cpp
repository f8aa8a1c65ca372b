#include "kube/quantity.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace sizeguard {
namespace {

using i128 = Int128;

constexpr int64_t kMaxUnits = std::numeric_limits<int64_t>::max();  // the apiserver's cap
constexpr i128 kNanoPerUnit = 1'000'000'000;
constexpr i128 kMaxNano = static_cast<i128>(kMaxUnits) * kNanoPerUnit;
// kMaxNano has 28 decimal digits; anything longer is certainly above the cap.
constexpr size_t kMaxNanoDigits = 28;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_suffix_char(char c) {
  return std::string_view("eEinumkKMGTP").find(c) != std::string_view::npos;
}

struct Suffix {
  int base = 10;        // 10 or 2
  int64_t exponent = 0;  // power of `base`
  Quantity::Format format = Quantity::Format::DecimalSI;
};

std::optional<Suffix> interpret_suffix(std::string_view s, std::string* error) {
  using F = Quantity::Format;
  struct Entry {
    std::string_view text;
    Suffix suffix;
  };
  static constexpr Entry kTable[] = {
      {"", {10, 0, F::DecimalSI}},    {"n", {10, -9, F::DecimalSI}}, {"u", {10, -6, F::DecimalSI}},
      {"m", {10, -3, F::DecimalSI}},  {"k", {10, 3, F::DecimalSI}},  {"M", {10, 6, F::DecimalSI}},
      {"G", {10, 9, F::DecimalSI}},   {"T", {10, 12, F::DecimalSI}}, {"P", {10, 15, F::DecimalSI}},
      {"E", {10, 18, F::DecimalSI}},  {"Ki", {2, 10, F::BinarySI}},  {"Mi", {2, 20, F::BinarySI}},
      {"Gi", {2, 30, F::BinarySI}},   {"Ti", {2, 40, F::BinarySI}},  {"Pi", {2, 50, F::BinarySI}},
      {"Ei", {2, 60, F::BinarySI}},
  };
  for (const auto& entry : kTable) {
    if (entry.text == s) return entry.suffix;
  }
  if (s.size() > 1 && (s[0] == 'e' || s[0] == 'E')) {
    std::string_view digits = s.substr(1);
    if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);  // from_chars rejects '+'
    int64_t exponent = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), exponent);
    if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty()) {
      if (exponent < std::numeric_limits<int32_t>::min() ||
          exponent > std::numeric_limits<int32_t>::max()) {
        if (error) *error = "exponent out of range";
        return std::nullopt;
      }
      return Suffix{10, exponent, F::DecimalExponent};
    }
    if (ec == std::errc::result_out_of_range) {
      if (error) *error = "exponent out of range";
      return std::nullopt;
    }
  }
  if (error) *error = "unknown suffix \"" + std::string(s) + "\"";
  return std::nullopt;
}

// Decimal digit string times two, in place (for binary suffixes).
void double_digits(std::string& digits) {
  int carry = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = (*it - '0') * 2 + carry;
    *it = static_cast<char>('0' + d % 10);
    carry = d / 10;
  }
  if (carry) digits.insert(digits.begin(), '1');
}

i128 digits_to_int(std::string_view digits) {
  i128 value = 0;
  for (char c : digits) value = value * 10 + (c - '0');
  return value;
}

// Magnitude in nano-units of `digits` x 10^exponent, rounded up, capped at kMaxNano.
i128 to_nano(std::string digits, int64_t exponent) {
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size()));
  if (digits.empty()) return 0;
  const int64_t integer_digits = static_cast<int64_t>(digits.size()) + exponent;
  if (integer_digits > static_cast<int64_t>(kMaxNanoDigits)) return kMaxNano;
  if (integer_digits <= 0) return 1;  // non-zero but below 1n: round up
  std::string_view integer_part(digits.data(), std::min<size_t>(digits.size(), integer_digits));
  std::string_view fraction(digits.data() + integer_part.size(), digits.size() - integer_part.size());
  i128 value = digits_to_int(integer_part);
  for (int64_t i = static_cast<int64_t>(integer_part.size()); i < integer_digits; ++i) value *= 10;
  if (fraction.find_first_not_of('0') != std::string_view::npos) value += 1;
  return std::min(value, kMaxNano);
}

std::string int_to_string(i128 value) {
  if (value == 0) return "0";
  const bool negative = value < 0;
  if (negative) value = -value;
  std::string out;
  while (value > 0) {
    out.push_back(static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  }
  if (negative) out.push_back('-');
  std::reverse(out.begin(), out.end());
  return out;
}

i128 saturate(i128 nano) { return std::clamp(nano, -kMaxNano, kMaxNano); }

// Rounds a nano amount to a multiple of `unit` nano, away from zero (as MilliValue/Value).
int64_t scaled_away_from_zero(i128 nano, i128 unit) {
  const i128 magnitude = nano < 0 ? -nano : nano;
  i128 result = magnitude / unit + (magnitude % unit != 0 ? 1 : 0);
  if (result > kMaxUnits) result = kMaxUnits;  // only reachable for milli of huge values
  return static_cast<int64_t>(nano < 0 ? -result : result);
}

std::string decimal_suffix(int exponent, Quantity::Format format) {
  if (exponent == 0) return "";
  if (format == Quantity::Format::DecimalExponent) return "e" + std::to_string(exponent);
  switch (exponent) {
    case -9: return "n";
    case -6: return "u";
    case -3: return "m";
    case 3: return "k";
    case 6: return "M";
    case 9: return "G";
    case 12: return "T";
    case 15: return "P";
    case 18: return "E";
    default: return "e" + std::to_string(exponent);  // unreachable within the caps
  }
}

}  // namespace

std::optional<Quantity> Quantity::parse(std::string_view text, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<Quantity> {
    if (error) *error = "invalid quantity \"" + std::string(text) + "\": " + std::move(message);
    return std::nullopt;
  };
  if (text.empty()) return fail("empty");

  size_t pos = 0;
  bool negative = false;
  if (text[0] == '-' || text[0] == '+') {
    negative = text[0] == '-';
    ++pos;
  }
  const size_t integer_start = pos;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  std::string digits(text.substr(integer_start, pos - integer_start));
  size_t fraction_digits = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    const size_t fraction_start = pos;
    while (pos < text.size() && is_digit(text[pos])) ++pos;
    fraction_digits = pos - fraction_start;
    digits += text.substr(fraction_start, fraction_digits);
  }
  if (digits.empty()) return fail("expected a number");

  // Suffix: letters from the suffix alphabet, then an optional signed integer exponent.
  const size_t suffix_start = pos;
  while (pos < text.size() && is_suffix_char(text[pos])) ++pos;
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) ++pos;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  if (pos != text.size()) {
    return fail("unexpected \"" + std::string(text.substr(pos, 1)) + "\" at offset " +
                std::to_string(pos));
  }
  std::string suffix_error;
  auto suffix = interpret_suffix(text.substr(suffix_start), &suffix_error);
  if (!suffix) return fail(suffix_error);

  int64_t exponent = 9 - static_cast<int64_t>(fraction_digits);  // nano-units
  if (suffix->base == 10) {
    exponent += suffix->exponent;
  } else {
    for (int64_t i = 0; i < suffix->exponent; ++i) double_digits(digits);
  }
  const i128 magnitude = to_nano(std::move(digits), exponent);
  return from_nano(negative ? -magnitude : magnitude, suffix->format);
}

Quantity Quantity::from_nano(Int128 nano, Format format) {
  Quantity q;
  q.nano_ = saturate(nano);
  q.format_ = format;
  return q;
}

Quantity Quantity::from_milli(int64_t milli, Format format) {
  return from_nano(static_cast<i128>(milli) * 1'000'000, format);
}

Quantity Quantity::from_int(int64_t value, Format format) {
  return from_nano(static_cast<i128>(value) * kNanoPerUnit, format);
}

Quantity Quantity::rounded_to_step(double amount, std::string_view resource, bool up) {
  // The epsilon keeps an amount computed as 0.30000000000000004 cores at 300m.
  auto round = [up](double x) { return static_cast<int64_t>(up ? std::ceil(x - 1e-9) : std::floor(x + 1e-9)); };
  if (resource == "cpu") return from_milli(round(amount * 1000));
  return from_int(round(amount / (1024.0 * 1024.0)) * (1 << 20), Format::BinarySI);
}

std::string Quantity::to_string() const {
  if (nano_ == 0) return "0";
  Format format = format_;
  if (format == Format::BinarySI) {
    // Small or fractional binary values would need rounding: the apiserver writes them as
    // DecimalSI instead.
    const bool small = nano_ > -1024 * kNanoPerUnit && nano_ < 1024 * kNanoPerUnit;
    if (small || nano_ % kNanoPerUnit != 0) format = Format::DecimalSI;
  }
  if (format == Format::BinarySI) {
    i128 units = nano_ / kNanoPerUnit;
    int exponent = 0;
    while (exponent < 60 && units % 1024 == 0) {
      units /= 1024;
      exponent += 10;
    }
    static constexpr std::string_view kBinary[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    return int_to_string(units) + std::string(kBinary[exponent / 10]);
  }
  i128 mantissa = nano_;
  int exponent = -9;
  while (mantissa % 10 == 0) {
    mantissa /= 10;
    ++exponent;
  }
  // Lower the exponent to a multiple of three (rounding toward -infinity).
  while (((exponent % 3) + 3) % 3 != 0) {
    mantissa *= 10;
    --exponent;
  }
  return int_to_string(mantissa) + decimal_suffix(exponent, format);
}

int64_t Quantity::milli_value() const { return scaled_away_from_zero(nano_, 1'000'000); }
int64_t Quantity::value() const { return scaled_away_from_zero(nano_, kNanoPerUnit); }
double Quantity::as_double() const { return static_cast<double>(nano_) / 1e9; }

Quantity Quantity::operator+(const Quantity& other) const { return from_nano(nano_ + other.nano_, format_); }
Quantity Quantity::operator-(const Quantity& other) const { return from_nano(nano_ - other.nano_, format_); }
Quantity Quantity::operator*(int64_t factor) const {
  // |nano_| < 2^94 and |factor| < 2^63 could overflow 127 bits: saturate first.
  const i128 limit = kMaxNano / (factor == 0 ? 1 : (factor < 0 ? -static_cast<i128>(factor) : factor));
  if (nano_ > limit || nano_ < -limit) {
    return from_nano((nano_ < 0) != (factor < 0) ? -kMaxNano : kMaxNano, format_);
  }
  return from_nano(nano_ * factor, format_);
}

std::strong_ordering Quantity::operator<=>(const Quantity& other) const {
  if (nano_ < other.nano_) return std::strong_ordering::less;
  if (nano_ > other.nano_) return std::strong_ordering::greater;
  return std::strong_ordering::equal;
}

}  // namespace sizeguard
