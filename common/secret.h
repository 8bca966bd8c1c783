// The shared secret of a deployment: the HTTP bearer token clients send and
// the token workers present when they join the pool. Empty means none.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

namespace intgrads {

// Compares in time that depends only on the lengths, not on where they differ.
inline bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The token from a --token flag, else from the INTGRADS_TOKEN environment variable.
inline std::string TokenFromEnvironment() {
  const char* value = std::getenv("INTGRADS_TOKEN");
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace intgrads
