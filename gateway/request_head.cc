#include "gateway/request_head.h"

#include <algorithm>
#include <limits>

#include "common/text.h"

namespace intgrads {

namespace {

bool IsNumber(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::optional<std::string_view> RequestHead::Field(std::string_view name) const {
  for (const auto& [field, value] : fields) {
    if (field == name) return std::string_view(value);
  }
  return std::nullopt;
}

std::optional<uint64_t> RequestHead::ContentLength() const {
  std::optional<uint64_t> largest;
  for (const auto& [field, value] : fields) {
    if (field != "content-length" || !IsNumber(value)) continue;
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
  for (const auto& [field, value] : fields) {
    if (field != "content-length") continue;
    if (!IsNumber(value)) return "Content-Length: '" + value.substr(0, 40) + "' is not a number of bytes";
    if (length && *length != value) return "Content-Length: several, and they differ";
    length = value;
  }
  if (length && Field("transfer-encoding")) return "Content-Length and Transfer-Encoding: one or the other";
  return {};
}

bool RequestHead::ExpectsContinue() const {
  const std::optional<std::string_view> expect = Field("expect");
  return expect && Lower(*expect) == "100-continue";
}

std::optional<RequestHead> ParseRequestHead(std::string_view bytes, size_t searched) {
  constexpr std::string_view kEnd = "\r\n\r\n";
  // The end may straddle the old bytes and the new.
  const size_t end = bytes.find(kEnd, searched < kEnd.size() ? 0 : searched - (kEnd.size() - 1));
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view rest = bytes.substr(0, end + 2);
  RequestHead head;
  bool first = true;
  while (!rest.empty()) {
    const size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (first) {
      first = false;
      const size_t method_end = line.find(' ');
      if (method_end == std::string_view::npos) continue;
      head.method = std::string(line.substr(0, method_end));
      const std::string_view after = line.substr(method_end + 1);
      head.target = std::string(after.substr(0, after.find(' ')));
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    head.fields.emplace_back(Lower(Trim(line.substr(0, colon))), std::string(Trim(line.substr(colon + 1))));
  }
  return head;
}

}  // namespace intgrads
