// A small Kubernetes API client: configuration from the in-cluster service account or a
// kubeconfig file, and a thread-safe HTTPS client (a pool of keep-alive connections)
// that authenticates with a bearer token (optionally re-read from a file) or a client
// certificate, and verifies the server against the configured CA.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "webhook/review.h"

namespace sizeguard {

struct KubeConfig {
  std::string server;                 // "https://10.0.0.1:443"
  std::string ca_pem;                 // trusted CA bundle (PEM text); empty = system default
  bool insecure_skip_tls_verify = false;
  std::string token;                  // bearer token, or
  std::string token_file;             // re-read at most every 60 s (bound tokens rotate)
  std::string client_cert_pem, client_key_pem;  // client-certificate auth
  std::chrono::milliseconds timeout{2000};      // connect + read + write, per request
  std::string source;                 // "in-cluster" or "kubeconfig /path (context x)"
};

// In-cluster: KUBERNETES_SERVICE_HOST/PORT and token/ca.crt under `sa_dir`. The error
// says exactly what is missing.
std::variant<KubeConfig, std::string> in_cluster_config(
    const std::filesystem::path& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");

// kubeconfig YAML: current-context (or `context`), its cluster (server, certificate-authority
// or certificate-authority-data, insecure-skip-tls-verify) and user (token, tokenFile,
// client-certificate(-data), client-key(-data)). Relative paths resolve against the
// kubeconfig's directory. exec / auth-provider plugins are not supported (an error).
std::variant<KubeConfig, std::string> kubeconfig_config(const std::filesystem::path& path,
                                                        const std::string& context = "");

struct KubeResponse {
  int status = 0;
  std::string body;
  std::string transport_error;  // set when no HTTP answer: timeout, refused, TLS
};

class KubeClient {
 public:
  explicit KubeClient(KubeConfig config);
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // Thread-safe. path_and_query must already be escaped (see kube_path_escape).
  KubeResponse request(std::string_view method, const std::string& path_and_query,
                       const std::string& body = "", std::string_view content_type = "application/json");

  // GET returning parsed JSON, or e.g. "GET /api/v1/namespaces/x: 403 Forbidden: <message>",
  // "GET ...: timeout after 2000ms", "GET ...: connection failed: ...".
  std::variant<Json, std::string> get_json(const std::string& path_and_query);

  const KubeConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes everything except RFC 3986 unreserved characters (for query values
// such as labelSelector and for path segments).
std::string kube_path_escape(std::string_view text);

// "403 Forbidden: <status.message>" style summary of an error response body.
std::string kube_error_summary(int status, const std::string& body);

}  // namespace sizeguard
