// Throwaway certificates for `serve --dev` and tests: a fresh CA and a serving certificate
// for localhost, 127.0.0.1 and ::1 signed by it (EC P-256, valid 30 days). Never for
// production: the CA key is discarded, so nothing else can ever be signed by this CA.
#pragma once

#include <filesystem>
#include <string_view>

namespace sizeguard {

struct DevCertificates {
  std::filesystem::path directory;
  std::filesystem::path ca_cert;      // directory/ca.crt: what clients trust
  std::filesystem::path server_cert;  // directory/tls.crt: serving cert (leaf only)
  std::filesystem::path server_key;   // directory/tls.key: mode 0600
};

// Writes ca.crt, tls.crt and tls.key into `directory` (created if missing, existing files
// replaced). Throws std::runtime_error naming the step and the OpenSSL or file error.
DevCertificates make_dev_certificates(const std::filesystem::path& directory);

// A new private (0700) directory under the system temp dir, e.g. /tmp/sizeguard-dev-XXXXXX.
std::filesystem::path make_private_temp_directory(std::string_view prefix);

}  // namespace sizeguard
