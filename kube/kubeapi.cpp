#include "kube/kubeapi.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <yaml-cpp/yaml.h>

namespace sizeguard {
namespace {

constexpr std::chrono::seconds kTokenRefresh{60};
constexpr std::size_t kMaxIdleConnections = 4;

std::optional<std::string> read_text_file(const std::filesystem::path& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) {
    error = "read error";
    return std::nullopt;
  }
  return out.str();
}

std::string trim(std::string text) {
  const char* space = " \t\r\n";
  auto first = text.find_first_not_of(space);
  if (first == std::string::npos) return "";
  auto last = text.find_last_not_of(space);
  return text.substr(first, last - first + 1);
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  bool padding = false;
  for (char c : in) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    if (padding) return std::nullopt;  // data after padding
    int v = value(c);
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character
  return out;
}

std::string openssl_errors() {
  std::string detail;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!detail.empty()) detail += "; ";
    detail += buffer;
  }
  return detail.empty() ? "unknown OpenSSL error" : detail;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Request Entity Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

struct ServerUrl {
  std::string host;  // without brackets
  int port = 443;
  std::string base_path;  // "" or "/prefix" (no trailing slash)
};

std::variant<ServerUrl, std::string> parse_server(const std::string& server) {
  constexpr std::string_view scheme = "https://";
  if (server.empty()) return std::string("no API server address");
  if (server.rfind(scheme, 0) != 0) {
    if (server.rfind("http://", 0) == 0) return "only https API servers are supported, got " + server;
    return "API server address must start with https://, got " + server;
  }
  std::string rest = server.substr(scheme.size());
  ServerUrl url;
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    url.base_path = rest.substr(slash);
    while (!url.base_path.empty() && url.base_path.back() == '/') url.base_path.pop_back();
  }
  std::string port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) return "invalid IPv6 address in API server address " + server;
    url.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return "invalid API server address " + server;
      port_text = authority.substr(close + 2);
    }
  } else {
    auto colon = authority.rfind(':');
    url.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (url.host.empty()) return "no host in API server address " + server;
  if (!port_text.empty()) {
    char* end = nullptr;
    long port = std::strtol(port_text.c_str(), &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) return "invalid port in API server address " + server;
    url.port = static_cast<int>(port);
  }
  return url;
}

bool is_ip_address(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 || inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

struct Free {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

Owned<BIO> memory_bio(const std::string& text) {
  return Owned<BIO>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::vector<Owned<X509>> parse_certificates(const std::string& pem, const char* what, std::string& error) {
  std::vector<Owned<X509>> certs;
  ERR_clear_error();
  auto bio = memory_bio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(cert);
  ERR_clear_error();  // the loop ends with a "no start line" error
  if (certs.empty()) error = std::string("no PEM certificate found in ") + what;
  return certs;
}

// Per-connection data the verify callback reaches through SSL_CTX app data.
struct Connection {
  std::unique_ptr<httplib::SSLClient> client;
  std::string verify_error;
  std::chrono::steady_clock::time_point last_used;  // when it went back to the pool
  bool reused = false;                              // taken from the pool (it served a request before)
};

int verify_callback(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (!ssl) return ok;
  auto* connection = static_cast<Connection*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (connection && connection->verify_error.empty()) {
    int code = X509_STORE_CTX_get_error(store);
    connection->verify_error = X509_verify_cert_error_string(code);
    if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
      char subject[256];
      X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
      connection->verify_error += " (certificate ";
      connection->verify_error += subject;
      connection->verify_error += ")";
    }
  }
  return ok;
}

// Blocks SIGPIPE in the calling thread while a request runs (OpenSSL writes with write(2),
// so a peer closing mid-write would otherwise kill the process), then discards any
// SIGPIPE the request raised.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero{};
        while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool was_pending_ = false;
};

// Resolves a kubeconfig file reference against the kubeconfig's directory.
std::filesystem::path resolve(const std::filesystem::path& base_dir, const std::string& file) {
  std::filesystem::path path(file);
  if (path.is_relative()) path = base_dir / path;
  return path;
}

YAML::Node find_named(const YAML::Node& list, const std::string& name) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const auto& entry : list) {
    if (entry.IsMap() && entry["name"] && entry["name"].as<std::string>() == name) return entry;
  }
  return YAML::Node();
}

std::string scalar(const YAML::Node& map, const char* key) {
  const YAML::Node node = map[key];
  if (!node || node.IsNull()) return "";
  return node.as<std::string>();
}

}  // namespace

std::variant<KubeConfig, std::string> in_cluster_config(const std::filesystem::path& sa_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  std::vector<std::string> missing;
  if (!host || !*host) missing.push_back("environment variable KUBERNETES_SERVICE_HOST is not set");
  if (!port || !*port) missing.push_back("environment variable KUBERNETES_SERVICE_PORT is not set");
  KubeConfig config;
  config.source = "in-cluster";
  const auto token_path = sa_dir / "token";
  const auto ca_path = sa_dir / "ca.crt";
  std::string error;
  auto token = read_text_file(token_path, error);
  if (!token) {
    missing.push_back("cannot read service account token " + token_path.string() + ": " + error);
  } else if (trim(*token).empty()) {
    missing.push_back("service account token " + token_path.string() + " is empty");
  }
  auto ca = read_text_file(ca_path, error);
  if (!ca) {
    missing.push_back("cannot read service account CA " + ca_path.string() + ": " + error);
  } else if (ca->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    missing.push_back("service account CA " + ca_path.string() + " contains no PEM certificate");
  }
  if (!missing.empty()) {
    std::string message = "in-cluster config: ";
    for (std::size_t i = 0; i < missing.size(); ++i) message += (i ? "; " : "") + missing[i];
    if (!host || !*host) message += " (not running in a Kubernetes pod?)";
    return message;
  }
  std::string host_text = host;
  if (host_text.find(':') != std::string::npos) host_text = "[" + host_text + "]";
  config.server = "https://" + host_text + ":" + port;
  config.token_file = token_path.string();
  config.token = trim(*token);
  config.ca_pem = *ca;
  return config;
}

std::variant<KubeConfig, std::string> kubeconfig_config(const std::filesystem::path& path,
                                                        const std::string& context) {
  const std::string where = "kubeconfig " + path.string();
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::BadFile&) {
    return where + ": cannot read file: " + std::strerror(errno);
  } catch (const YAML::Exception& e) {
    return where + ": invalid YAML: " + e.what();
  }
  try {
    if (!root.IsMap()) return where + ": not a kubeconfig (expected a mapping at the top level)";
    std::string context_name = context.empty() ? scalar(root, "current-context") : context;
    if (context_name.empty()) return where + ": no current-context set and no context given";
    const auto base_dir = std::filesystem::absolute(path).parent_path();
    YAML::Node context_entry = find_named(root["contexts"], context_name);
    if (!context_entry || !context_entry["context"] || !context_entry["context"].IsMap()) {
      return where + ": context \"" + context_name + "\" not found";
    }
    const YAML::Node ctx = context_entry["context"];
    const std::string cluster_name = scalar(ctx, "cluster");
    const std::string user_name = scalar(ctx, "user");
    const std::string in_context = " (context " + context_name + ")";
    KubeConfig config;
    config.source = where + in_context;

    YAML::Node cluster_entry = find_named(root["clusters"], cluster_name);
    if (cluster_name.empty() || !cluster_entry || !cluster_entry["cluster"] || !cluster_entry["cluster"].IsMap()) {
      return where + ": cluster \"" + cluster_name + "\" of context \"" + context_name + "\" not found";
    }
    const YAML::Node cluster = cluster_entry["cluster"];
    config.server = scalar(cluster, "server");
    if (config.server.empty()) return where + ": cluster \"" + cluster_name + "\" has no server";
    if (cluster["insecure-skip-tls-verify"]) config.insecure_skip_tls_verify = cluster["insecure-skip-tls-verify"].as<bool>();
    std::string error;
    if (auto data = scalar(cluster, "certificate-authority-data"); !data.empty()) {
      auto decoded = base64_decode(data);
      if (!decoded) return where + ": cluster \"" + cluster_name + "\": certificate-authority-data is not valid base64";
      config.ca_pem = *decoded;
    } else if (auto file = scalar(cluster, "certificate-authority"); !file.empty()) {
      auto ca_path = resolve(base_dir, file);
      auto text = read_text_file(ca_path, error);
      if (!text) return where + ": cluster \"" + cluster_name + "\": cannot read certificate-authority " + ca_path.string() + ": " + error;
      config.ca_pem = *text;
    }

    if (!user_name.empty()) {
      YAML::Node user_entry = find_named(root["users"], user_name);
      if (!user_entry) return where + ": user \"" + user_name + "\" of context \"" + context_name + "\" not found";
      const YAML::Node user = user_entry["user"];
      if (user && user.IsMap()) {
        const std::string in_user = ": user \"" + user_name + "\": ";
        if (user["exec"]) {
          return where + in_user +
                 "exec credential plugins are not supported; use a token, tokenFile or client certificate";
        }
        if (user["auth-provider"]) {
          return where + in_user +
                 "auth-provider plugins are not supported; use a token, tokenFile or client certificate";
        }
        config.token = scalar(user, "token");
        if (auto file = scalar(user, "tokenFile"); !file.empty() && config.token.empty()) {
          auto token_path = resolve(base_dir, file);
          auto text = read_text_file(token_path, error);
          if (!text) return where + in_user + "cannot read tokenFile " + token_path.string() + ": " + error;
          config.token_file = token_path.string();
          config.token = trim(*text);
        }
        auto load_pem = [&](const char* data_key, const char* file_key, std::string& out) -> std::optional<std::string> {
          if (auto data = scalar(user, data_key); !data.empty()) {
            auto decoded = base64_decode(data);
            if (!decoded) return where + in_user + data_key + " is not valid base64";
            out = *decoded;
          } else if (auto file = scalar(user, file_key); !file.empty()) {
            auto pem_path = resolve(base_dir, file);
            auto text = read_text_file(pem_path, error);
            if (!text) return where + in_user + "cannot read " + file_key + " " + pem_path.string() + ": " + error;
            out = *text;
          }
          return std::nullopt;
        };
        if (auto failure = load_pem("client-certificate-data", "client-certificate", config.client_cert_pem)) return *failure;
        if (auto failure = load_pem("client-key-data", "client-key", config.client_key_pem)) return *failure;
        if (config.client_cert_pem.empty() != config.client_key_pem.empty()) {
          return where + in_user + "client certificate and client key must be given together";
        }
      }
    }
    return config;
  } catch (const YAML::Exception& e) {
    return where + ": malformed kubeconfig: " + e.what();
  }
}

std::string kube_path_escape(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
  return out;
}

std::string kube_error_summary(int status, const std::string& body) {
  std::string summary = std::to_string(status);
  if (auto phrase = reason_phrase(status); !phrase.empty()) {
    summary += " ";
    summary += phrase;
  }
  std::string message;
  auto parsed = Json::parse(body, nullptr, false);
  if (parsed.is_object() && parsed.contains("message") && parsed["message"].is_string()) {
    message = parsed["message"].get<std::string>();
  } else if (!parsed.is_discarded() || body.empty()) {
    message = "";
  } else {
    message = trim(body.substr(0, 200));
  }
  if (!message.empty()) summary += ": " + message;
  return summary;
}

struct KubeClient::Impl {
  KubeConfig config;
  std::string setup_error;  // invalid server address, certificate or key: every request fails
  ServerUrl url;
  Owned<X509_STORE> ca_store;
  Owned<X509> client_cert;
  std::vector<Owned<X509>> client_chain;
  Owned<EVP_PKEY> client_key;

  std::mutex token_mutex;
  std::string token;
  std::optional<std::chrono::steady_clock::time_point> token_read_at;

  std::mutex pool_mutex;
  std::vector<std::unique_ptr<Connection>> idle;
  std::atomic<std::size_t> opened{0};

  explicit Impl(KubeConfig c) : config(std::move(c)), token(config.token) {
    auto parsed = parse_server(config.server);
    if (auto* error = std::get_if<std::string>(&parsed)) {
      setup_error = *error;
      return;
    }
    url = std::get<ServerUrl>(parsed);
    std::string error;
    if (!config.ca_pem.empty()) {
      auto certs = parse_certificates(config.ca_pem, "the CA bundle", error);
      if (certs.empty()) {
        setup_error = error;
        return;
      }
      ca_store.reset(X509_STORE_new());
      for (auto& cert : certs) X509_STORE_add_cert(ca_store.get(), cert.get());
    }
    if (!config.client_cert_pem.empty() || !config.client_key_pem.empty()) {
      auto certs = parse_certificates(config.client_cert_pem, "the client certificate", error);
      if (certs.empty()) {
        setup_error = error;
        return;
      }
      client_cert = std::move(certs.front());
      for (std::size_t i = 1; i < certs.size(); ++i) client_chain.push_back(std::move(certs[i]));
      auto bio = memory_bio(config.client_key_pem);
      ERR_clear_error();
      client_key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
      if (!client_key) {
        setup_error = "invalid client key: " + openssl_errors();
        return;
      }
      if (X509_check_private_key(client_cert.get(), client_key.get()) != 1) {
        ERR_clear_error();
        setup_error = "the client key does not match the client certificate";
        return;
      }
    }
    if (!config.token_file.empty()) {
      token_read_at = std::chrono::steady_clock::now();
      if (token.empty()) refresh_token(true);
    }
  }

  // Re-reads token_file when `force` or when the last read is older than kTokenRefresh.
  // On a read failure the previous token stays in use. Returns the current token.
  std::string current_token(bool force = false) {
    if (config.token_file.empty()) return config.token;
    return refresh_token(force);
  }

  std::string refresh_token(bool force) {
    std::lock_guard lock(token_mutex);
    auto now = std::chrono::steady_clock::now();
    if (force || !token_read_at || now - *token_read_at >= kTokenRefresh) {
      std::string error;
      if (auto text = read_text_file(config.token_file, error)) {
        if (auto trimmed = trim(*text); !trimmed.empty()) token = trimmed;
      }
      token_read_at = now;
    }
    return token;
  }

  // A pooled connection idle for less than config.max_idle, else a new one. Older ones
  // are closed here (outside the lock: closing sends a TLS close_notify).
  std::unique_ptr<Connection> acquire(bool pooled = true) {
    std::vector<std::unique_ptr<Connection>> expired;
    if (pooled) {
      const auto now = std::chrono::steady_clock::now();
      std::lock_guard lock(pool_mutex);
      while (!idle.empty()) {
        auto connection = std::move(idle.back());
        idle.pop_back();
        if (now - connection->last_used < config.max_idle) {
          connection->reused = true;
          return connection;
        }
        expired.push_back(std::move(connection));
      }
    }
    expired.clear();
    return connect(config.timeout);
  }

  std::unique_ptr<Connection> connect(std::chrono::milliseconds read_timeout) {
    ++opened;
    auto connection = std::make_unique<Connection>();
    connection->client = std::make_unique<httplib::SSLClient>(url.host, url.port);
    auto& client = *connection->client;
    client.set_connection_timeout(config.timeout);
    client.set_read_timeout(read_timeout);
    client.set_write_timeout(config.timeout);
    client.set_keep_alive(true);
    client.set_tcp_nodelay(true);
    client.enable_server_certificate_verification(false);  // verified by OpenSSL below
    SSL_CTX* ctx = client.ssl_context();
    if (!ctx) return connection;
    SSL_CTX_set_app_data(ctx, connection.get());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (config.insecure_skip_tls_verify) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    } else {
      if (ca_store) {
        SSL_CTX_set1_cert_store(ctx, ca_store.get());
      } else {
        SSL_CTX_set_default_verify_paths(ctx);
      }
      X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
      if (is_ip_address(url.host)) {
        X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
      } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_callback);
    }
    if (client_cert) {
      SSL_CTX_use_certificate(ctx, client_cert.get());
      for (auto& extra : client_chain) SSL_CTX_add1_chain_cert(ctx, extra.get());
      SSL_CTX_use_PrivateKey(ctx, client_key.get());
    }
    ERR_clear_error();
    return connection;
  }

  void release(std::unique_ptr<Connection> connection) {
    connection->last_used = std::chrono::steady_clock::now();
    connection->reused = false;
    std::lock_guard lock(pool_mutex);
    // Most recently used last: acquire() takes from the back, so the freshest is reused.
    if (idle.size() < kMaxIdleConnections) idle.push_back(std::move(connection));
  }

  std::string describe(httplib::Error error, const Connection& connection,
                       std::chrono::steady_clock::duration elapsed) const {
    const std::string target = url.host + ":" + std::to_string(url.port);
    const bool timed_out = elapsed >= config.timeout * 9 / 10;
    const std::string timeout = "timeout after " + std::to_string(config.timeout.count()) + "ms";
    switch (error) {
      case httplib::Error::ConnectionTimeout:
        return timeout + " (connecting to " + target + ")";
      case httplib::Error::Read:
        if (timed_out) return timeout + " (waiting for the response from " + target + ")";
        return "connection failed: " + target + " closed the connection without a response";
      case httplib::Error::Write:
        if (timed_out) return timeout + " (sending the request to " + target + ")";
        return "connection failed: cannot send the request to " + target;
      case httplib::Error::Connection:
        if (timed_out) return timeout + " (connecting to " + target + ")";
        return "connection failed: cannot connect to " + target;
      case httplib::Error::SSLConnection:
      case httplib::Error::SSLServerVerification:
        if (!connection.verify_error.empty()) {
          return "TLS handshake with " + target + " failed: server certificate verification failed: " +
                 connection.verify_error;
        }
        if (timed_out) return timeout + " (TLS handshake with " + target + ")";
        return "TLS handshake with " + target + " failed";
      default:
        return "connection failed: " + target + ": " + httplib::to_string(error);
    }
  }

  struct Attempt {
    KubeResponse response;
    bool resendable = false;  // failed on a reused connection before any response arrived
  };

  Attempt send_once(std::string_view method, const std::string& path_and_query, const std::string& body,
                    std::string_view content_type, const std::string& bearer, bool pooled = true) {
    Attempt attempt;
    KubeResponse& out = attempt.response;
    auto connection = acquire(pooled);
    connection->verify_error.clear();
    const bool reused = connection->reused;
    bool answered = false;  // the status line and headers arrived
    httplib::Request request;
    request.response_handler = [&answered](const httplib::Response&) {
      answered = true;
      return true;
    };
    request.method = std::string(method);
    request.path = url.base_path + path_and_query;
    request.headers.emplace("Accept", "application/json");
    request.headers.emplace("User-Agent", std::string("sizeguard/") + SIZEGUARD_VERSION);
    if (!bearer.empty()) request.headers.emplace("Authorization", "Bearer " + bearer);
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
      request.headers.emplace("Content-Type", std::string(content_type));
      request.body = body;
    }
    auto start = std::chrono::steady_clock::now();
    httplib::Result result = [&] {
      SigpipeGuard guard;
      return connection->client->send(request);
    }();
    auto elapsed = std::chrono::steady_clock::now() - start;
    ERR_clear_error();  // leave no stale OpenSSL errors on this thread
    if (!result) {
      out.transport_error = describe(result.error(), *connection, elapsed);
      // A timeout is not resent: the server may be processing the request.
      const bool closed = result.error() == httplib::Error::Read || result.error() == httplib::Error::Write;
      attempt.resendable = reused && !answered && closed && elapsed < config.timeout * 9 / 10;
      return attempt;  // the connection is dropped, not pooled
    }
    out.status = result->status;
    out.body = std::move(result->body);
    if (result->get_header_value("Connection") != "close") release(std::move(connection));
    return attempt;
  }

  // send_once, and once more on a new connection when the first attempt died on a reused
  // connection before any answer and the method may be repeated.
  KubeResponse send(std::string_view method, const std::string& path_and_query, const std::string& body,
                    std::string_view content_type, const std::string& bearer) {
    Attempt attempt = send_once(method, path_and_query, body, content_type, bearer);
    const bool idempotent = method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE";
    if (attempt.resendable && idempotent) {
      attempt = send_once(method, path_and_query, body, content_type, bearer, /*pooled=*/false);
    }
    return std::move(attempt.response);
  }
};

void KubeStreamCancel::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  if (stop_) stop_();
}

bool KubeStreamCancel::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

KubeClient::KubeClient(KubeConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

KubeClient::~KubeClient() = default;

const KubeConfig& KubeClient::config() const { return impl_->config; }

KubeResponse KubeClient::request(std::string_view method, const std::string& path_and_query,
                                 const std::string& body, std::string_view content_type) {
  if (!impl_->setup_error.empty()) {
    KubeResponse out;
    out.transport_error = impl_->setup_error;
    return out;
  }
  const std::string token = impl_->current_token();
  KubeResponse response = impl_->send(method, path_and_query, body, content_type, token);
  if (response.status == 401 && !impl_->config.token_file.empty()) {
    // The token may have rotated since it was last read: re-read it now, and retry once
    // if it changed (a 401 means the request was not processed, so retrying is safe).
    const std::string fresh = impl_->current_token(true);
    if (fresh != token) response = impl_->send(method, path_and_query, body, content_type, fresh);
  }
  return response;
}

std::size_t KubeClient::connections_opened() const { return impl_->opened.load(); }

KubeResponse KubeClient::stream(const std::string& path_and_query, std::chrono::milliseconds read_timeout,
                                const std::function<void(int)>& on_status,
                                const std::function<bool(std::string_view)>& on_data, KubeStreamCancel& cancel) {
  KubeResponse out;
  if (!impl_->setup_error.empty()) {
    out.transport_error = impl_->setup_error;
    return out;
  }
  auto connection = impl_->connect(read_timeout);
  // cancel() shuts the socket down, which ends the blocking read at once. (Not httplib's
  // stop(): it takes the client's lock from the cancelling thread while the streaming one
  // holds requests in flight.) Whichever of cancel() and the socket's creation comes
  // second does the shutdown, so a cancel racing the connect is not lost.
  auto socket_fd = std::make_shared<std::atomic<int>>(-1);
  connection->client->set_socket_options([socket_fd, &cancel](int sock) {
    socket_fd->store(sock);
    if (cancel.cancelled()) ::shutdown(sock, SHUT_RDWR);
  });
  {
    std::lock_guard lock(cancel.mutex_);
    if (cancel.cancelled_) {
      out.transport_error = "cancelled";
      return out;
    }
    cancel.stop_ = [socket_fd] {
      if (const int fd = socket_fd->load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);
    };
  }
  struct ClearStop {
    KubeStreamCancel& cancel;
    ~ClearStop() {
      std::lock_guard lock(cancel.mutex_);
      cancel.stop_ = nullptr;
    }
  } clear_stop{cancel};

  httplib::Request request;
  request.method = "GET";
  request.path = impl_->url.base_path + path_and_query;
  request.headers.emplace("Accept", "application/json");
  request.headers.emplace("User-Agent", std::string("sizeguard/") + SIZEGUARD_VERSION);
  if (const std::string token = impl_->current_token(); !token.empty()) {
    request.headers.emplace("Authorization", "Bearer " + token);
  }
  auto last_read = std::chrono::steady_clock::now();  // to tell a silent stream from a reset one
  request.response_handler = [&](const httplib::Response& response) {
    last_read = std::chrono::steady_clock::now();
    out.status = response.status;
    if (on_status) on_status(response.status);
    return !cancel.cancelled();  // a cancel that raced the connect
  };
  request.content_receiver = [&](const char* data, std::size_t size, uint64_t, uint64_t) {
    last_read = std::chrono::steady_clock::now();
    if (out.status < 200 || out.status >= 300) {
      if (out.body.size() < 64 * 1024) out.body.append(data, size);
      return true;
    }
    return on_data(std::string_view(data, size));
  };
  last_read = std::chrono::steady_clock::now();
  httplib::Result result = [&] {
    SigpipeGuard guard;
    return connection->client->send(request);
  }();
  ERR_clear_error();
  if (!result && result.error() != httplib::Error::Canceled) {
    const auto now = std::chrono::steady_clock::now();
    const bool silent = result.error() == httplib::Error::Read && now - last_read >= read_timeout * 9 / 10;
    out.transport_error = cancel.cancelled() ? "cancelled"
                          : silent ? "nothing received for " + std::to_string(read_timeout.count()) + "ms"
                                   : impl_->describe(result.error(), *connection, now - last_read);
  }
  return out;
}

std::variant<Json, std::string> KubeClient::get_json(const std::string& path_and_query) {
  const std::string what = "GET " + path_and_query + ": ";
  KubeResponse response = request("GET", path_and_query);
  if (!response.transport_error.empty()) return what + response.transport_error;
  if (response.status < 200 || response.status >= 300) return what + kube_error_summary(response.status, response.body);
  auto parsed = Json::parse(response.body, nullptr, false);
  if (parsed.is_discarded()) return what + "the response is not valid JSON";
  return parsed;
}

}  // namespace sizeguard
