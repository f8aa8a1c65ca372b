// A private temporary directory for one test, removed with everything in it when the test
// ends, even when an assertion returns early.
#pragma once

#include <filesystem>
#include <string_view>
#include <system_error>

#include "webhook/devcerts.h"

namespace sizeguard::test {

struct TempDir {
  explicit TempDir(std::string_view prefix) : path(make_private_temp_directory(prefix)) {}
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

}  // namespace sizeguard::test
