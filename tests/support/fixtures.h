// Test data lookup. Everything here lives in the repository (tests/fixtures), so a clone
// with nothing beside it passes; whole usage traces come from the data directory
// (tests/support/data_dir.h) and tests that need one skip when it is absent.
// Missing files throw std::runtime_error with the path.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sizeguard::test {

// tests/fixtures/admission-apiserver-1.28: AdmissionReview bodies a real kube-apiserver
// v1.28.7 sent (provenance in its README.md).
std::filesystem::path apiserver_fixture_dir();

// An apiserver fixture by file name: "pod-create-from-replicaset.json".
std::string load_apiserver_fixture(std::string_view name);

// Every *.json AdmissionReview body in apiserver_fixture_dir(), sorted by name.
std::vector<std::filesystem::path> apiserver_fixtures();

// A file under tests/fixtures, e.g. "usage/bitbrains-sample/1.csv.gz".
std::string load_test_fixture(std::string_view relative_path);
std::filesystem::path test_fixture_path(std::string_view relative_path);

// Whole file contents.
std::string read_file(const std::filesystem::path& path);

}  // namespace sizeguard::test
