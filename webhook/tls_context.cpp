#include "webhook/tls_context.h"

#include <ctime>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "webhook/server_internal.h"

namespace sizeguard {

std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

// ---------------------------------------------------------------------------------------
// TLS.

namespace {

std::shared_ptr<SSL_CTX> make_server_context(const std::string& cert_path, const std::string& key_path) {
  for (const auto& [what, path] : {std::pair{"certificate", &cert_path}, std::pair{"private key", &key_path}}) {
    std::error_code ec;
    if (path->empty()) throw std::runtime_error(std::string("no TLS ") + what + " file given");
    if (!std::filesystem::is_regular_file(*path, ec)) {
      throw std::runtime_error(std::string("TLS ") + what + " file " + *path + " does not exist or is not a file");
    }
  }
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> context(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!context) throw std::runtime_error("cannot create a TLS context: " + openssl_errors());
  SSL_CTX* ctx = context.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Idle connections (up to --max-connections of them) then hold no TLS record buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_cipher_list(ctx,
                              "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                              "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1 ||
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
    throw std::runtime_error("cannot configure TLS ciphers: " + openssl_errors());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_path.c_str()) != 1) {
    throw std::runtime_error("cannot load the TLS certificate chain from " + cert_path + ": " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw std::runtime_error("cannot load the TLS private key from " + key_path + ": " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    throw std::runtime_error("TLS private key " + key_path + " does not match certificate " + cert_path + ": " +
                             openssl_errors());
  }
  return context;
}

}  // namespace

TlsContext::TlsContext(std::string cert_path, std::string key_path)
    : cert_path_(std::move(cert_path)), key_path_(std::move(key_path)) {
  context_ = make_server_context(cert_path_, key_path_);
}

void TlsContext::reload() {
  auto fresh = make_server_context(cert_path_, key_path_);
  std::lock_guard lock(mutex_);
  context_ = std::move(fresh);
}

std::shared_ptr<SSL_CTX> TlsContext::current() const {
  std::lock_guard lock(mutex_);
  return context_;
}

std::chrono::system_clock::time_point TlsContext::not_after() const {
  auto context = current();
  const X509* cert = SSL_CTX_get0_certificate(context.get());
  std::tm tm{};
  if (!cert || ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace sizeguard
