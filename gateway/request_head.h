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
  std::string target;                                       // as sent: path and query
  std::string version;                                      // what follows the target
  std::vector<std::pair<std::string, std::string>> fields;  // names lower-cased, values trimmed
  // The same as Pistache 0.0.5 reads them: the name as sent, the value from
  // the first character that is not a space to the end of the line.
  std::vector<std::pair<std::string, std::string>> raw_fields;
  std::string unreadable_field;  // the first field line without a ':', or folded
  size_t size = 0;               // bytes, the blank line that ends it included

  // The first field of that (lower-case) name.
  std::optional<std::string_view> Field(std::string_view name) const;
  // Content-Length: nullopt when absent or not a number; UINT64_MAX when its
  // digits overflow. Of several, the largest.
  std::optional<uint64_t> ContentLength() const;
  // Why the body's length cannot be trusted: a Content-Length that is not a
  // number, several that differ, or one beside a Transfer-Encoding (RFC 9112,
  // 6.3), or a Transfer-Encoding other than chunked (Pistache answered a
  // plain-text 501); empty when it can be.
  std::string FramingError() const;
  // Why the head cannot be read, for a 400 in the gateway's JSON where
  // Pistache 0.0.5 answered in plain text or not at all: a request line that
  // is not METHOD SP TARGET SP HTTP/1.x, a method Pistache does not know, a
  // field line without a ':' (Pistache waited for one until the client timed
  // out) or folded onto the line before (RFC 9112, 5.2); empty when it can.
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

}  // namespace intgrads
