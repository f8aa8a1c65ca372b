// A small blocking HTTPS/1.1 client over raw OpenSSL for server tests: it reports exactly
// how far a connection got (refused, handshake failed, connected), can send partial
// requests and stall, and verifies the server certificate against a CA file and the IP
// 127.0.0.1. Every blocking call is bounded by the timeout given at connect (a hang guard).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sizeguard::test {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

class TlsConnection;

enum class ConnectStage { Refused, HandshakeFailed, Connected };

struct TlsConnectResult {
  ConnectStage stage = ConnectStage::Refused;
  std::string error;
  std::unique_ptr<TlsConnection> connection;  // set when Connected
};

// Connects to 127.0.0.1:port and completes the TLS handshake.
TlsConnectResult connect_tls(int port, const std::string& ca_file, std::chrono::milliseconds timeout);

class TlsConnection {
 public:
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  bool send(std::string_view bytes);
  // Reads one response (Content-Length or chunked body); nullopt on EOF/error/timeout,
  // with the reason in last_error().
  std::optional<HttpResponse> read_response();
  // True if the server closed the connection (EOF or reset) within the timeout.
  bool wait_closed();
  const std::string& last_error() const { return error_; }
  std::string negotiated_protocol() const;  // e.g. "TLSv1.3"

 private:
  friend TlsConnectResult connect_tls(int, const std::string&, std::chrono::milliseconds);
  TlsConnection() = default;
  bool fill();
  struct State;
  std::unique_ptr<State> state_;
  std::string buffer_;
  std::string error_;
};

// "POST /mutate?timeout=10s HTTP/1.1" with the headers a kube-apiserver sends
// (Content-Type, Accept, User-Agent, Accept-Encoding: gzip) plus Content-Length.
std::string apiserver_request(std::string_view target, std::string_view body, int port);

}  // namespace sizeguard::test
