// The real kube-apiserver request bodies (../shared/fixtures) for the benchmarks.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sizeguard::bench {

inline std::string apiserver_fixture(const std::string& name) {
  std::ifstream in(std::filesystem::path(SIZEGUARD_SHARED_DIR_BENCH) / "fixtures/admission-apiserver-1.28" / name);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace sizeguard::bench
