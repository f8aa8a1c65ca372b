// A small Kubernetes API client: configuration from the in-cluster service account or a
// kubeconfig file, and a thread-safe HTTPS client (a pool of keep-alive connections)
// that authenticates with a bearer token (optionally re-read from a file) or a client
// certificate, and verifies the server against the configured CA.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>

#include "kube/review.h"

namespace sizeguard {

struct KubeConfig {
  std::string server;                 // "https://10.0.0.1:443"
  std::string ca_pem;                 // trusted CA bundle (PEM text); empty = system default
  bool insecure_skip_tls_verify = false;
  std::string token;                  // bearer token, or
  std::string token_file;             // re-read at most every 60 s (bound tokens rotate)
  std::string client_cert_pem, client_key_pem;  // client-certificate auth
  std::chrono::milliseconds timeout{2000};      // connect + read + write, per request
  // A pooled keep-alive connection idle longer than this is closed, not reused: the
  // apiserver closes idle connections after 90 s, and a request written into a
  // connection the server is closing fails.
  std::chrono::milliseconds max_idle{30000};
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

// Ends a running KubeClient::stream from another thread (shutdown of a watch).
class KubeStreamCancel {
 public:
  void cancel();
  bool cancelled() const;

 private:
  friend class KubeClient;
  mutable std::mutex mutex_;
  bool cancelled_ = false;
  std::function<void()> stop_;  // closes the running stream's socket
};

class KubeClient {
 public:
  explicit KubeClient(KubeConfig config);
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // Thread-safe. path_and_query must already be escaped (see kube_path_escape).
  // A GET, HEAD, PUT or DELETE that fails on a reused pooled connection before any
  // response arrived is sent once more on a new connection: the server closed the idle
  // connection as the request went out, so it was not processed.
  KubeResponse request(std::string_view method, const std::string& path_and_query,
                       const std::string& body = "", std::string_view content_type = "application/json");

  // GET returning parsed JSON, or e.g. "GET /api/v1/namespaces/x: 403 Forbidden: <message>",
  // "GET ...: timeout after 2000ms", "GET ...: connection failed: ...".
  std::variant<Json, std::string> get_json(const std::string& path_and_query);

  // A streaming GET (a watch) on a connection of its own, never pooled. `on_status` gets
  // the status as soon as the headers arrive; `on_data` the body bytes of a 2xx answer as
  // they arrive (return false to stop); other answers are collected into `body`. Returns
  // when the server ends the response, on_data says stop, nothing arrives for
  // `read_timeout`, or `cancel` fires.
  KubeResponse stream(const std::string& path_and_query, std::chrono::milliseconds read_timeout,
                      const std::function<void(int)>& on_status,
                      const std::function<bool(std::string_view)>& on_data, KubeStreamCancel& cancel);

  // Connections opened so far (tests: the idle bound and the retry are observable).
  std::size_t connections_opened() const;

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
