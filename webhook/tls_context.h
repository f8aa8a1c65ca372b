// The serving certificate and key as a hot-swappable OpenSSL server context.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include <openssl/types.h>

namespace sizeguard {

// The serving certificate as an immutable SSL_CTX snapshot. Each new connection takes the
// current snapshot; reload() swaps in a new one (existing connections keep theirs), so a
// rotated cert/key pair is picked up without dropping connections. TLS 1.2 minimum, ECDHE
// with AES-GCM or ChaCha20 for TLS 1.2, the standard TLS 1.3 suites.
class TlsContext {
 public:
  // Throws std::runtime_error naming the file and the OpenSSL reason.
  TlsContext(std::string cert_path, std::string key_path);
  // Re-reads both files; on failure throws and keeps serving the previous snapshot.
  void reload();
  std::shared_ptr<SSL_CTX> current() const;
  // notAfter of the current serving certificate (for expiry metrics and warnings).
  std::chrono::system_clock::time_point not_after() const;
  const std::string& cert_path() const { return cert_path_; }
  const std::string& key_path() const { return key_path_; }

 private:
  std::string cert_path_, key_path_;
  mutable std::mutex mutex_;
  std::shared_ptr<SSL_CTX> context_;
};

}  // namespace sizeguard
