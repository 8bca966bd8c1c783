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

// Whether an HTTP host or a ZeroMQ bind endpoint listens on every interface
// ("0.0.0.0", "::", "tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555"):
// there a deployment without a token is open to whoever reaches the port.
inline bool ListensOnAllInterfaces(std::string_view address) {
  constexpr std::string_view kTcp = "tcp://";
  if (address.substr(0, kTcp.size()) == kTcp) {
    address.remove_prefix(kTcp.size());
    address = address.substr(0, address.rfind(':'));
  }
  return address == "*" || address == "0.0.0.0" || address == "::" || address == "[::]" || address == "[*]";
}

// The token from a --token flag, else from the INTGRADS_TOKEN environment variable.
inline std::string TokenFromEnvironment() {
  const char* value = std::getenv("INTGRADS_TOKEN");
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace intgrads
