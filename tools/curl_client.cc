#include "tools/curl_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>

namespace intgrads {

CurlGlobal::CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
CurlGlobal::~CurlGlobal() { curl_global_cleanup(); }

namespace {

struct BodySink {
  std::string* body;
  const std::function<void(std::string_view)>* on_body;
};

size_t AppendBody(char* data, size_t size, size_t count, void* out) {
  auto* sink = static_cast<BodySink*>(out);
  sink->body->append(data, size * count);
  if (*sink->on_body) (*sink->on_body)(std::string_view(data, size * count));
  return size * count;
}

// "Name: value\r\n" lines into lower-case names; a new status line (after a
// 100 Continue) starts over.
size_t AppendHeader(char* data, size_t size, size_t count, void* out) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(out);
  const std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) headers->clear();
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    const size_t first = value.find_first_not_of(" \t");
    const size_t last = value.find_last_not_of(" \t\r\n");
    (*headers)[name] = first == std::string::npos ? "" : value.substr(first, last - first + 1);
  }
  return size * count;
}

}  // namespace

StatusOr<HttpAnswer> CurlRequest(const std::string& method, const std::string& url,
                                 const std::vector<std::pair<std::string, std::string>>& headers,
                                 const std::string& body, const CurlOptions& options) {
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return UnavailableError("http: libcurl could not start a transfer");
  curl_slist* list = nullptr;
  for (const auto& [name, value] : headers) {
    std::string line = name;
    line.append(": ").append(value);
    list = curl_slist_append(list, line.c_str());
  }
  list = curl_slist_append(list, "Expect:");  // no 100-continue round trip before a body
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_list(list, curl_slist_free_all);
  HttpAnswer answer;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST" || method == "PUT") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendBody);
  BodySink sink{&answer.body, &options.on_body};
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, AppendHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &answer.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(options.timeout_seconds));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for timeouts
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
  char error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  const CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK) {
    return UnavailableError(url + ": " + (error[0] != '\0' ? std::string(error) : curl_easy_strerror(code)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  answer.status = static_cast<int>(status);
  return answer;
}

}  // namespace intgrads
