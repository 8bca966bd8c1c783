// Small text helpers for protocol parsing (HTTP heads, media types, multipart
// headers): ASCII lower case, and spaces and tabs trimmed.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace intgrads {

inline std::string Lower(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

// Spaces and tabs off both ends, and a stray carriage return off the end.
inline std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

}  // namespace intgrads
