#include "kube/quantity.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace sizeguard {
namespace quantity_detail {

// +/- digits x 10^exponent units. Normalised: no leading or trailing zeros; zero has no
// digits. A Quantity holds one only for values beyond +/- (2^63-1) units, which the
// apiserver keeps in arbitrary precision (inf.Dec) too.
struct Decimal {
  bool negative = false;
  std::string digits;
  int64_t exponent = 0;

  bool is_zero() const { return digits.empty(); }
  // The power of ten just above the leading digit.
  int64_t top() const { return static_cast<int64_t>(digits.size()) + exponent; }
};

}  // namespace quantity_detail

namespace {

using i128 = Int128;
__extension__ typedef unsigned __int128 u128;
using quantity_detail::Decimal;

constexpr int64_t kMaxUnits = std::numeric_limits<int64_t>::max();  // the binary-suffix cap
constexpr i128 kNanoPerUnit = 1'000'000'000;
constexpr i128 kMaxNano = static_cast<i128>(kMaxUnits) * kNanoPerUnit;
// The apiserver accepts exponents in [-(2^31-1), 2^31-1] (its scale is a negated int32).
constexpr int64_t kMaxExponent = std::numeric_limits<int32_t>::max();
// A sum keeps at most this many digits (see operator+ in the header).
constexpr int64_t kMaxSumDigits = 1'000'000;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_suffix_char(char c) {
  return std::string_view("eEinumkKMGTP").find(c) != std::string_view::npos;
}

i128 pow10(int n) {
  i128 p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

struct Suffix {
  int base = 10;         // 10 or 2
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
      if (exponent < -kMaxExponent || exponent > kMaxExponent) {
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

// --- Decimal digit-string arithmetic (only for values beyond the Int128 fast path) ---

void normalize(Decimal& d) {
  const size_t first = d.digits.find_first_not_of('0');
  if (first == std::string::npos) {
    d = Decimal{};
    return;
  }
  d.digits.erase(0, first);
  const size_t last = d.digits.find_last_not_of('0');
  d.exponent += static_cast<int64_t>(d.digits.size() - 1 - last);
  d.digits.resize(last + 1);
}

void increment(std::string& digits) {
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (*it != '9') {
      ++*it;
      return;
    }
    *it = '0';
  }
  digits.insert(digits.begin(), '1');
}

// Rounds a normalised non-zero decimal away from zero to a multiple of 10^exponent.
void round_up_to(Decimal& d, int64_t exponent) {
  if (d.is_zero() || d.exponent >= exponent) return;
  const int64_t drop = exponent - d.exponent;
  if (drop >= static_cast<int64_t>(d.digits.size())) {
    d.digits = "1";
  } else {
    d.digits.resize(d.digits.size() - static_cast<size_t>(drop));  // dropped part ends in non-zero
    increment(d.digits);
  }
  d.exponent = exponent;
  normalize(d);
}

void multiply(std::string& digits, uint64_t factor) {
  u128 carry = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    carry += static_cast<u128>(*it - '0') * factor;
    *it = static_cast<char>('0' + static_cast<int>(carry % 10));
    carry /= 10;
  }
  std::string head;
  while (carry > 0) {
    head.push_back(static_cast<char>('0' + static_cast<int>(carry % 10)));
    carry /= 10;
  }
  std::reverse(head.begin(), head.end());
  digits.insert(0, head);
}

// Divides in place when `divisor` divides exactly; leaves the digits alone otherwise.
bool divide_exactly(std::string& digits, unsigned divisor) {
  std::string quotient;
  uint64_t remainder = 0;
  for (char c : digits) {
    remainder = remainder * 10 + static_cast<uint64_t>(c - '0');
    if (!quotient.empty() || remainder >= divisor) quotient.push_back(static_cast<char>('0' + remainder / divisor));
    remainder %= divisor;
  }
  if (remainder != 0) return false;
  digits = quotient.empty() ? "0" : quotient;
  return true;
}

// Magnitudes of two normalised non-zero decimals.
std::strong_ordering compare_magnitude(const Decimal& a, const Decimal& b) {
  if (a.top() != b.top()) return a.top() <=> b.top();
  // Same leading power: digits line up from the left; a longer tail is non-zero, so larger.
  const int c = a.digits.compare(b.digits);
  return c < 0 ? std::strong_ordering::less : c > 0 ? std::strong_ordering::greater : std::strong_ordering::equal;
}

// Same-exponent magnitudes, right-aligned.
std::string add_digits(const std::string& a, const std::string& b) {
  std::string out;
  int carry = 0;
  for (size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
    int sum = carry;
    if (i < a.size()) sum += a[a.size() - 1 - i] - '0';
    if (i < b.size()) sum += b[b.size() - 1 - i] - '0';
    out.push_back(static_cast<char>('0' + sum % 10));
    carry = sum / 10;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::string subtract_digits(const std::string& larger, const std::string& smaller) {
  std::string out;
  int borrow = 0;
  for (size_t i = 0; i < larger.size(); ++i) {
    int d = larger[larger.size() - 1 - i] - '0' - borrow;
    if (i < smaller.size()) d -= smaller[smaller.size() - 1 - i] - '0';
    borrow = d < 0 ? 1 : 0;
    out.push_back(static_cast<char>('0' + d + 10 * borrow));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Decimal add(Decimal a, Decimal b) {
  if (a.is_zero()) return b;
  if (b.is_zero()) return a;
  const int64_t top = std::max(a.top(), b.top()) + 1;
  if (top - std::min(a.exponent, b.exponent) > kMaxSumDigits) {
    round_up_to(a, top - kMaxSumDigits);
    round_up_to(b, top - kMaxSumDigits);
  }
  const int64_t low = std::min(a.exponent, b.exponent);
  a.digits.append(static_cast<size_t>(a.exponent - low), '0');
  b.digits.append(static_cast<size_t>(b.exponent - low), '0');
  Decimal out;
  out.exponent = low;
  if (a.negative == b.negative) {
    out.negative = a.negative;
    out.digits = add_digits(a.digits, b.digits);
  } else {
    const bool a_larger = a.digits.size() != b.digits.size() ? a.digits.size() > b.digits.size() : a.digits > b.digits;
    out.negative = a_larger ? a.negative : b.negative;
    out.digits = a_larger ? subtract_digits(a.digits, b.digits) : subtract_digits(b.digits, a.digits);
  }
  normalize(out);
  return out;
}

// Rounds a nano amount to a multiple of `unit` nano, away from zero (as MilliValue/Value).
int64_t scaled_away_from_zero(i128 nano, i128 unit) {
  const i128 magnitude = nano < 0 ? -nano : nano;
  i128 result = magnitude / unit + (magnitude % unit != 0 ? 1 : 0);
  if (result > kMaxUnits) result = kMaxUnits;  // only reachable for milli of huge values
  return static_cast<int64_t>(nano < 0 ? -result : result);
}

std::string decimal_suffix(int64_t exponent, Quantity::Format format) {
  if (exponent == 0) return "";
  if (format == Quantity::Format::DecimalSI) {
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
      default: break;  // no SI prefix: exponent notation, as the apiserver does
    }
  }
  return "e" + std::to_string(exponent);
}

// Canonical decimal text: the exponent lowered to a multiple of three.
std::string decimal_text(std::string digits, int64_t exponent, bool negative, Quantity::Format format) {
  while (((exponent % 3) + 3) % 3 != 0) {
    digits.push_back('0');
    --exponent;
  }
  // Past the exponents the apiserver parses, more digits instead, so the text reads back
  // (the apiserver's own String() wraps its int32 exponent there).
  constexpr int64_t kMaxTextExponent = kMaxExponent - kMaxExponent % 3;
  if (exponent > kMaxTextExponent) {
    digits.append(static_cast<size_t>(exponent - kMaxTextExponent), '0');
    exponent = kMaxTextExponent;
  }
  return (negative ? "-" : "") + digits + decimal_suffix(exponent, format);
}

constexpr std::string_view kBinarySuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};

}  // namespace

Decimal Quantity::decimal() const {
  if (big_) return *big_;
  Decimal d;
  d.negative = nano_ < 0;
  d.digits = int_to_string(nano_ < 0 ? -nano_ : nano_);
  d.exponent = -9;
  normalize(d);
  return d;
}

Quantity Quantity::from_nano(Int128 nano, Format format) {
  if (nano > kMaxNano || nano < -kMaxNano) {
    Decimal d;
    d.negative = nano < 0;
    d.digits = int_to_string(nano < 0 ? -nano : nano);
    d.exponent = -9;
    return from_decimal(std::move(d), format);
  }
  Quantity q;
  q.nano_ = nano;
  q.format_ = format;
  return q;
}

// Rounds to whole nano-units (away from zero) and picks the representation.
Quantity Quantity::from_decimal(Decimal value, Format format) {
  normalize(value);
  round_up_to(value, -9);
  Quantity q;
  q.format_ = format;
  if (value.is_zero()) return q;
  // At most 28 digits of nano-units fit comfortably in an Int128.
  if (value.top() + 9 <= 28) {
    i128 nano = 0;
    for (char c : value.digits) nano = nano * 10 + (c - '0');
    nano *= pow10(static_cast<int>(value.exponent + 9));
    if (nano <= kMaxNano) {
      q.nano_ = value.negative ? -nano : nano;
      return q;
    }
  }
  q.big_ = std::make_shared<const Decimal>(std::move(value));
  return q;
}

std::optional<Quantity> Quantity::parse(std::string_view text, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<Quantity> {
    if (error) *error = "invalid quantity \"" + std::string(text) + "\": " + std::move(message);
    return std::nullopt;
  };
  if (text.empty()) return fail("empty");

  // <sign><integer digits>.<fraction digits><suffix>, every part optional: the apiserver
  // reads a missing number (".", "-", "E-3", "Ki") as 0.
  size_t pos = 0;
  bool negative = false;
  if (text[0] == '-' || text[0] == '+') {
    negative = text[0] == '-';
    ++pos;
  }
  const size_t integer_start = pos;
  while (pos < text.size() && is_digit(text[pos])) ++pos;
  const std::string_view integer = text.substr(integer_start, pos - integer_start);
  std::string_view fraction;
  if (pos < text.size() && text[pos] == '.') {
    const size_t fraction_start = ++pos;
    while (pos < text.size() && is_digit(text[pos])) ++pos;
    fraction = text.substr(fraction_start, pos - fraction_start);
  }

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

  // The apiserver's exact path, taken for fine decimal scales and the Pi/Ei suffixes, needs
  // a digit: there "E-10" and "Pi" are errors while "E-9" and "Ti" read 0.
  if (integer.empty() && fraction.empty() &&
      ((suffix->base == 10 && suffix->exponent < -9) || (suffix->base == 2 && suffix->exponent >= 50))) {
    return fail("expected a number");
  }

  // value = mantissa x 10^exponent10 (x 2^binary for binary suffixes).
  const int64_t exponent10 = (suffix->base == 10 ? suffix->exponent : 0) - static_cast<int64_t>(fraction.size());
  const int binary = suffix->base == 2 ? static_cast<int>(suffix->exponent) : 0;

  // Fast path: at most 18 significant digits fit an int64 mantissa.
  uint64_t mantissa = 0;
  int significant = 0;
  bool fits = true;
  for (std::string_view part : {integer, fraction}) {
    for (char c : part) {
      if (significant == 0 && c == '0') continue;
      if (++significant > 18) {
        fits = false;
        break;
      }
      mantissa = mantissa * 10 + static_cast<uint64_t>(c - '0');
    }
  }
  const int64_t nano_exponent = exponent10 + 9;
  if (fits && (binary != 0 || nano_exponent < 0 || significant + nano_exponent <= 28)) {
    i128 magnitude = static_cast<i128>(mantissa) << binary;  // < 2^60 x 2^60
    if (nano_exponent >= 0) {
      if (binary != 0 && (nano_exponent > 28 || magnitude > kMaxNano / pow10(static_cast<int>(nano_exponent)))) {
        magnitude = kMaxNano;  // the apiserver caps binary-suffix values at 2^63-1
      } else {
        magnitude *= pow10(static_cast<int>(nano_exponent));
      }
    } else if (magnitude != 0) {
      // Below a nano-unit rounds away from zero.
      const int64_t shift = -nano_exponent;
      magnitude = shift >= 38 ? 1 : (magnitude - 1) / pow10(static_cast<int>(shift)) + 1;
    }
    if (binary != 0) magnitude = std::min(magnitude, kMaxNano);
    Format format = suffix->format;
    if (format == Format::BinarySI && magnitude > 0 && magnitude < kNanoPerUnit) format = Format::DecimalSI;
    return from_nano(negative ? -magnitude : magnitude, format);
  }

  // Exact path for long or large numbers.
  Decimal value;
  value.negative = negative;
  value.digits.reserve(integer.size() + fraction.size());
  value.digits.append(integer).append(fraction);
  value.exponent = exponent10;
  normalize(value);
  if (binary != 0 && !value.is_zero()) {
    multiply(value.digits, uint64_t{1} << binary);
    normalize(value);
    round_up_to(value, -9);
    const Decimal cap{false, "9223372036854775807", 0};
    if (compare_magnitude(value, cap) > 0) value = Decimal{negative, cap.digits, 0};
  }
  Format format = suffix->format;
  if (format == Format::BinarySI && !value.is_zero() && value.top() <= 0) format = Format::DecimalSI;  // |v| < 1
  return from_decimal(std::move(value), format);
}

Quantity Quantity::from_milli(int64_t milli, Format format) {
  return from_nano(static_cast<i128>(milli) * 1'000'000, format);
}

Quantity Quantity::from_int(int64_t value, Format format) {
  return from_nano(static_cast<i128>(value) * kNanoPerUnit, format);
}

Quantity Quantity::with_format(Format format) const {
  Quantity q = *this;
  q.format_ = format;
  return q;
}

Quantity Quantity::rounded_to_step(double amount, std::string_view resource, bool up) {
  const bool cpu = resource == "cpu";
  // The epsilon keeps an amount computed as 0.30000000000000004 cores at 300m.
  const double x = cpu ? amount * 1000 : amount / (1024.0 * 1024.0);
  double steps = up ? std::ceil(x - 1e-9) : std::floor(x + 1e-9);
  if (std::isnan(steps)) steps = 0;
  steps = std::clamp(steps, -DBL_MAX, DBL_MAX);
  if (std::abs(steps) < 0x1p43) {  // x 2^20 bytes still fits an int64
    const auto n = static_cast<int64_t>(steps);
    return cpu ? from_milli(n) : from_int(n * (1 << 20), Format::BinarySI);
  }
  // Beyond that the double is a whole number: write it out exactly.
  char text[400];
  std::snprintf(text, sizeof text, "%.0f", steps);
  if (cpu) return parse(std::string(text) + "m").value_or(Quantity{});
  return (parse(text).value_or(Quantity{}) * (1 << 20)).with_format(Format::BinarySI);
}

std::string Quantity::to_string() const {
  if (is_zero()) return "0";
  Format format = format_;
  if (format == Format::BinarySI && !big_) {
    // Small or fractional binary values would need rounding: the apiserver writes them as
    // DecimalSI instead.
    const bool small = nano_ > -1024 * kNanoPerUnit && nano_ < 1024 * kNanoPerUnit;
    if (small || nano_ % kNanoPerUnit != 0) {
      format = Format::DecimalSI;
    } else {
      i128 units = nano_ / kNanoPerUnit;
      int exponent = 0;
      while (exponent < 6 && units % 1024 == 0) {  // |units| < 2^63 has at most 6 factors of 1024
        units /= 1024;
        ++exponent;
      }
      return int_to_string(units) + std::string(kBinarySuffixes[exponent]);
    }
  }
  if (format == Format::BinarySI) {  // big: |v| > 2^63-1
    if (big_->exponent < 0) {
      format = Format::DecimalSI;  // fractional
    } else if (big_->exponent < 70) {  // 10^70 holds 2^70 = 1024^7: past "Ei" for sure
      std::string units = big_->digits + std::string(static_cast<size_t>(big_->exponent), '0');
      int exponent = 0;
      while (exponent <= 6 && divide_exactly(units, 1024)) ++exponent;
      if (exponent <= 6) return (big_->negative ? "-" : "") + units + std::string(kBinarySuffixes[exponent]);
      format = Format::DecimalExponent;  // no binary suffix past "Ei": exact decimal
    } else {
      format = Format::DecimalExponent;
    }
  }
  if (big_) return decimal_text(big_->digits, big_->exponent, big_->negative, format);
  i128 mantissa = nano_;
  int64_t exponent = -9;
  while (mantissa % 10 == 0) {
    mantissa /= 10;
    ++exponent;
  }
  const bool negative = mantissa < 0;
  return decimal_text(int_to_string(negative ? -mantissa : mantissa), exponent, negative, format);
}

bool Quantity::is_negative() const { return big_ ? big_->negative : nano_ < 0; }

int64_t Quantity::milli_value() const {
  if (big_) return big_->negative ? -kMaxUnits : kMaxUnits;
  return scaled_away_from_zero(nano_, 1'000'000);
}

int64_t Quantity::value() const {
  if (big_) return big_->negative ? -kMaxUnits : kMaxUnits;
  return scaled_away_from_zero(nano_, kNanoPerUnit);
}

double Quantity::as_double() const {
  if (!big_) return static_cast<double>(nano_) / 1e9;
  // strtod rounds correctly and overflows to +/-HUGE_VAL (inf); 40 digits are plenty.
  const size_t kept = std::min<size_t>(big_->digits.size(), 40);
  const int64_t exponent = big_->exponent + static_cast<int64_t>(big_->digits.size() - kept);
  const std::string text = (big_->negative ? "-" : "") + big_->digits.substr(0, kept) + "e" + std::to_string(exponent);
  return std::strtod(text.c_str(), nullptr);
}

double Quantity::ratio_to(const Quantity& other) const {
  if (other.is_zero()) return is_zero() ? std::nan("") : (is_negative() ? -HUGE_VAL : HUGE_VAL);
  if (!big_ && !other.big_) return static_cast<double>(nano_) / static_cast<double>(other.nano_);
  if (is_zero()) return 0.0;
  // Each as m x 10^e with m in [1, 10): the quotient of two such m cannot overflow.
  auto split = [](const Decimal& d, int64_t& exponent) {
    const size_t kept = std::min<size_t>(d.digits.size(), 20);
    exponent = d.top() - 1;
    const std::string text = d.digits.substr(0, 1) + "." + d.digits.substr(1, kept - 1);
    return (d.negative ? -1.0 : 1.0) * std::strtod(text.c_str(), nullptr);
  };
  int64_t e1 = 0, e2 = 0;
  const double m1 = split(decimal(), e1), m2 = split(other.decimal(), e2);
  const int64_t shift = std::clamp<int64_t>(e1 - e2, -400, 400);
  return m1 / m2 * std::pow(10.0, static_cast<double>(shift));
}

Quantity Quantity::rounded_up(int scale) const {
  scale = std::clamp(scale, -9, 18);
  if (!big_) {
    const i128 unit = pow10(scale + 9);
    const i128 magnitude = nano_ < 0 ? -nano_ : nano_;
    const i128 rounded = (magnitude + unit - 1) / unit * unit;
    return from_nano(nano_ < 0 ? -rounded : rounded, format_);
  }
  Decimal d = *big_;
  round_up_to(d, scale);
  return from_decimal(std::move(d), format_);
}

Quantity Quantity::operator+(const Quantity& other) const {
  const Format format = is_zero() ? other.format_ : format_;
  if (!big_ && !other.big_) return from_nano(nano_ + other.nano_, format);  // |sum| < 2^95
  return from_decimal(add(decimal(), other.decimal()), format);
}

Quantity Quantity::operator-(const Quantity& other) const {
  const Format format = is_zero() ? other.format_ : format_;
  if (!big_ && !other.big_) return from_nano(nano_ - other.nano_, format);
  Decimal negated = other.decimal();
  negated.negative = !negated.negative;
  return from_decimal(add(decimal(), std::move(negated)), format);
}

Quantity Quantity::operator*(int64_t factor) const {
  const u128 magnitude_factor = factor < 0 ? -static_cast<i128>(factor) : factor;
  if (!big_) {
    // |nano_| < 2^94 and |factor| <= 2^63 could overflow 127 bits: go exact beyond that.
    const i128 magnitude = nano_ < 0 ? -nano_ : nano_;
    if (factor == 0 || magnitude <= kMaxNano / static_cast<i128>(magnitude_factor)) return from_nano(nano_ * factor, format_);
  }
  Decimal d = decimal();
  multiply(d.digits, static_cast<uint64_t>(magnitude_factor));
  if (factor < 0) d.negative = !d.negative;
  return from_decimal(std::move(d), format_);
}

std::strong_ordering Quantity::operator<=>(const Quantity& other) const {
  if (!big_ && !other.big_) return nano_ <=> other.nano_;
  // A big value lies beyond every small one.
  if (!big_) return other.big_->negative ? std::strong_ordering::greater : std::strong_ordering::less;
  if (!other.big_) return big_->negative ? std::strong_ordering::less : std::strong_ordering::greater;
  if (big_->negative != other.big_->negative) {
    return big_->negative ? std::strong_ordering::less : std::strong_ordering::greater;
  }
  const auto magnitude = compare_magnitude(*big_, *other.big_);
  return big_->negative ? 0 <=> magnitude : magnitude;
}

}  // namespace sizeguard
