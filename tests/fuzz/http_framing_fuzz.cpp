// HTTP request framing in front of the server: the input bytes are sent as they are over a
// fresh TCP connection to a running listener (the plain-HTTP metrics listener, which frames
// requests with the same event loop as the webhook listener), then the client half-closes.
// Whatever the bytes (pipelined requests, chunked bodies, bad lengths, Expect, bare LF,
// huge headers), the server must answer with well-formed HTTP/1.1 responses and close the
// connection promptly, never leaving it hanging until the read timeout; and a good request
// on a new connection must still be answered.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "webhook/devcerts.h"
#include "kube/metrics.h"
#include "webhook/server.h"

namespace {

using namespace sizeguard;

struct World {
  Metrics metrics;
  Readiness readiness;
  std::unique_ptr<AdmissionServer> server;
  int port = 0;
};
World* world = nullptr;

[[noreturn]] void violation(const char* what, std::string_view detail) {
  std::fprintf(stderr, "http_framing_fuzz: invariant violated: %s\n%.*s\n", what,
               static_cast<int>(std::min<size_t>(detail.size(), 2000)), detail.data());
  std::abort();
}

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  // Far below the server's read timeout (10 s): only a server waiting on a client that
  // already finished sending runs into it.
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) return fd;
  // libFuzzer's timeout alarm interrupts connect(), which then completes on its own.
  int error = errno;
  if (error == EINTR) {
    pollfd p{fd, POLLOUT, 0};
    while (::poll(&p, 1, 3000) < 0 && errno == EINTR) {
    }
    socklen_t length = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error == 0 && (p.revents & POLLOUT)) return fd;
  }
  violation("connect", std::strerror(error));
}

// Sends `bytes`, half-closes and reads until the server closes. False on a receive timeout;
// `error` is the errno that ended the read (0 at a clean EOF).
bool exchange(int port, std::string_view bytes, std::string& received, int& error) {
  const int fd = connect_to(port);
  // The server may answer and close before reading everything (an early 4xx): a failed
  // send is fine, what counts is what comes back.
  for (size_t sent = 0; sent < bytes.size();) {
    ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;  // libFuzzer's timeout alarm
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buffer[16384];
  bool closed = false;
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;  // libFuzzer's timeout alarm
    if (n > 0) {
      received.append(buffer, static_cast<size_t>(n));
      continue;
    }
    error = n == 0 ? 0 : errno;
    closed = n == 0 || errno == ECONNRESET;
    break;
  }
  // The server has closed: a reset instead of a FIN leaves no TIME_WAIT behind on this
  // side, so thousands of connections a second do not use up the loopback ports.
  linger no_wait{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_wait, sizeof no_wait);
  ::close(fd);
  return closed;
}

// Every response: "HTTP/1.1 NNN ...", headers, CRLF CRLF, then Content-Length bytes
// (interim 1xx responses and answers to HEAD have none: the next status line follows).
void check_responses(std::string_view received) {
  while (!received.empty()) {
    if (!received.starts_with("HTTP/1.1 ") || received.size() < 12) violation("a response starts with a status line", received);
    const int status = std::atoi(std::string(received.substr(9, 3)).c_str());
    if (status < 100 || status > 599) violation("a valid status code", received);
    if (status >= 500 && status != 501 && status != 503) violation("no server error for client input", received);
    const size_t end = received.find("\r\n\r\n");
    if (end == std::string_view::npos) violation("a response has a complete header section", received);
    std::string head(received.substr(0, end + 2));
    for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    size_t length = 0;
    if (const size_t at = head.find("\r\ncontent-length:"); at != std::string::npos) {
      length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
    } else if (status >= 200) {
      violation("a final response has a Content-Length", received);
    }
    const std::string_view rest = received.substr(end + 4);
    if (rest.empty() || rest.starts_with("HTTP/1.1 ")) length = 0;  // HEAD
    if (received.size() < end + 4 + length) violation("a response body is complete", received);
    received.remove_prefix(end + 4 + length);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  world = new World;
  const auto dir = make_private_temp_directory("sizeguard-http-fuzz");
  const DevCertificates certs = make_dev_certificates(dir);
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  options.tls_cert = certs.server_cert.string();
  options.tls_key = certs.server_key.string();
  options.workers = 4;
  world->server = std::make_unique<AdmissionServer>(options, AdmissionHandlers{}, world->metrics, world->readiness);
  world->server->start();
  world->port = world->server->metrics_port();
  std::filesystem::remove_all(dir);  // the certificates are loaded
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string received;
  int error = 0;
  if (!exchange(world->port, bytes, received, error)) {
    violation("the server answers or closes within 3 s of the client's EOF", std::string(bytes) + "\n--- got:\n" + received);
  }
  check_responses(received);
  std::string healthz;
  const bool closed = exchange(world->port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", healthz, error);
  if (!closed || !healthz.starts_with("HTTP/1.1 200 ")) {
    violation("a good request on a new connection is answered afterwards",
              std::string(closed ? "closed" : "timed out") + ", errno " + std::to_string(error) + ": " + healthz);
  }
  return 0;
}
