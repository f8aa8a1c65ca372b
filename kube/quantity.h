// Kubernetes resource.Quantity: exact parsing, comparison and canonical formatting
// with the semantics of k8s.io/apimachinery/pkg/api/resource.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sizeguard {

// Exact nano-unit arithmetic needs more than 64 bits (2^63 units x 10^9).
__extension__ typedef __int128 Int128;

class Quantity {
 public:
  // How the value is written back: the suffix family the apiserver keeps from the input.
  enum class Format { DecimalSI, BinarySI, DecimalExponent };

  Quantity() = default;  // zero, DecimalSI

  // Parses every form the apiserver accepts ("500m", ".5", "+1", "1Gi", "1e3", "1.5Mi" ...)
  // with its rounding: finer than 1n rounds away from zero to 1n, beyond 2^63-1 is capped.
  // Exponents that do not fit in 32 bits are rejected (the apiserver silently wraps them).
  // On failure returns nullopt and, if `error` is given, says what was wrong.
  static std::optional<Quantity> parse(std::string_view text, std::string* error = nullptr);

  static Quantity from_milli(int64_t milli, Format format = Format::DecimalSI);
  static Quantity from_int(int64_t value, Format format = Format::DecimalSI);

  // Canonical form as the apiserver would serialise it ("2000m" -> "2", "1024Mi" -> "1Gi").
  std::string to_string() const;

  // An amount (cores for "cpu", bytes otherwise) rounded to a step a person would write:
  // 1m of CPU, 1Mi of anything else (in BinarySI); up unless `up` is false.
  static Quantity rounded_to_step(double amount, std::string_view resource, bool up = true);

  // Rounded up to an integer number of milli-units / units, as k8s MilliValue()/Value().
  int64_t milli_value() const;
  int64_t value() const;
  double as_double() const;  // for statistics only, never for decisions

  Format format() const { return format_; }
  bool is_zero() const { return nano_ == 0; }
  bool is_negative() const { return nano_ < 0; }

  // Exact arithmetic, saturating at the apiserver's bounds (+/- 2^63-1 units). The result
  // keeps this quantity's format.
  Quantity operator+(const Quantity& other) const;
  Quantity operator-(const Quantity& other) const;
  Quantity operator*(int64_t factor) const;

  // Exact comparison of the values (format is ignored).
  std::strong_ordering operator<=>(const Quantity& other) const;
  bool operator==(const Quantity& other) const { return (*this <=> other) == 0; }

 private:
  static Quantity from_nano(Int128 nano, Format format);
  // The value in nano-units. Every quantity the apiserver accepts is a whole number of
  // nano-units (it rounds finer values up) within +/- (2^63-1) units, so this is exact.
  Int128 nano_ = 0;
  Format format_ = Format::DecimalSI;
};

}  // namespace sizeguard
