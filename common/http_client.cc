#include "common/http_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <optional>

#include "common/text.h"

namespace intgrads {

namespace {

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on fd until `deadline`; false on timeout.
bool Wait(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30))) > 0;
}

}  // namespace

StatusOr<Url> ParseUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    return InvalidError("server: '" + url + "' is not an http:// URL (https is not spoken; use a local proxy)");
  }
  Url out;
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.path = rest.substr(slash);
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    const std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) {
      return InvalidError("server: bad port in '" + url + "'");
    }
    out.port = std::stoi(port);
    authority = authority.substr(0, colon);
  }
  if (authority.size() > 2 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  if (authority.empty()) return InvalidError("server: no host in '" + url + "'");
  out.host = authority;
  return out;
}

std::string UrlEncode(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

StatusOr<HttpAnswer> HttpRequest(const std::string& method, const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 const std::string& body, int timeout_seconds) {
  ASSIGN_OR_RETURN(Url target, ParseUrl(url));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(target.host.c_str(), std::to_string(target.port).c_str(), &hints, &found) != 0 || !found) {
    return UnavailableError("cannot resolve " + target.host);
  }
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    why = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  if (fd < 0)
    return UnavailableError("cannot connect to " + target.host + ":" + std::to_string(target.port) + ": " + why);
  Socket socket(fd);
  std::string request = method + " " + target.path + " HTTP/1.1\r\nHost: " + target.host + ":" +
                        std::to_string(target.port) +
                        "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  for (const auto& [name, value] : headers) {
    request += name;
    request += ": ";
    request += value;
    request += "\r\n";
  }
  request += "\r\n";
  request += body;
  for (size_t sent = 0; sent < request.size();) {
    if (!Wait(fd, POLLOUT, deadline)) return UnavailableError("timed out sending the request");
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return UnavailableError(std::string("connection lost while sending: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  // Read the head, then the body to its Content-Length (servers may keep the
  // connection open despite Connection: close), or to the end of the stream.
  std::string raw;
  char buffer[1 << 16];
  size_t head_end = std::string::npos;
  std::optional<size_t> length;
  while (!(head_end != std::string::npos && length && raw.size() >= head_end + 4 + *length)) {
    if (!Wait(fd, POLLIN, deadline)) return UnavailableError("timed out waiting for the answer");
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0) return UnavailableError(std::string("connection lost: ") + std::strerror(errno));
    if (n == 0) break;
    raw.append(buffer, static_cast<size_t>(n));
    if (head_end == std::string::npos && (head_end = raw.find("\r\n\r\n")) != std::string::npos) {
      const std::string head = Lower(raw.substr(0, head_end));
      const size_t at = head.find("\r\ncontent-length:");
      if (at != std::string::npos) length = std::strtoull(head.c_str() + at + 17, nullptr, 10);
    }
  }
  if (head_end == std::string::npos || raw.compare(0, 5, "HTTP/") != 0) {
    return DataLossError("the server's answer is not HTTP");
  }
  HttpAnswer answer;
  const size_t space = raw.find(' ');
  answer.status = space < head_end ? std::atoi(raw.c_str() + space + 1) : 0;
  size_t at = raw.find("\r\n") + 2;
  while (at < head_end) {
    const size_t eol = raw.find("\r\n", at);
    const std::string line = raw.substr(at, eol - at);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
      size_t value = colon + 1;
      while (value < line.size() && line[value] == ' ') ++value;
      answer.headers[Lower(line.substr(0, colon))] = line.substr(value);
    }
    at = eol + 2;
  }
  answer.body = raw.substr(head_end + 4);
  if (length && answer.body.size() < *length) {
    return DataLossError("the answer was cut short (" + std::to_string(answer.body.size()) + " of " +
                         std::to_string(*length) + " bytes)");
  }
  if (length) answer.body.resize(*length);
  return answer;
}

}  // namespace intgrads
