#include "webhook/devcerts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace sizeguard {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

[[noreturn]] void fail(const std::string& step) {
  std::string detail;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    detail += detail.empty() ? "" : "; ";
    detail += buffer;
  }
  throw std::runtime_error("dev certificates: " + step + (detail.empty() ? "" : ": " + detail));
}

Owned<EVP_PKEY> make_key() {
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) fail("generating an EC P-256 key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Owned<X509_EXTENSION> extension(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!extension || X509_add_ext(cert, extension.get(), -1) != 1) {
    fail(std::string("adding extension ") + OBJ_nid2sn(nid) + "=" + value);
  }
}

// A certificate for `key` with the given subject CN, signed by issuer_key (self-signed
// when issuer is null).
Owned<X509> make_cert(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key) {
  Owned<X509> cert(X509_new());
  if (!cert) fail("allocating a certificate");
  X509_set_version(cert.get(), 2);  // v3
  // A random 159-bit serial, as RFC 5280 asks (positive, at most 20 bytes).
  Owned<BIGNUM> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    fail("making a serial number");
  }
  // Five minutes of slack for clocks slightly behind ours.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -5 * 60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 30L * 24 * 60 * 60);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("sizeguard dev"), -1, -1,
                             0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) != 1 || X509_set_pubkey(cert.get(), key) != 1) {
    fail("filling the certificate");
  }
  add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (issuer) {
    add_extension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
    add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    add_extension(cert.get(), signer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1");
  } else {
    add_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_extension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) <= 0) fail("signing the certificate");
  return cert;
}

// Writes atomically (temp file + rename) with the given mode.
void write_pem(const std::filesystem::path& path, mode_t mode, const std::function<int(BIO*)>& encode) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || encode(bio.get()) != 1) fail("encoding " + path.string());
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  std::string temp = path.string() + ".tmp";
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("dev certificates: cannot write " + temp + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, mode) == 0 && ::write(fd, data, static_cast<size_t>(length)) == length && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(temp.c_str());
    throw std::runtime_error("dev certificates: cannot write " + path.string() + ": " + std::strerror(saved));
  }
}

}  // namespace

DevCertificates make_dev_certificates(const std::filesystem::path& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) throw std::runtime_error("dev certificates: cannot create " + directory.string() + ": " + ec.message());
  ERR_clear_error();

  auto ca_key = make_key();
  auto ca = make_cert(ca_key.get(), "sizeguard dev CA", nullptr, nullptr);
  auto server_key = make_key();
  auto server = make_cert(server_key.get(), "localhost", ca.get(), ca_key.get());

  DevCertificates result{directory, directory / "ca.crt", directory / "tls.crt", directory / "tls.key"};
  write_pem(result.ca_cert, 0644, [&](BIO* bio) { return PEM_write_bio_X509(bio, ca.get()); });
  write_pem(result.server_cert, 0644, [&](BIO* bio) { return PEM_write_bio_X509(bio, server.get()); });
  write_pem(result.server_key, 0600, [&](BIO* bio) {
    return PEM_write_bio_PrivateKey(bio, server_key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  return result;
}

std::filesystem::path make_private_temp_directory(std::string_view prefix) {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string pattern = (base / (std::string(prefix) + "-XXXXXX")).string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (!::mkdtemp(buffer.data())) {
    throw std::runtime_error("cannot create a temporary directory " + pattern + ": " + std::strerror(errno));
  }
  return std::filesystem::path(buffer.data());
}

}  // namespace sizeguard
