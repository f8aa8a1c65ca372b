// The real kube-apiserver request bodies (tests/fixtures/admission-apiserver-1.28) for the benchmarks.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sizeguard::bench {

inline std::string apiserver_fixture(const std::string& name) {
  std::ifstream in(std::filesystem::path(SIZEGUARD_APISERVER_FIXTURES) / name);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace sizeguard::bench
