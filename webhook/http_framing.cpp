#include "webhook/http_framing.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <string_view>

namespace sizeguard {
namespace {

bool header_is(std::string_view line, std::string_view name) {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

bool equals_ignoring_case(std::string_view a, std::string_view lower) {
  return a.size() == lower.size() &&
         std::equal(a.begin(), a.end(), lower.begin(), [](char x, char y) { return std::tolower(static_cast<unsigned char>(x)) == y; });
}

std::string_view header_value(std::string_view line, std::size_t name_size) {
  std::string_view value = line.substr(name_size + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  return value;
}

// A header line httplib parses as an empty "X" header: hides a header the loop already
// acted on (Expect) or replaced (Transfer-Encoding, Content-Length of a decoded chunked
// body) without moving the bytes behind it.
void blank_header_line(std::string& in, std::size_t start, std::size_t end_before_cr) {
  in[start] = 'X';
  in[start + 1] = ':';
  std::fill(in.begin() + static_cast<std::ptrdiff_t>(start + 2), in.begin() + static_cast<std::ptrdiff_t>(end_before_cr), ' ');
}

Framing refuse(Connection& c, int status, std::string message) {
  c.refuse_status = status;
  c.refuse_message = std::move(message);
  return Framing::Refused;
}

// Chunk-size lines (with extensions) and trailer lines longer than this are refused, as
// Go's server does at 4 KiB.
constexpr std::size_t kMaxChunkLine = 4096;

// Follows a chunked body from c.chunk_pos as it arrives. Once it is whole, the request is
// rewritten in place as a Content-Length request (chunks decoded, trailers dropped), so a
// worker never waits for a chunk and the large-review lane sees the real size.
Framing frame_chunks(Connection& c, std::size_t max_body) {
  std::string& in = c.in;
  for (;;) {
    const std::size_t line_end = in.find("\r\n", c.chunk_pos);
    if (line_end == std::string::npos) {
      if (in.size() - c.chunk_pos > kMaxChunkLine) return refuse(c, 400, "chunk or trailer line too long");
      if (in.find('\n', c.chunk_pos) != std::string::npos) return refuse(c, 400, "malformed chunked body: bare LF");
      return Framing::Incomplete;
    }
    std::string_view line(in.data() + c.chunk_pos, line_end - c.chunk_pos);
    if (line.size() > kMaxChunkLine) return refuse(c, 400, "chunk or trailer line too long");
    if (c.chunk_trailers) {
      c.chunk_pos = line_end + 2;
      if (!line.empty()) continue;  // a trailer field, dropped
      break;
    }
    std::string_view size_text = line.substr(0, line.find(';'));
    while (!size_text.empty() && (size_text.back() == ' ' || size_text.back() == '\t')) size_text.remove_suffix(1);
    std::uint64_t size = 0;
    auto [stop, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || stop != size_text.data() + size_text.size() || size_text.front() == '+' ||
        size_text.front() == '-') {
      return refuse(c, 400, "malformed chunked body: bad chunk size");
    }
    if (ec != std::errc() || size > max_body - c.chunk_data) {  // chunk_data <= max_body
      return refuse(c, 413, "request body is larger than the limit of " + std::to_string(max_body) +
                                " bytes (--max-body-bytes)");
    }
    if (size == 0) {
      c.chunk_trailers = true;
      c.chunk_pos = line_end + 2;
      continue;
    }
    const std::size_t data_end = line_end + 2 + static_cast<std::size_t>(size);
    if (in.size() < data_end + 2) return Framing::Incomplete;  // resumes at this chunk line
    if (in[data_end] != '\r' || in[data_end + 1] != '\n') return refuse(c, 400, "malformed chunked body: no CRLF after a chunk");
    c.chunk_data += size;
    c.chunk_pos = data_end + 2;
  }
  // Whole: headers (Transfer-Encoding and Content-Length blanked) + Content-Length + data.
  std::string rewritten;
  rewritten.reserve(c.body_start + 32 + static_cast<std::size_t>(c.chunk_data) + (in.size() - c.chunk_pos));
  std::string head = in.substr(0, c.body_start - 2);
  for (std::size_t start = head.find('\n') + 1; start < head.size();) {
    std::size_t end = head.find("\r\n", start);
    if (end == std::string::npos) end = head.size();
    std::string_view line(head.data() + start, end - start);
    if (header_is(line, "transfer-encoding") || header_is(line, "content-length")) blank_header_line(head, start, end);
    start = end + 2;
  }
  rewritten += head;
  rewritten += "Content-Length: " + std::to_string(c.chunk_data) + "\r\n\r\n";
  for (std::size_t at = c.body_start;;) {
    const std::size_t line_end = in.find("\r\n", at);
    std::uint64_t size = 0;
    std::from_chars(in.data() + at, in.data() + line_end, size, 16);
    if (size == 0) break;
    rewritten.append(in, line_end + 2, static_cast<std::size_t>(size));
    at = line_end + 2 + static_cast<std::size_t>(size) + 2;
  }
  const std::size_t body_start = rewritten.size() - static_cast<std::size_t>(c.chunk_data);
  rewritten.append(in, c.chunk_pos, std::string::npos);
  in.swap(rewritten);
  c.needed = body_start + static_cast<std::size_t>(c.chunk_data);
  c.body_bytes = c.chunk_data;
  c.chunk_pos = c.chunk_data = 0;
  c.chunk_trailers = false;
  return Framing::Complete;
}


}  // namespace

Framing frame_request(Connection& c, std::size_t max_body) {
  if (c.refuse_status != 0) return Framing::Refused;
  if (c.needed > 0) return c.in.size() >= c.needed ? Framing::Complete : Framing::Incomplete;
  if (c.chunk_pos > 0) return frame_chunks(c, max_body);
  const char* data = c.in.data();
  const std::size_t size = c.in.size();
  std::size_t end = 0;
  for (std::size_t i = c.scanned; i < size;) {
    const void* found = std::memchr(data + i, '\n', size - i);
    if (!found) break;
    i = static_cast<std::size_t>(static_cast<const char*>(found) - data);
    // httplib's parser refuses lines without CR anyway: refused here, without a worker.
    if (i == 0 || data[i - 1] != '\r') return refuse(c, 400, "malformed HTTP request: line ends with a bare LF");
    if (i + 2 < size && data[i + 1] == '\r' && data[i + 2] == '\n') {
      end = i + 3;
      break;
    }
    ++i;
  }
  if (end == 0) {
    c.scanned = size >= 2 ? size - 2 : 0;
    if (size > kMaxHeaderBytes) return refuse(c, 431, "request header fields are larger than 65536 bytes");
    return Framing::Incomplete;
  }
  if (end > kMaxHeaderBytes) return refuse(c, 431, "request header fields are larger than 65536 bytes");
  std::uint64_t length = 0;
  std::string_view first_length;
  bool has_length = false, chunked = false, expect_continue = false;
  int transfer_encodings = 0;
  std::string_view headers(data, end);
  for (std::size_t line_start = headers.find('\n') + 1; line_start < end;) {
    std::size_t line_end = headers.find('\n', line_start);
    std::string_view line = headers.substr(line_start, line_end - line_start);
    const std::size_t at = line_start;
    line_start = line_end + 1;
    if (header_is(line, "transfer-encoding")) {
      ++transfer_encodings;
      chunked = equals_ignoring_case(header_value(line, 17), "chunked");
      if (!chunked || transfer_encodings > 1) {
        return refuse(c, 501, "unsupported Transfer-Encoding: only a single \"chunked\" is accepted");
      }
    } else if (header_is(line, "expect")) {
      if (!equals_ignoring_case(header_value(line, 6), "100-continue")) {
        return refuse(c, 417, "unsupported Expect: only \"100-continue\" is accepted");
      }
      expect_continue = true;
      blank_header_line(c.in, at, line_end - 1);  // answered here; httplib must not answer it again
      data = c.in.data();
      headers = std::string_view(data, end);
    } else if (header_is(line, "content-length")) {
      // As Go's server: 1*DIGIT within int64; repeats must agree.
      std::string_view value = header_value(line, 14);
      if (has_length) {
        if (value != first_length) return refuse(c, 400, "conflicting Content-Length headers");
        continue;
      }
      auto [stop, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (value.empty() || value.front() == '+' || value.front() == '-' || ec != std::errc() ||
          stop != value.data() + value.size() || length > static_cast<std::uint64_t>(INT64_MAX)) {
        return refuse(c, 400, "invalid Content-Length");
      }
      first_length = value;
      has_length = true;
    }
  }
  if (chunked) {  // Transfer-Encoding overrides Content-Length (RFC 9112 6.3)
    c.body_start = c.chunk_pos = end;
    c.chunk_data = 0;
    c.chunk_trailers = false;
    Framing framing = frame_chunks(c, max_body);
    c.continue_due = expect_continue && framing == Framing::Incomplete;
    return framing;
  }
  if (length > max_body) {
    // Drop what already arrived of the body; the rest is discarded after the answer.
    std::size_t here = static_cast<std::size_t>(std::min<std::uint64_t>(size - end, length));
    c.in.erase(end, here);
    c.skipped = length;
    c.skip_at = end;
    c.needed = end;
    // Counted in bytes on the wire: TLS adds a header and tag to every record of up to
    // 16 KiB, and reaching the budget with bytes still arriving would reset the connection
    // (losing the 413), so the allowance is generous.
    const std::uint64_t rest = length - here;
    c.linger_budget = rest == 0 ? 0 : rest + rest / 16 + 64 * 1024;
    return Framing::Complete;
  }
  c.needed = end + static_cast<std::size_t>(length);
  c.body_bytes = length;
  if (size >= c.needed) return Framing::Complete;
  c.continue_due = expect_continue;
  c.in.reserve(c.needed);
  return Framing::Incomplete;
}

}  // namespace sizeguard
