// A minimal blocking HTTP/1.1 client for the command-line client
// (`intgrads-images explain`): plain http:// only, one request per
// connection (Connection: close), the answer read whole.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace intgrads {

struct HttpAnswer {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower case
  std::string body;
};

struct Url {
  std::string host;
  int port = 80;
  std::string path = "/";  // with its query
};

// http://host[:port][/path]; kInvalid for anything else (https included).
StatusOr<Url> ParseUrl(const std::string& url);

// Percent-encodes a query value.
std::string UrlEncode(const std::string& value);

StatusOr<HttpAnswer> HttpRequest(const std::string& method, const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 const std::string& body, int timeout_seconds);

}  // namespace intgrads
