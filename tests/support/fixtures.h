// Test data lookup: the shared apiserver fixtures (SIZEGUARD_SHARED_DIR/fixtures) and our
// own small fixtures (tests/fixtures). Missing files throw std::runtime_error with the path.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sizeguard::test {

// SIZEGUARD_SHARED_DIR/fixtures/admission-apiserver-1.28
std::filesystem::path shared_admission_fixture_dir();

// A shared fixture by name: "pod-create-from-replicaset.json" (looked up in
// admission-apiserver-1.28/) or a path relative to SIZEGUARD_SHARED_DIR/fixtures.
std::string load_shared_fixture(std::string_view name);

// Every *.json AdmissionReview body in admission-apiserver-1.28/, sorted by name.
std::vector<std::filesystem::path> shared_admission_fixtures();

// A file under tests/fixtures, e.g. "admission/scale-update.json".
std::string load_test_fixture(std::string_view relative_path);

// Whole file contents.
std::string read_file(const std::filesystem::path& path);

}  // namespace sizeguard::test
