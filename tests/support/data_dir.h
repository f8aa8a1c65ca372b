// The data directory: whole usage traces that are too large (and not ours) to commit, e.g.
// bitbrains-rnd-2013-07/. SIZEGUARD_DATA_DIR in the environment, else the configured one
// (CMake cache SIZEGUARD_DATA_DIR, default ../shared/data beside the checkout). Tests that
// need it skip, visibly, when it is absent; small samples in tests/fixtures/usage cover the
// same code paths on a bare clone.
#pragma once

#include <cstdlib>
#include <filesystem>

namespace sizeguard::test {

inline std::filesystem::path data_dir() {
  if (const char* from_env = std::getenv("SIZEGUARD_DATA_DIR"); from_env && *from_env) return from_env;
  return SIZEGUARD_CONFIGURED_DATA_DIR;
}

// The July 2013 Bitbrains trace (500 series) in the data directory.
inline std::filesystem::path bitbrains_trace_dir() { return data_dir() / "bitbrains-rnd-2013-07"; }

// tests/run.sh counts skips by this phrase to report how much of the suite needs data.
inline constexpr const char* kDataMissing = "usage data missing";

}  // namespace sizeguard::test

// Skips the current test, naming the missing path and how to point at it.
#define SIZEGUARD_SKIP_WITHOUT(path)                                                                  \
  if (!std::filesystem::exists(path))                                                                 \
  GTEST_SKIP() << ::sizeguard::test::kDataMissing << ": " << (path).string()                          \
               << " (set SIZEGUARD_DATA_DIR to the folder holding it)"
