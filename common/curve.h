// The worker channel's credentials: CURVE key pairs (ZeroMQ's CurveZMQ,
// Curve25519 keys written as 40 characters of Z85). The gateway holds a
// secret key and the public keys of the workers it lets in; each worker
// holds a secret key and the gateway's public key. Both ends prove who they
// are and everything between them is encrypted; no secret crosses the wire.
//
// A key file holds one key on a line of its own; empty lines and lines that
// start with "# " are skipped (Z85 has no space, so no key starts so). A list
// of public keys is a file of such lines, or a directory whose *.pub files
// hold one each. Made by intgrads-keygen (WriteKeyPair).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace intgrads {

constexpr size_t kCurveKeyChars = 40;  // Z85 of a 32-byte key

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// Whether ZeroMQ was built with CURVE (Debian's libzmq5 is, with libsodium).
bool CurveAvailable();
StatusOr<CurveKeyPair> MakeCurveKeyPair();
// The public key that goes with a secret key.
StatusOr<std::string> CurvePublicKey(const std::string& secret_key);
// Whether `text` is a key: 40 characters of Z85.
bool IsCurveKey(std::string_view text);
// The 32 bytes a key stands for.
std::string CurveKeyBytes(const std::string& key);

// The keys in a key file's text (ReadKeys) or in a file or directory (LoadKeys).
StatusOr<std::vector<std::string>> ParseKeys(std::string_view text, const std::string& source);
StatusOr<std::vector<std::string>> LoadKeys(const std::string& path);
// The one key of a key file.
StatusOr<std::string> LoadKey(const std::string& path);

// A key from its file (a flag's value), else from the environment variable
// `variable`, which holds the key itself (KeysFrom: keys, separated by
// commas or white space); empty when neither is set.
StatusOr<std::string> KeyFrom(const std::string& path, const char* variable);
StatusOr<std::vector<std::string>> KeysFrom(const std::string& path, const char* variable);

// Whether a ZeroMQ endpoint reaches beyond this host's users: tcp (and other
// transports but ipc and inproc, which the file system and the process guard).
bool EndpointIsNetwork(std::string_view endpoint);

// Where one end of the channel finds its keys, and what the other end is
// called in messages.
struct ChannelKeySources {
  std::string secret_path;      // its own secret key file (--secret-key), or empty
  const char* secret_variable;  // else this environment variable's key
  std::string peer_path;        // the other end's public keys: a file or directory, or empty
  const char* peer_variable;    // else this variable's keys
  const char* peer_flag;        // "--worker-keys" | "--gateway-key"
  const char* peer_what;        // "the workers' public keys" | "the gateway's public key"
  const char* insecure_flag;    // "--insecure-workers" | "--insecure-gateway"
  const char* insecure_means;   // what running without keys lets an attacker do
};
struct ChannelKeys {
  std::string secret_key;              // empty: no CURVE
  std::vector<std::string> peer_keys;  // the workers' keys; or the gateway's, one
};
// The keys of one end, checked: both or neither given, CURVE available when
// given, and for network endpoints either given or `insecure`.
StatusOr<ChannelKeys> LoadChannelKeys(const ChannelKeySources& sources, const std::vector<std::string>& endpoints,
                                      bool insecure);

// Writes PREFIX.key (the secret key, readable by its owner only) and
// PREFIX.pub; refuses to overwrite either.
StatusOr<CurveKeyPair> WriteKeyPair(const std::string& prefix);

}  // namespace intgrads
