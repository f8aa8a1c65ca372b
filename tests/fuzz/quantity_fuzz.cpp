// Quantity parsing: never crashes; whatever parses formats canonically, and the canonical
// form parses back to the same value. Like the apiserver's, the canonical form is a fixed
// point only from the second round: "62.5Ki" is 64000 in BinarySI, written "64000", which
// parses as DecimalSI and is then written "64k".
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kube/quantity.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto q = sizeguard::Quantity::parse(text);
  if (!q) return 0;
  const std::string canonical = q->to_string();
  auto again = sizeguard::Quantity::parse(canonical);
  if (!again || !(*again == *q)) std::abort();
  auto third = sizeguard::Quantity::parse(again->to_string());
  if (!third || third->to_string() != again->to_string()) std::abort();
  (void)q->milli_value();
  (void)q->as_double();
  (void)q->ratio_to(*again);
  // Arithmetic is exact (no cap, no wrap), also past 2^63-1.
  const sizeguard::Quantity twice = *q + *again;
  if (!(twice - *again == *q) || !(*q * 3 == twice + *q) || !(*q * -1 == sizeguard::Quantity() - *q)) std::abort();
  if (!(q->rounded_up(0) >= *q) && !q->is_negative()) std::abort();
  return 0;
}
