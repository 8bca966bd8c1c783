#include "common/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/file.h"
#include "common/text.h"

namespace intgrads {

namespace {

constexpr std::string_view kZ85 =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// Creates `path` with `text`, failing if it exists; `mode` for a new file.
Status CreateFile(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return InvalidError("cannot create " + path + ": " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) return InternalError("cannot write " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace

bool CurveAvailable() { return zmq_has("curve") != 0; }

StatusOr<CurveKeyPair> MakeCurveKeyPair() {
  char public_key[kCurveKeyChars + 1];
  char secret_key[kCurveKeyChars + 1];
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    return InternalError(std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno()));
  }
  return CurveKeyPair{public_key, secret_key};
}

StatusOr<std::string> CurvePublicKey(const std::string& secret_key) {
  if (!IsCurveKey(secret_key)) return InvalidError("not a CURVE key (40 characters of Z85)");
  char public_key[kCurveKeyChars + 1];
  if (zmq_curve_public(public_key, secret_key.c_str()) != 0) {
    return InternalError(std::string("cannot derive the public key: ") + zmq_strerror(zmq_errno()));
  }
  return std::string(public_key);
}

bool IsCurveKey(std::string_view text) {
  return text.size() == kCurveKeyChars &&
         std::all_of(text.begin(), text.end(), [](char c) { return kZ85.find(c) != std::string_view::npos; });
}

std::string CurveKeyBytes(const std::string& key) {
  std::string bytes(32, '\0');
  if (!IsCurveKey(key) || zmq_z85_decode(reinterpret_cast<uint8_t*>(bytes.data()), key.c_str()) == nullptr) return {};
  return bytes;
}

StatusOr<std::vector<std::string>> ParseKeys(std::string_view text, const std::string& source) {
  std::vector<std::string> keys;
  int line_number = 0;
  while (!text.empty()) {
    const size_t end = std::min(text.find('\n'), text.size());
    const std::string_view line = Trim(text.substr(0, end));
    text.remove_prefix(std::min(end + 1, text.size()));
    ++line_number;
    if (line.empty() || line.substr(0, 2) == "# " || line == "#") continue;
    if (!IsCurveKey(line)) {
      return InvalidError(source + ", line " + std::to_string(line_number) +
                          ": not a CURVE key (40 characters of Z85, as intgrads-keygen writes)");
    }
    keys.emplace_back(line);
  }
  return keys;
}

StatusOr<std::vector<std::string>> LoadKeys(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_directory(path, error)) {
    ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
    return ParseKeys(text, path);
  }
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(path, error)) {
    if (entry.path().extension() == ".pub") files.push_back(entry.path().string());
  }
  if (error) return InvalidError("cannot list " + path + ": " + error.message());
  std::sort(files.begin(), files.end());
  std::vector<std::string> keys;
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file));
    ASSIGN_OR_RETURN(std::vector<std::string> some, ParseKeys(text, file));
    keys.insert(keys.end(), some.begin(), some.end());
  }
  return keys;
}

StatusOr<std::string> LoadKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  ASSIGN_OR_RETURN(std::vector<std::string> keys, ParseKeys(text, path));
  if (keys.size() != 1) return InvalidError(path + ": expected one CURVE key, found " + std::to_string(keys.size()));
  return keys.front();
}

StatusOr<std::string> KeyFrom(const std::string& path, const char* variable) {
  if (!path.empty()) return LoadKey(path);
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') return std::string();
  if (!IsCurveKey(Trim(value)))
    return InvalidError(std::string("$") + variable + ": not a CURVE key (40 characters of Z85)");
  return std::string(Trim(value));
}

StatusOr<std::vector<std::string>> KeysFrom(const std::string& path, const char* variable) {
  if (!path.empty()) return LoadKeys(path);
  std::string value = std::getenv(variable) != nullptr ? std::getenv(variable) : "";
  std::replace(value.begin(), value.end(), ',', '\n');
  std::replace(value.begin(), value.end(), ' ', '\n');
  return ParseKeys(value, std::string("$") + variable);
}

bool EndpointIsNetwork(std::string_view endpoint) {
  return endpoint.substr(0, 6) != "ipc://" && endpoint.substr(0, 9) != "inproc://";
}

StatusOr<ChannelKeys> LoadChannelKeys(const ChannelKeySources& sources, const std::vector<std::string>& endpoints,
                                      bool insecure) {
  ChannelKeys keys;
  ASSIGN_OR_RETURN(keys.secret_key, KeyFrom(sources.secret_path, sources.secret_variable));
  ASSIGN_OR_RETURN(keys.peer_keys, KeysFrom(sources.peer_path, sources.peer_variable));
  if (keys.secret_key.empty() != keys.peer_keys.empty()) {
    return InvalidError(std::string("CURVE needs both the secret key (--secret-key) and ") + sources.peer_what + " (" +
                        sources.peer_flag + ")");
  }
  if (!keys.secret_key.empty() && !CurveAvailable()) {
    return InvalidError("this ZeroMQ was built without CURVE; keys cannot be used");
  }
  const auto network =
      std::find_if(endpoints.begin(), endpoints.end(), [](const std::string& e) { return EndpointIsNetwork(e); });
  if (keys.secret_key.empty() && network != endpoints.end() && !insecure) {
    return InvalidError(*network + " is a network endpoint: give the worker channel's keys (--secret-key, " +
                        sources.peer_flag + "; make them with intgrads-keygen), or " + sources.insecure_flag + " " +
                        sources.insecure_means);
  }
  return keys;
}

StatusOr<CurveKeyPair> WriteKeyPair(const std::string& prefix) {
  ASSIGN_OR_RETURN(CurveKeyPair pair, MakeCurveKeyPair());
  RETURN_IF_ERROR(CreateFile(prefix + ".key",
                             "# intgrads CURVE secret key: keep it to its owner (public key: " + pair.public_key +
                                 ")\n" + pair.secret_key + "\n",
                             S_IRUSR | S_IWUSR));
  RETURN_IF_ERROR(CreateFile(prefix + ".pub", "# intgrads CURVE public key\n" + pair.public_key + "\n", 0644));
  return pair;
}

}  // namespace intgrads
