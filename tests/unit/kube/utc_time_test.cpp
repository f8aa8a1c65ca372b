#include "kube/utc_time.h"

#include <gtest/gtest.h>

namespace sizeguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::system_clock;

TEST(UtcTime, SecondsAndMilliseconds) {
  const system_clock::time_point t{seconds(1795867201) + milliseconds(120)};
  EXPECT_EQ(format_utc(t), "2026-11-28T12:00:01Z");
  EXPECT_EQ(format_utc(t, UtcPrecision::Milliseconds), "2026-11-28T12:00:01.120Z");
  EXPECT_EQ(format_utc(int64_t{0}), "1970-01-01T00:00:00Z");
}

TEST(UtcTime, BeforeTheEpochFloorsInsteadOfRoundingTowardsIt) {
  const system_clock::time_point t{milliseconds(-1)};
  EXPECT_EQ(format_utc(t, UtcPrecision::Milliseconds), "1969-12-31T23:59:59.999Z");
}

}  // namespace
}  // namespace sizeguard
