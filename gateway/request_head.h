// An HTTP request's head (request line and header fields) read from the raw
// bytes, before the server's parser has seen the blank line that ends it.
// The gateway uses it to refuse a body that is too large while only its
// head has arrived: Pistache 0.0.5 reserves Content-Length bytes as soon as
// the head is complete, and answers a body over its buffer in plain text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace intgrads {

struct RequestHead {
  std::string request_line;  // as sent
  std::string method;
  std::string target;   // as sent: path and query
  std::string version;  // what follows the target
  // As Pistache 0.0.5 reads them (its own parsers run on them): the name as
  // sent, the value from the first character that is not a space to the end
  // of the line.
  std::vector<std::pair<std::string, std::string>> fields;
  std::string unreadable_field;  // the first field line without a ':', or folded
  size_t size = 0;               // bytes, the blank line that ends it included

  // The values of the fields of that (lower-case) name, any case as sent,
  // without the spaces and tabs around them, in order.
  std::vector<std::string_view> Values(std::string_view name) const;
  // The first of them.
  std::optional<std::string_view> Field(std::string_view name) const;
  // The comma-separated elements of those values (a list field: Connection,
  // Content-Encoding), in lower case, trimmed, empty ones skipped.
  std::vector<std::string> Tokens(std::string_view name) const;
  // Content-Length: nullopt when absent or not a number; UINT64_MAX when its
  // digits overflow. Of several, the largest.
  std::optional<uint64_t> ContentLength() const;
  // Why the body's length cannot be trusted: a Content-Length that is not a
  // number, several that differ, or one beside a Transfer-Encoding (RFC 9112,
  // 6.3), or a Transfer-Encoding other than chunked (Pistache answered a
  // plain-text 501); empty when it can be.
  std::string FramingError() const;
  // Why the body cannot be read as sent: a Content-Encoding other than
  // identity (gzip, deflate, ...: the server reads bodies uncompressed, and
  // without this a compressed body was refused as "not valid JSON"), for a
  // 415 (RFC 9110, 15.5.16); empty when it can.
  std::string ContentCodingError() const;
  // Why the head cannot be read, for a 400 in the gateway's JSON where
  // Pistache 0.0.5 answered in plain text or not at all: a request line that
  // is not METHOD SP TARGET SP HTTP/1.x, a method Pistache does not know, a
  // field line without a ':' (Pistache waited for one until the client timed
  // out) or folded onto the line before (RFC 9112, 5.2), a field name that is
  // not a token (a space before the colon: RFC 9112, 5.1); empty when it can.
  // (RFC 9110 would allow a 501 for the method and a 505 for the version;
  // bad input gets a 4xx here, as the README promises.)
  std::string SyntaxError() const;
  // Whether the client wants the connection kept open after the answer: its
  // Connection fields list "keep-alive" and not "close" (RFC 9112, 9.3),
  // tokens in any case and order. Without "keep-alive" the answer closes, as
  // Pistache 0.0.5 answers (it read only the field's first token, and
  // answered "Connection: Ext" to any other, keeping the connection open).
  bool KeepsAlive() const;
  // Whether the client waits for a 100 (Continue) before it sends the body.
  bool ExpectsContinue() const;
};

// The head at the start of bytes, once bytes hold its terminating blank line;
// nullopt before that. Field lines it cannot read are skipped (the first is
// kept for SyntaxError); the server's own parser still judges the rest. For a
// head arriving in pieces, `searched` says how many leading bytes an earlier
// call already saw without the blank line, so each byte is scanned once.
std::optional<RequestHead> ParseRequestHead(std::string_view bytes, size_t searched = 0);

// Follows a chunked body (RFC 9112, 7.1: chunks of a hexadecimal size line,
// the data and CRLF; a last chunk of size 0, trailer fields, and the blank
// line) through its bytes as they arrive, to find where it ends: the bytes
// after that are the next request, pipelined. A trailer line needs a ':', so
// a request line after a last chunk is no trailer. Chunk extensions (";name=value"
// after the size), which RFC 9112 allows, are an error: Pistache 0.0.5 cannot
// read them (a plain-text 400 "Invalid chunk size"). So are a size line of
// more than 16 digits and trailer fields of more than kMaxTrailerBytes:
// Pistache reads a line again from its start each time more of it arrives.
// A chunk larger than what is left of `max_body_bytes` is refused from its
// size line (a 413), before any of its data: Pistache reserved a chunk's
// size as soon as it had read it (a 1 GiB size reserved 1 GiB).
class ChunkedBody {
 public:
  static constexpr size_t kMaxSizeDigits = 16;
  static constexpr size_t kMaxTrailerBytes = size_t{64} * 1024;

  explicit ChunkedBody(uint64_t max_body_bytes = UINT64_MAX) : limit_(max_body_bytes), left_(max_body_bytes) {}
  // Reads the next bytes; returns how many of them belong to the body (all of
  // them until it ends or an error). The chunks' data is appended to `data`
  // when given.
  size_t Feed(std::string_view bytes, std::string* data = nullptr);
  // Whether the body has ended.
  bool ended() const { return state_ == State::kEnded; }
  // Why the bytes are not a chunked body this server reads; empty while
  // they are.
  const std::string& error() const { return error_; }
  // The HTTP status of the error: 413 for a body over the limit, else 400.
  int error_status() const { return error_status_; }

 private:
  enum class State {
    kSize,
    kSizeEnd,
    kData,
    kDataEnd,
    kDataEndLf,
    kFieldStart,
    kField,
    kFieldEnd,
    kEndLf,
    kEnded,
    kError
  };
  void Fail(std::string error, int status = 400);

  State state_ = State::kSize;
  size_t digits_ = 0;   // of the size line so far
  bool colon_ = false;  // the trailer line has had a ':'
  uint64_t size_ = 0;   // of the chunk being read; then what remains of its data
  uint64_t limit_;      // on the body's data
  uint64_t left_;       // of it, less the chunks' sizes so far
  size_t trailer_ = 0;  // bytes of trailer fields so far
  std::string error_;
  int error_status_ = 400;
};

// The 413's message for a body over the limit (its size when known).
std::string BodyTooLarge(std::optional<uint64_t> body_bytes, uint64_t max_body_bytes);

}  // namespace intgrads
