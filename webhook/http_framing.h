// HTTP/1.1 request framing for the event loop: one connection's received bytes and the
// limits on them (header section size, Content-Length, chunked bodies, Expect), decided
// before any worker parses the request, so a worker never waits for a client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <openssl/ssl.h>

#include "webhook/server_internal.h"

namespace sizeguard {

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// Header sections larger than this are refused (431): the loop does not buffer more while
// looking for the end of the headers (a worker given them would wait for the rest).
constexpr std::size_t kMaxHeaderBytes = 64 * 1024;
constexpr std::size_t kReadChunk = 16 * 1024;  // one TLS record's worth of plaintext

// One client connection. The listener's event loop owns it while it handshakes, waits
// for a request or receives one; a worker owns it from the moment a complete request is
// buffered until the answer is written. Ownership moves through queues, never shared.
struct Connection {
  enum class Phase { Handshake, AwaitFirst, Idle, Receiving, Lingering };
  int fd = -1;
  SslPtr ssl;
  Phase phase = Phase::AwaitFirst;
  Clock::time_point deadline;         // of the current phase
  Clock::time_point request_started;  // first byte of the request being received
  std::size_t served = 0;
  bool close = false;  // set by the worker: close once back in the loop
  bool broken = false;  // I/O failed: no close_notify
  bool writing = false;  // the handshake waits for the socket to become writable

  // Received bytes; `pos` is how far the worker's parser has read. Requests are framed
  // here (headers end + Content-Length) without copying the body.
  std::string in;
  std::size_t pos = 0;
  std::size_t scanned = 0;  // where the search for the end of the headers resumes
  std::size_t needed = 0;   // bytes of the whole current request, once its headers are in
  std::uint64_t body_bytes = 0;  // its declared Content-Length
  // A request declaring a body over the size limit goes to a worker as soon as its headers
  // are in: the parser's stream ends at offset `skip_at`, where the `skipped` body bytes
  // would start, so httplib answers 413. The connection then closes, and the loop discards what the
  // client still sends as raw TCP bytes (Phase::Lingering), never decrypting them, so
  // the 413 is not lost to a reset and an oversize sender costs the loop almost nothing.
  std::uint64_t skipped = 0;  // the declared body length the parser never sees
  std::size_t skip_at = 0;
  std::uint64_t linger_budget = 0;  // raw bytes still discarded before closing anyway
  // A chunked body being received: where the next chunk-size (or trailer) line starts,
  // the data bytes before it, and where the body starts.
  std::size_t chunk_pos = 0, body_start = 0;
  std::uint64_t chunk_data = 0;
  bool chunk_trailers = false;
  bool continue_due = false;  // "Expect: 100-continue": the loop owes "100 Continue"
  // Framing the loop refuses itself (status, message), answered with Connection: close.
  int refuse_status = 0;
  std::string refuse_message;

  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;

  void consume() {
    in.erase(0, pos);
    pos = scanned = needed = skip_at = chunk_pos = body_start = 0;
    body_bytes = chunk_data = 0;
    chunk_trailers = continue_due = false;
  }
};

enum class Framing { Incomplete, Complete, Refused };

// Whether `c.in` holds a whole request. The loop holds every request until it is whole,
// Content-Length and chunked bodies alike, so a worker never waits for a client; framing
// a worker could not parse without waiting, or that Go's server refuses (bad, signed,
// hexadecimal, overflowing or conflicting Content-Length, transfer codings other than
// chunked, bare LF line ends, header sections over 64 KiB), is refused (c.refuse_status)
// as soon as it is seen. "Expect: 100-continue" asks the loop for "100 Continue"
// (c.continue_due) when the body is not already here.
Framing frame_request(Connection& c, std::size_t max_body);

}  // namespace sizeguard
