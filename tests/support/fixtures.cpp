#include "fixtures.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace sizeguard::test {

std::filesystem::path apiserver_fixture_dir() {
  return std::filesystem::path(SIZEGUARD_TEST_FIXTURES) / "admission-apiserver-1.28";
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read fixture " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string load_apiserver_fixture(std::string_view name) { return read_file(apiserver_fixture_dir() / name); }

std::vector<std::filesystem::path> apiserver_fixtures() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(apiserver_fixture_dir())) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::filesystem::path test_fixture_path(std::string_view relative_path) {
  return std::filesystem::path(SIZEGUARD_TEST_FIXTURES) / relative_path;
}

std::string load_test_fixture(std::string_view relative_path) { return read_file(test_fixture_path(relative_path)); }

}  // namespace sizeguard::test
