#include "tls_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <mutex>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace sizeguard::test {
namespace {

std::string ssl_error() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    text += text.empty() ? "" : "; ";
    text += buffer;
  }
  return text.empty() ? std::string("errno: ") + std::strerror(errno) : text;
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

struct TlsConnection::State {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  ~State() {
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
};

TlsConnection::~TlsConnection() = default;

TlsConnectResult connect_tls(int port, const std::string& ca_file, std::chrono::milliseconds timeout) {
  // OpenSSL writes with write(2): a server closing first would kill the test process with
  // SIGPIPE instead of failing the write.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { ::signal(SIGPIPE, SIG_IGN); });
  TlsConnectResult result;
  std::unique_ptr<TlsConnection> connection(new TlsConnection());
  connection->state_ = std::make_unique<TlsConnection::State>();
  auto& state = *connection->state_;
  state.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(state.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(state.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(state.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    result.error = std::string("connect: ") + std::strerror(errno);
    return result;
  }
  result.stage = ConnectStage::HandshakeFailed;
  ERR_clear_error();
  state.ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(state.ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(state.ctx, ca_file.c_str(), nullptr) != 1) {
    result.error = "cannot load CA " + ca_file + ": " + ssl_error();
    return result;
  }
  state.ssl = SSL_new(state.ctx);
  SSL_set_fd(state.ssl, state.fd);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(state.ssl), "127.0.0.1");
  if (SSL_connect(state.ssl) != 1) {
    result.error = "TLS handshake: " + ssl_error();
    return result;
  }
  result.stage = ConnectStage::Connected;
  result.connection = std::move(connection);
  return result;
}

bool TlsConnection::send(std::string_view bytes) {
  ERR_clear_error();
  size_t written = 0;
  if (bytes.empty()) return true;
  if (SSL_write_ex(state_->ssl, bytes.data(), bytes.size(), &written) != 1 || written != bytes.size()) {
    error_ = "write: " + ssl_error();
    return false;
  }
  return true;
}

bool TlsConnection::fill() {
  char chunk[16384];
  size_t got = 0;
  ERR_clear_error();
  if (SSL_read_ex(state_->ssl, chunk, sizeof chunk, &got) != 1) {
    int code = SSL_get_error(state_->ssl, 0);
    error_ = code == SSL_ERROR_ZERO_RETURN ? "connection closed by the server" : "read: " + ssl_error();
    return false;
  }
  buffer_.append(chunk, got);
  return true;
}

std::optional<HttpResponse> TlsConnection::read_response() {
  size_t header_end;
  while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return std::nullopt;
  }
  HttpResponse response;
  std::string head = buffer_.substr(0, header_end);
  buffer_.erase(0, header_end + 4);
  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.rfind("HTTP/1.1 ", 0) != 0 || status_line.size() < 12) {
    error_ = "bad status line: " + status_line;
    return std::nullopt;
  }
  response.status = std::stoi(status_line.substr(9, 3));
  while (line_end != std::string::npos) {
    size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    std::string line = head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    response.headers[lower(line.substr(0, colon))] = value;
  }
  if (response.status == 100) return read_response();
  if (auto it = response.headers.find("content-length"); it != response.headers.end()) {
    size_t length = std::stoul(it->second);
    while (buffer_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
  } else if (lower(response.headers["transfer-encoding"]).find("chunked") != std::string::npos) {
    for (;;) {
      size_t end;
      while ((end = buffer_.find("\r\n")) == std::string::npos) {
        if (!fill()) return std::nullopt;
      }
      size_t size = std::stoul(buffer_.substr(0, end), nullptr, 16);
      while (buffer_.size() < end + 2 + size + 2) {
        if (!fill()) return std::nullopt;
      }
      response.body += buffer_.substr(end + 2, size);
      buffer_.erase(0, end + 2 + size + 2);
      if (size == 0) break;
    }
  }
  return response;
}

bool TlsConnection::wait_closed() {
  for (;;) {
    char chunk[4096];
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(state_->ssl, chunk, sizeof chunk, &got) == 1) continue;
    int code = SSL_get_error(state_->ssl, 0);
    // SO_RCVTIMEO expiry shows up as a syscall error with EAGAIN: not closed.
    if (code == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (code == SSL_ERROR_WANT_READ) return false;
    return true;
  }
}

std::string TlsConnection::negotiated_protocol() const { return SSL_get_version(state_->ssl); }

std::string apiserver_request(std::string_view target, std::string_view body, int port) {
  std::string request = "POST " + std::string(target) + " HTTP/1.1\r\n";
  request += "Host: 127.0.0.1:" + std::to_string(port) + "\r\n";
  request += "User-Agent: kube-apiserver-admission\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  request += "Accept: application/json, */*\r\n";
  request += "Content-Type: application/json\r\n";
  request += "Accept-Encoding: gzip\r\n\r\n";
  request += body;
  return request;
}

}  // namespace sizeguard::test
