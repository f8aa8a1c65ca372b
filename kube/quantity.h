// Kubernetes resource.Quantity: exact parsing, comparison, arithmetic and canonical
// formatting with the semantics of k8s.io/apimachinery/pkg/api/resource.
#pragma once

#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sizeguard {

// Exact nano-unit arithmetic needs more than 64 bits (2^63 units x 10^9).
__extension__ typedef __int128 Int128;

namespace quantity_detail {
struct Decimal;  // sign, decimal digits and a power of ten (quantity.cpp)
}

class Quantity {
 public:
  // How the value is written back: the suffix family the apiserver keeps from the input.
  enum class Format { DecimalSI, BinarySI, DecimalExponent };

  Quantity() = default;  // zero, DecimalSI

  // Parses every form the apiserver accepts ("500m", ".5", "+1", "1Gi", "1e3", "1.5Mi",
  // and its oddities: ".", "-", "E-3" and "Ki" read 0) with its rounding: finer than 1n
  // rounds away from zero to 1n; a binary-suffix value beyond 2^63-1 is capped there, a
  // decimal one is kept exactly (the apiserver keeps it in arbitrary precision). Exponents
  // beyond +/-(2^31-1) are rejected, as the apiserver rejects them.
  // On failure returns nullopt and, if `error` is given, says what was wrong.
  static std::optional<Quantity> parse(std::string_view text, std::string* error = nullptr);

  static Quantity from_milli(int64_t milli, Format format = Format::DecimalSI);
  static Quantity from_int(int64_t value, Format format = Format::DecimalSI);

  // The same value written in another family (as setting resource.Quantity.Format).
  Quantity with_format(Format format) const;

  // Canonical form as the apiserver would serialise it ("2000m" -> "2", "1024Mi" -> "1Gi",
  // "1000E" -> "1e21").
  std::string to_string() const;

  // An amount (cores for "cpu", bytes otherwise) rounded to a step a person would write:
  // 1m of CPU, 1Mi of anything else (in BinarySI); up unless `up` is false. Amounts
  // beyond what an int64 of steps holds are kept exactly; infinities become +/-DBL_MAX.
  static Quantity rounded_to_step(double amount, std::string_view resource, bool up = true);

  // Rounded up to an integer number of milli-units / units, as k8s MilliValue()/Value(),
  // saturating at the int64 bounds (where k8s would wrap).
  int64_t milli_value() const;
  int64_t value() const;
  double as_double() const;  // for statistics only, never for decisions; may be +/-inf
  // this / other as a double, without overflowing for huge values (1e401 / 1e400 is 10,
  // where as_double() gives inf / inf); +/-inf when other is zero, NaN when both are.
  double ratio_to(const Quantity& other) const;

  // Rounded away from zero to a multiple of 10^scale units (0: whole units, -3: milli),
  // as k8s Quantity.RoundUp. `scale` is clamped to [-9, 18].
  Quantity rounded_up(int scale) const;

  Format format() const { return format_; }
  bool is_zero() const { return !big_ && nano_ == 0; }
  bool is_negative() const;

  // Exact arithmetic, as k8s Add/Sub/Mul (no cap: values beyond 2^63-1 stay exact). The
  // result keeps this quantity's format, or the other's when this one is zero. Only a sum
  // whose exact digits would exceed a million rounds the smaller operand (away from zero)
  // at that depth, where k8s would try to write out billions of digits.
  Quantity operator+(const Quantity& other) const;
  Quantity operator-(const Quantity& other) const;
  Quantity operator*(int64_t factor) const;

  // Exact comparison of the values (format is ignored).
  std::strong_ordering operator<=>(const Quantity& other) const;
  bool operator==(const Quantity& other) const { return (*this <=> other) == 0; }

 private:
  static Quantity from_nano(Int128 nano, Format format);
  static Quantity from_decimal(quantity_detail::Decimal value, Format format);
  quantity_detail::Decimal decimal() const;

  // The value in nano-units while it is within +/- (2^63-1) units (every value the
  // apiserver accepts is a whole number of nano-units: it rounds finer values up).
  Int128 nano_ = 0;
  // Larger values, exactly; set exactly when the value is outside the range above.
  std::shared_ptr<const quantity_detail::Decimal> big_;
  Format format_ = Format::DecimalSI;
};

}  // namespace sizeguard
