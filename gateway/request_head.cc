#include "gateway/request_head.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <set>

#include "common/request.h"
#include "common/text.h"

namespace intgrads {

namespace {

bool IsNumber(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

std::vector<std::string_view> RequestHead::Values(std::string_view name) const {
  std::vector<std::string_view> values;
  for (const auto& [field, value] : fields) {
    if (Lower(field) == name) values.push_back(Trim(value));
  }
  return values;
}

std::optional<std::string_view> RequestHead::Field(std::string_view name) const {
  const std::vector<std::string_view> values = Values(name);
  if (values.empty()) return std::nullopt;
  return values.front();
}

std::optional<uint64_t> RequestHead::ContentLength() const {
  std::optional<uint64_t> largest;
  for (const std::string_view value : Values("content-length")) {
    if (!IsNumber(value)) continue;
    uint64_t length = 0;
    for (const char c : value) {
      const auto digit = static_cast<uint64_t>(c - '0');
      if (length > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
        length = std::numeric_limits<uint64_t>::max();
        break;
      }
      length = length * 10 + digit;
    }
    largest = std::max(largest.value_or(0), length);
  }
  return largest;
}

std::string RequestHead::FramingError() const {
  std::optional<std::string_view> length;
  for (const std::string_view value : Values("content-length")) {
    if (!IsNumber(value)) return "Content-Length: '" + std::string(value.substr(0, 40)) + "' is not a number of bytes";
    if (length && *length != value) return "Content-Length: several, and they differ";
    length = value;
  }
  const std::optional<std::string_view> coding = Field("transfer-encoding");
  if (length && coding) return "Content-Length and Transfer-Encoding: one or the other";
  if (coding && Lower(*coding) != "chunked") {
    return "Transfer-Encoding: '" + Shorten(std::string(*coding), 40) + "': this server reads chunked bodies only";
  }
  return {};
}

std::string RequestHead::ContentCodingError() const {
  for (const std::string& coding : Tokens("content-encoding")) {
    if (coding != "identity") {
      return "Content-Encoding: '" + Shorten(coding, 40) +
             "': this server reads request bodies as sent; send them uncompressed";
    }
  }
  return {};
}

std::string RequestHead::SyntaxError() const {
  auto quoted = [](const std::string& text) { return "'" + Shorten(text, 80) + "'"; };
  // The methods Pistache 0.0.5 parses.
  static const std::set<std::string, std::less<>> kMethods = {"OPTIONS", "GET",    "POST",  "HEAD",   "PUT",
                                                              "PATCH",   "DELETE", "TRACE", "CONNECT"};
  if (method.empty() || target.empty() || version.empty() || version.find(' ') != std::string::npos) {
    return "request line " + quoted(request_line) + " is not METHOD TARGET HTTP/1.1, one space apart";
  }
  if (!kMethods.count(method)) {
    return "method " + quoted(method) + ": not one this server knows (GET, POST, HEAD, OPTIONS, ...)";
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return "HTTP version " + quoted(version) + ": this server speaks HTTP/1.1 and 1.0";
  }
  if (!unreadable_field.empty()) {
    const bool folded = unreadable_field.front() == ' ' || unreadable_field.front() == '\t';
    return "header line " + quoted(unreadable_field) +
           (folded ? " continues the line before (obsolete line folding)" : " has no ':'");
  }
  // A field name is a token (RFC 9110, 5.1); a space before the colon must be
  // refused (RFC 9112, 5.1): Pistache read "Content-Length : 5" as another field.
  for (const auto& [name, value] : fields) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar)) {
      return "header name " + quoted(name) + " is not a token (letters, digits and !#$%&'*+-.^_`|~)";
    }
  }
  return {};
}

std::vector<std::string> RequestHead::Tokens(std::string_view name) const {
  std::vector<std::string> tokens;
  for (std::string_view rest : Values(name)) {
    while (!rest.empty()) {
      const size_t comma = std::min(rest.find(','), rest.size());
      std::string token = Lower(Trim(rest.substr(0, comma)));
      if (!token.empty()) tokens.push_back(std::move(token));
      rest.remove_prefix(std::min(comma + 1, rest.size()));
    }
  }
  return tokens;
}

bool RequestHead::KeepsAlive() const {
  const std::vector<std::string> tokens = Tokens("connection");
  if (std::find(tokens.begin(), tokens.end(), "close") != tokens.end()) return false;
  return std::find(tokens.begin(), tokens.end(), "keep-alive") != tokens.end();
}

bool RequestHead::ExpectsContinue() const {
  const std::optional<std::string_view> expect = Field("expect");
  return expect && Lower(*expect) == "100-continue";
}

void ChunkedBody::Fail(std::string error, int status) {
  state_ = State::kError;
  error_ = "chunked body: " + std::move(error);
  error_status_ = status;
}

size_t ChunkedBody::Feed(std::string_view bytes, std::string* data) {
  size_t at = 0;
  while (at < bytes.size() && state_ != State::kEnded && state_ != State::kError) {
    if (state_ == State::kData) {
      const size_t taken = static_cast<size_t>(std::min<uint64_t>(size_, bytes.size() - at));
      if (data != nullptr) data->append(bytes.substr(at, taken));
      at += taken;
      size_ -= taken;
      if (size_ == 0) state_ = State::kDataEnd;
      continue;
    }
    const char c = bytes[at++];
    if (state_ >= State::kFieldStart && state_ <= State::kEndLf && ++trailer_ > kMaxTrailerBytes) {
      Fail("trailer fields over " + std::to_string(kMaxTrailerBytes) + " bytes");
      break;
    }
    switch (state_) {
      case State::kSize: {
        const int digit = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (digit >= 0 && digits_ == kMaxSizeDigits) {
          Fail("a chunk size of more than " + std::to_string(kMaxSizeDigits) + " hexadecimal digits");
        } else if (digit >= 0 && (size_ > left_ / 16 || size_ * 16 + static_cast<uint64_t>(digit) > left_)) {
          Fail("a chunk of more than the " + std::to_string(left_) +
                   " bytes left would take the body over the limit of " + std::to_string(limit_) +
                   " bytes (raise with --max-body-bytes)",
               413);
        } else if (digit >= 0) {
          size_ = size_ * 16 + static_cast<uint64_t>(digit);
          ++digits_;
        } else if (digits_ > 0 && c == '\r') {
          state_ = State::kSizeEnd;
        } else if (digits_ > 0 && (c == ';' || c == ' ' || c == '\t')) {
          Fail("chunk extensions (';' after the size) are not read by this server");
        } else {
          Fail("a chunk size is not a hexadecimal number followed by CRLF");
        }
        break;
      }
      case State::kSizeEnd:
        if (c != '\n') {
          Fail("a chunk size is not a hexadecimal number followed by CRLF");
        } else {
          left_ -= size_;
          state_ = size_ == 0 ? State::kFieldStart : State::kData;
        }
        break;
      case State::kDataEnd:
      case State::kDataEndLf:
        if (c != (state_ == State::kDataEnd ? '\r' : '\n')) {
          Fail("a chunk's data is not followed by CRLF");
        } else {
          state_ = state_ == State::kDataEnd ? State::kDataEndLf : State::kSize;
          digits_ = 0;
        }
        break;
      case State::kFieldStart:
        state_ = c == '\r' ? State::kEndLf : State::kField;
        colon_ = c == ':';
        break;
      case State::kField:
        colon_ = colon_ || c == ':';
        if (c == '\r' && !colon_) {
          Fail("a trailer line has no ':'");
        } else if (c == '\r') {
          state_ = State::kFieldEnd;
        }
        break;
      case State::kFieldEnd:
      case State::kEndLf:
        if (c != '\n') {
          Fail("a trailer line is not ended by CRLF");
        } else {
          state_ = state_ == State::kFieldEnd ? State::kFieldStart : State::kEnded;
        }
        break;
      case State::kData:
      case State::kEnded:
      case State::kError: break;
    }
  }
  return at;
}

std::optional<RequestHead> ParseRequestHead(std::string_view bytes, size_t searched) {
  constexpr std::string_view kEnd = "\r\n\r\n";
  // The end may straddle the old bytes and the new.
  const size_t end = bytes.find(kEnd, searched < kEnd.size() ? 0 : searched - (kEnd.size() - 1));
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view rest = bytes.substr(0, end + 2);
  RequestHead head;
  head.size = end + kEnd.size();
  bool first = true;
  while (!rest.empty()) {
    const size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (first) {
      first = false;
      head.request_line = std::string(line);
      const size_t method_end = line.find(' ');
      if (method_end == std::string_view::npos) continue;
      head.method = std::string(line.substr(0, method_end));
      const std::string_view after = line.substr(method_end + 1);
      const size_t target_end = after.find(' ');
      head.target = std::string(after.substr(0, target_end));
      if (target_end != std::string_view::npos) head.version = std::string(after.substr(target_end + 1));
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || line.front() == ' ' || line.front() == '\t') {
      if (head.unreadable_field.empty()) head.unreadable_field = std::string(line);
      continue;
    }
    const std::string_view value = line.substr(colon + 1);
    head.fields.emplace_back(line.substr(0, colon), value.substr(std::min(value.find_first_not_of(' '), value.size())));
  }
  return head;
}

std::string BodyTooLarge(std::optional<uint64_t> body_bytes, uint64_t max_body_bytes) {
  const bool known = body_bytes && *body_bytes != std::numeric_limits<uint64_t>::max();  // else it overflowed
  return "body: " + (known ? std::to_string(*body_bytes) + " bytes, " : std::string()) + "over the limit of " +
         std::to_string(max_body_bytes) + " bytes (raise with --max-body-bytes)";
}

}  // namespace intgrads
