// The command-line client's HTTP: libcurl, so that http:// and https://
// (a TLS proxy in front of the gateway, as the README advises) both work.
// One request per call, blocking; safe from several threads at once once
// CurlGlobal exists.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http_client.h"
#include "common/status.h"

namespace intgrads {

// libcurl's process-wide set-up, for as long as the object lives.
class CurlGlobal {
 public:
  CurlGlobal();
  ~CurlGlobal();
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
};

struct CurlOptions {
  int timeout_seconds = 600;
  std::string ca_file;  // certificates to trust for https://, instead of the system's
  // Told each piece of the body as it arrives (a streamed answer), besides
  // its being kept in the answer.
  std::function<void(std::string_view)> on_body;
};

// kUnavailable when the server cannot be reached or the transfer fails; an
// HTTP error status is an answer, not an error.
StatusOr<HttpAnswer> CurlRequest(const std::string& method, const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 const std::string& body, const CurlOptions& options);

}  // namespace intgrads
