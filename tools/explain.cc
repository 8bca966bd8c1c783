#include "tools/explain.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>

#include "common/attributions.h"
#include "common/file.h"
#include "common/image.h"
#include "common/protocol.h"
#include "common/zip.h"
#include "tools/cli.h"
#include "tools/curl_client.h"

namespace intgrads {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const char kExplainHelp[] =
    "usage: intgrads-images explain IMAGE_FOLDER_OR_ZIP... --out DIR [--target CLASS] [--server URL] [options]\n\n"
    "Sends each image to a running service's POST /v1/attributions, several at a time, and writes one\n"
    "output per image into DIR: a file as DIR/NAME.EXT, a folder's images (all of its tree) as\n"
    "DIR/FOLDER/PATH.EXT, a zip's (a CIFAR-style archive: test/cat/0001.jpg) as DIR/ZIPSTEM/PATH.EXT.\n"
    "An output already there is kept, not computed again (a run resumes where one stopped);\n"
    "DIR/summary.csv and DIR/summary.json list every image. Progress, with the rate and the time\n"
    "left, goes to stderr; a table (target, predicted class, probability, convergence delta) to\n"
    "stdout. Exits 1 if any image failed (its row says why).\n\n"
    "  --out DIR          where the outputs go (created if missing)\n"
    "  --target CLASS     a class name, an index, or predicted (default: predicted); several,\n"
    "                     comma-separated (cat,dog), give one output each, in NAME.zip\n"
    "  --top-k K          the K most probable classes instead, in NAME.zip\n"
    "  --server URL       the service, http:// or https:// (default http://localhost:8888, or\n"
    "                     $INTGRADS_SERVER); several gateways of one pool comma-separated: an image\n"
    "                     whose gateway cannot be reached (or answers 503) goes to the next\n"
    "  --concurrency N    images in flight at once (default: the pool's workers, from /v1/workers)\n"
    "  --no-resume        compute every image, even those whose output is there\n"
    "  --cacert FILE      certificates to trust for https:// (default: the system's)\n"
    "  --format F         {format} (default gzip, the original's dict; png: the heatmap)\n"
    "  --n-steps N        path points (default 50)\n"
    "  --method M         {method}\n"
    "                     (default gausslegendre)\n"
    "  --heatmap H        png only: {heatmap} (default signed)\n"
    "  --sign S           png only, Captum's look: {sign}\n"
    "  --outlier-perc P   with --sign: the percent of the attribution left past the scale (default 2)\n"
    "  --model NAME       when the service serves several models\n"
    "  --token TOKEN      for a service started with --token (default: $INTGRADS_TOKEN)\n"
    "  --timeout S        seconds to wait for each image (default 600)\n"
    "the options beyond the original (docs/API.md):\n";

// One image to explain: its name (which names its output) and how to read it.
struct Input {
  std::string name;
  std::function<StatusOr<std::string>()> read;
};

std::string Slashed(const fs::path& path) { return path.generic_string(); }

// Files as given (named by their file name), folders' image files in all
// their tree (named by their path from the folder's parent), zips' image
// members (named by the zip's stem and their path in it); sorted within each.
StatusOr<std::vector<Input>> ListInputs(const std::vector<std::string>& given) {
  std::vector<Input> inputs;
  for (const std::string& arg : given) {
    std::error_code error;
    const fs::path path(arg);
    if (fs::is_directory(path, error)) {
      const fs::path base = fs::absolute(path).lexically_normal().parent_path();
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(path, error); !error && it != fs::recursive_directory_iterator();
           it.increment(error)) {
        if (it->is_regular_file() && HasImageExtension(it->path().string())) found.push_back(it->path());
      }
      if (error) return InvalidError("explain: cannot list " + arg + ": " + error.message());
      if (found.empty()) return InvalidError("explain: no .png or .jpg files in " + arg);
      std::sort(found.begin(), found.end());
      for (const fs::path& file : found) {
        const std::string name = Slashed(fs::absolute(file).lexically_normal().lexically_relative(base));
        inputs.push_back({name, [file] { return ReadWholeFile(file.string()); }});
      }
    } else if (fs::is_regular_file(path, error) && path.extension() == ".zip") {
      auto bytes = ReadWholeFile(arg);
      if (!bytes.ok()) return bytes.status();
      auto archive = std::make_shared<const std::string>(std::move(bytes).value());
      auto entries = ReadZip(*archive);
      if (!entries.ok()) return InvalidError("explain: " + arg + ": " + entries.status().message());
      std::vector<ZipEntry> images;
      for (const ZipEntry& entry : *entries) {
        if (HasImageExtension(entry.name) && entry.name.back() != '/') images.push_back(entry);
      }
      if (images.empty()) return InvalidError("explain: no .png or .jpg members in " + arg);
      std::sort(images.begin(), images.end(), [](const ZipEntry& a, const ZipEntry& b) { return a.name < b.name; });
      for (const ZipEntry& entry : images) {
        const std::string name = Slashed(path.stem() / fs::path(entry.name).lexically_normal());
        if (name.find("..") != std::string::npos || fs::path(entry.name).is_absolute()) {
          return InvalidError("explain: " + arg + ": member '" + entry.name + "' leaves the archive's folder");
        }
        const std::string_view data = entry.data;
        inputs.push_back({name, [archive, data]() -> StatusOr<std::string> { return std::string(data); }});
      }
    } else if (fs::is_regular_file(path, error)) {
      inputs.push_back({path.filename().string(), [arg] { return ReadWholeFile(arg); }});
    } else {
      return NotFoundError("explain: no such file, folder or zip: " + arg);
    }
  }
  if (inputs.empty()) return InvalidError("explain: name at least one image, folder or zip");
  return inputs;
}

// A row of the summary (summary.csv, summary.json) and of the table.
struct Row {
  std::string image, output, status, target, predicted, probability, convergence_delta, seconds, error;
};
const std::vector<std::string> kColumns = {
    "image", "output", "status", "target", "predicted", "probability", "convergence_delta", "seconds", "error"};
std::vector<std::string*> Fields(Row& r) {
  return {&r.image,   &r.output, &r.status, &r.target, &r.predicted, &r.probability, &r.convergence_delta,
          &r.seconds, &r.error};
}

std::string CsvField(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string quoted = "\"";
  for (char c : value) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

void WriteSummary(const std::string& dir, std::vector<Row> rows) {
  std::ofstream csv(fs::path(dir) / "summary.csv");
  for (size_t i = 0; i < kColumns.size(); ++i) csv << (i ? "," : "") << kColumns[i];
  csv << "\n";
  nlohmann::ordered_json doc = nlohmann::ordered_json::array();
  for (Row& row : rows) {
    const std::vector<std::string*> fields = Fields(row);
    nlohmann::ordered_json entry;
    for (size_t i = 0; i < fields.size(); ++i) {
      csv << (i ? "," : "") << CsvField(*fields[i]);
      entry[kColumns[i]] = *fields[i];
    }
    csv << "\n";
    doc.push_back(std::move(entry));
  }
  std::ofstream json(fs::path(dir) / "summary.json");
  json << doc.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
}

// The rows of an earlier run's summary.json, by image: what a kept output was.
std::map<std::string, Row> EarlierRows(const std::string& dir) {
  std::map<std::string, Row> rows;
  auto text = ReadWholeFile((fs::path(dir) / "summary.json").string());
  if (!text.ok()) return rows;
  const auto doc = nlohmann::json::parse(*text, nullptr, false);
  if (!doc.is_array()) return rows;
  for (const auto& entry : doc) {
    if (!entry.is_object()) continue;
    Row row;
    const std::vector<std::string*> fields = Fields(row);
    for (size_t i = 0; i < fields.size(); ++i) {
      if (entry.contains(kColumns[i]) && entry[kColumns[i]].is_string()) *fields[i] = entry[kColumns[i]];
    }
    if (row.status == "computed" || row.status == "kept") rows[row.image] = row;
  }
  return rows;
}

// The progress line: done of total (with the path points done of the images
// in flight, from their streamed answers), the rate of those computed, the time left.
class Progress {
 public:
  explicit Progress(size_t total) : total_(total), started_(Clock::now()), tty_(isatty(STDERR_FILENO) != 0) {}

  void Done(size_t index, bool computed, const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    partial_.erase(index);
    ++done_;
    computed_ += computed ? 1 : 0;
    Show(name, true);
  }

  // Image `index` is `fraction` of the way through its passes.
  void Partial(size_t index, double fraction, const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    partial_[index] = fraction;
    Show(name, false);
  }

 private:
  void Show(const std::string& name, bool finished) {
    const Clock::time_point now = Clock::now();
    // A log gets a line every 10 s and the last; a terminal every image and every 0.2 s between.
    const auto every = tty_ ? (finished ? Clock::duration::zero() : std::chrono::milliseconds(200))
                            : Clock::duration(std::chrono::seconds(10));
    if (done_ < total_ && now - last_ < every) return;
    last_ = now;
    double in_flight = 0.0;
    for (const auto& [index, fraction] : partial_) in_flight += fraction;
    const double elapsed = std::chrono::duration<double>(now - started_).count();
    const double computed = static_cast<double>(computed_) + in_flight;
    const double rate = computed > 0 && elapsed > 0 ? computed / elapsed : 0.0;
    const double done = static_cast<double>(done_) + in_flight;
    std::string left = "-";
    if (rate > 0) {
      const long seconds = std::lround((static_cast<double>(total_) - done) / rate);
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "%ld:%02ld", seconds / 60, seconds % 60);
      left = buffer;
    }
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / static_cast<double>(std::max<size_t>(total_, 1)));
    std::fprintf(stderr, "%s[%s%s] %.1f/%zu  %.2f img/s  %s left  %-32.32s%s", tty_ ? "\r" : "",
                 std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(), done, total_, rate,
                 left.c_str(), name.c_str(), tty_ && done_ < total_ ? "" : "\n");
    std::fflush(stderr);
  }

  std::mutex mutex_;
  size_t total_;
  size_t done_ = 0;
  size_t computed_ = 0;
  std::map<size_t, double> partial_;
  Clock::time_point started_;
  Clock::time_point last_{};
  bool tty_;
};

// A streamed answer (NDJSON, asked for by Accept) read as it comes: each
// progress event's fraction handed on; at the end, the result event made
// back into the answer it carries (its headers, type and body), or an error
// event into an error status.
class StreamReader {
 public:
  explicit StreamReader(std::function<void(double)> on_fraction) : on_fraction_(std::move(on_fraction)) {}

  void Feed(std::string_view data) {
    pending_.append(data);
    for (size_t end = pending_.find('\n'); end != std::string::npos; end = pending_.find('\n')) {
      const std::string line = pending_.substr(0, end);
      pending_.erase(0, end + 1);
      // Progress events name themselves early; the result's long line is read once, at the end.
      if (line.substr(0, 256).find("\"event\":\"progress\"") == std::string::npos) continue;
      const auto event = nlohmann::json::parse(line, nullptr, false);
      if (!event.is_object() || !event.contains("done") || !event.contains("total")) continue;
      const double total = event["total"].is_number() ? event["total"].get<double>() : 0.0;
      if (total > 0 && event["done"].is_number()) on_fraction_(event["done"].get<double>() / total);
    }
  }

  // The answer the stream ended with.
  static HttpAnswer Answer(const HttpAnswer& streamed) {
    HttpAnswer answer;
    // The last line: the stream's last event.
    std::string line = streamed.body;
    while (!line.empty() && line.back() == '\n') line.pop_back();
    line.erase(0, line.rfind('\n') + 1);  // rfind's npos + 1 is 0: a single line stays whole
    const auto event = nlohmann::json::parse(line, nullptr, false);
    answer.status = 502;
    answer.body = R"({"error": "the stream ended without a result"})";
    if (!event.is_object() || !event.contains("event") || !event["event"].is_string()) return answer;
    if (event["event"] == "error") {
      answer.status = event.value("status", 500);
      answer.body = nlohmann::json{{"error", event.value("error", std::string())}}.dump();
      return answer;
    }
    if (event["event"] != "result") return answer;
    answer.status = 200;
    if (event.contains("headers") && event["headers"].is_object()) {
      for (const auto& [name, value] : event["headers"].items()) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
        if (value.is_string()) answer.headers[lower] = value.get<std::string>();
      }
    }
    answer.headers["content-type"] = event.value("content_type", std::string());
    if (event.contains("base64") && event["base64"].is_string()) {
      auto decoded = DecodeBase64(event["base64"].get<std::string>());
      if (decoded.ok()) answer.body = std::move(decoded).value();
    } else {
      // The JSON answer byte for byte: the event's last member.
      const std::string key = "\"result\":";
      const size_t at = line.find(key);
      answer.body = at == std::string::npos ? "" : line.substr(at + key.size(), line.size() - at - key.size() - 1);
    }
    return answer;
  }

 private:
  std::function<void(double)> on_fraction_;
  std::string pending_;
};

std::string Header(const HttpAnswer& answer, const std::string& name) {
  const auto it = answer.headers.find(name);
  return it == answer.headers.end() ? "" : it->second;
}

std::string MultipartPart(const std::string& boundary, const std::string& name, std::string filename,
                          const std::string& data) {
  std::replace(filename.begin(), filename.end(), '"', '_');
  return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"; filename=\"" + filename +
         "\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + "\r\n";
}

// What every image's request shares.
struct Plan {
  std::vector<std::string> servers;
  std::string route, query, token, baseline_image, out_dir, extension, target, top_k;
  CurlOptions curl;
  bool resume = true;
};

// One image, start to end: kept, computed or failed.
Row ExplainOne(const Input& input, const Plan& plan, std::atomic<size_t>* server,
               const std::function<void(double)>& on_fraction) {
  Row row;
  row.image = input.name;
  const fs::path stem = fs::path(plan.out_dir) / fs::path(input.name).replace_extension("");
  const std::string output = stem.string() + plan.extension;
  const std::string several = stem.string() + ".zip";
  for (const std::string& existing : {output, several}) {
    std::error_code error;
    if (plan.resume && fs::is_regular_file(existing, error) && fs::file_size(existing, error) > 0) {
      row.output = existing;
      row.status = "kept";
      return row;
    }
  }
  const Clock::time_point started = Clock::now();
  auto fail = [&row](const std::string& message) {
    row.status = "error";
    row.error = message;
    return row;
  };
  auto bytes = input.read();
  if (!bytes.ok()) return fail(bytes.status().message());
  const std::string boundary = "intgrads-explain-7d1f3a9c";
  std::string form = MultipartPart(boundary, "image", fs::path(input.name).filename().string(), *bytes);
  if (!plan.baseline_image.empty()) form += MultipartPart(boundary, "baseline_image", "baseline", plan.baseline_image);
  form += "--" + boundary + "--\r\n";
  // Streamed (NDJSON), so that the progress of each image shows while it computes.
  std::vector<std::pair<std::string, std::string>> headers = {
      {"Content-Type", "multipart/form-data; boundary=" + boundary}, {"Accept", "application/x-ndjson"}};
  if (!plan.token.empty()) headers.emplace_back("Authorization", "Bearer " + plan.token);
  // Attributions are deterministic, so a request whose gateway cannot be
  // reached (or is shutting down: 503) is sent to the next one.
  StatusOr<HttpAnswer> answer = UnavailableError("no server");
  for (size_t tries = 0; tries < plan.servers.size(); ++tries) {
    const size_t at = server->load() % plan.servers.size();
    StreamReader reader(on_fraction);
    CurlOptions curl = plan.curl;
    curl.on_body = [&reader](std::string_view data) { reader.Feed(data); };
    answer = CurlRequest("POST", plan.servers[at] + plan.route + plan.query, headers, form, curl);
    if (answer.ok() && answer->status == 200 && Header(*answer, "content-type") == "application/x-ndjson") {
      answer = StreamReader::Answer(*answer);
    }
    if (answer.ok() && answer->status != 503) break;
    size_t expected = at;
    server->compare_exchange_strong(expected, at + 1);
  }
  if (!answer.ok()) return fail(answer.status().message());
  if (answer->status != 200) {
    const auto doc = nlohmann::json::parse(answer->body, nullptr, false);
    const std::string message = doc.is_object() && doc.contains("error") && doc["error"].is_string()
                                    ? doc["error"].get<std::string>()
                                    : answer->body.substr(0, 200);
    return fail("error " + std::to_string(answer->status) + ": " + message);
  }
  // Several classes come back as a zip with summary.json, one file each.
  const bool zip = Header(*answer, "content-type") == "application/zip";
  const std::string written = zip ? several : output;
  std::error_code error;
  fs::create_directories(fs::path(written).parent_path(), error);
  {
    // Written aside and renamed: a run killed mid-write leaves no half output to keep.
    std::ofstream out(written + ".part", std::ios::binary);
    out.write(answer->body.data(), static_cast<std::streamsize>(answer->body.size()));
    if (!out) return fail("cannot write " + written);
  }
  fs::rename(written + ".part", written, error);
  if (error) return fail("cannot write " + written + ": " + error.message());
  row.status = "computed";
  row.output = written;
  row.target = zip ? (plan.top_k.empty() ? plan.target : "top " + plan.top_k) : Header(*answer, "x-target-name");
  row.predicted = Header(*answer, "x-predicted-name");
  row.probability = Header(*answer, "x-probability");
  row.convergence_delta = Header(*answer, "x-convergence-delta");
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.3f", std::chrono::duration<double>(Clock::now() - started).count());
  row.seconds = seconds;
  return row;
}

// The pool's worker count (GET /v1/workers) of the first server that answers; 1 if none does.
int PoolWorkers(const Plan& plan) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!plan.token.empty()) headers.emplace_back("Authorization", "Bearer " + plan.token);
  CurlOptions quick = plan.curl;
  quick.timeout_seconds = 10;
  for (const std::string& server : plan.servers) {
    auto answer = CurlRequest("GET", server + "/v1/workers", headers, "", quick);
    if (!answer.ok() || answer->status != 200) continue;
    const auto doc = nlohmann::json::parse(answer->body, nullptr, false);
    if (doc.is_object() && doc.contains("workers") && doc["workers"].is_array()) {
      return std::max<int>(1, static_cast<int>(doc["workers"].size()));
    }
  }
  return 1;
}

}  // namespace

int RunExplain(const std::vector<std::string>& args) {
  std::vector<std::string> given;
  Plan plan;
  plan.target = "predicted";
  std::string format = "gzip", n_steps, method, heatmap, sign, outlier_perc, model, concurrency;
  const char* env_server = std::getenv("INTGRADS_SERVER");
  const char* env_token = std::getenv("INTGRADS_TOKEN");
  std::string server = env_server != nullptr ? env_server : "http://localhost:8888";
  if (env_token != nullptr) plan.token = env_token;
  std::string option_query, baseline_image_path;
  FlagReader reader;
  reader.program = "intgrads-images: explain";
  reader.help_flags = {"--help", "-h"};
  reader.print_help = [] { std::printf("%s", WithWords(std::string(kExplainHelp) + kPathFlagsHelp).c_str()); };
  reader.take = [&given, &plan](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
    if (all[*i] == "--no-resume") {
      plan.resume = false;
      return true;
    }
    if (all[*i].rfind('-', 0) == 0) return false;
    given.push_back(all[*i]);  // an image, a folder or a zip
    return true;
  };
  std::map<std::string, std::string*> values = {{"--out", &plan.out_dir},
                                                {"--target", &plan.target},
                                                {"--top-k", &plan.top_k},
                                                {"--server", &server},
                                                {"--format", &format},
                                                {"--n-steps", &n_steps},
                                                {"--method", &method},
                                                {"--heatmap", &heatmap},
                                                {"--sign", &sign},
                                                {"--outlier-perc", &outlier_perc},
                                                {"--model", &model},
                                                {"--token", &plan.token},
                                                {"--concurrency", &concurrency},
                                                {"--cacert", &plan.curl.ca_file},
                                                {"--baseline-image", &baseline_image_path}};
  std::string timeout;
  values["--timeout"] = &timeout;
  reader.set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (const std::string name = OptionFlagParameter(a); !name.empty()) {
      option_query += "&" + name + "=" + UrlEncode(v);
      return true;
    }
    const auto it = values.find(a);
    if (it == values.end()) return false;
    *it->second = v;
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  if (plan.out_dir.empty()) return Fail("explain: --out DIR is required (see --help)");
  const auto payload = Parse<Format>(format);
  if (!payload.ok()) return Fail("explain: --" + payload.status().message());
  plan.extension = FormatEntry(*payload).extension;
  if (!timeout.empty()) plan.curl.timeout_seconds = std::max(1, std::atoi(timeout.c_str()));
  auto inputs = ListInputs(given);
  if (!inputs.ok()) return Fail(inputs.status().message());
  std::error_code error;
  fs::create_directories(plan.out_dir, error);
  if (error) return Fail("explain: cannot create " + plan.out_dir + ": " + error.message());
  // --server: one URL, or several comma-separated (gateways of one pool).
  for (size_t from = 0; from <= server.size();) {
    const size_t comma = std::min(server.find(',', from), server.size());
    std::string url = server.substr(from, comma - from);
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (!url.empty()) plan.servers.push_back(url);
    from = comma + 1;
  }
  if (plan.servers.empty()) return Fail("explain: --server needs a URL");
  for (const std::string& url : plan.servers) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return Fail("explain: --server " + url + " is not an http:// or https:// URL");
    }
  }
  plan.route = model.empty() ? "/v1/attributions" : "/v1/models/" + UrlEncode(model) + "/attributions";
  plan.query = "?format=" + format +
               (plan.top_k.empty() ? "&target=" + UrlEncode(plan.target) : "&top_k=" + UrlEncode(plan.top_k));
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{{"n_steps", n_steps},
                                                                                    {"method", method},
                                                                                    {"heatmap", heatmap},
                                                                                    {"sign", sign},
                                                                                    {"outlier_perc", outlier_perc}}) {
    if (!value.empty()) plan.query += "&" + name + "=" + UrlEncode(value);
  }
  plan.query += option_query;
  if (!baseline_image_path.empty()) {
    auto bytes = ReadWholeFile(baseline_image_path);
    if (!bytes.ok()) return Fail("explain: --baseline-image: " + bytes.status().message());
    plan.baseline_image = std::move(bytes).value();
  }

  const CurlGlobal curl;
  int threads = concurrency.empty() ? PoolWorkers(plan) : std::atoi(concurrency.c_str());
  if (threads < 1) return Fail("explain: --concurrency must be 1 or more");
  threads = std::min<int>(threads, static_cast<int>(inputs->size()));
  const std::map<std::string, Row> earlier = EarlierRows(plan.out_dir);
  std::vector<Row> rows(inputs->size());
  std::atomic<size_t> next{0};
  std::atomic<size_t> current_server{0};
  Progress progress(inputs->size());
  auto work = [&] {
    for (size_t i = next++; i < inputs->size(); i = next++) {
      const std::string& name = (*inputs)[i].name;
      Row row = ExplainOne((*inputs)[i], plan, &current_server,
                           [&progress, i, &name](double fraction) { progress.Partial(i, fraction, name); });
      if (row.status == "kept") {
        const auto found = earlier.find(row.image);
        if (found != earlier.end() && found->second.output == row.output) row = found->second;
        row.status = "kept";
      }
      progress.Done(i, row.status == "computed", row.image);
      rows[i] = std::move(row);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  WriteSummary(plan.out_dir, rows);

  size_t width = 5;
  int failures = 0, kept = 0;
  for (const Row& r : rows) {
    width = std::max(width, std::min<size_t>(r.image.size(), 48));
    failures += r.status == "error" ? 1 : 0;
    kept += r.status == "kept" ? 1 : 0;
  }
  auto dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  std::printf("%-*s  %-12s  %-12s  %-11s  %-12s  %s\n", static_cast<int>(width), "image", "target", "predicted",
              "probability", "delta", "output");
  for (const Row& r : rows) {
    const std::string output = r.status == "error" ? r.error : (r.status == "kept" ? "kept " : "") + r.output;
    std::printf("%-*s  %-12s  %-12s  %-11s  %-12s  %s\n", static_cast<int>(width), r.image.c_str(),
                dash(r.target).c_str(), dash(r.predicted).c_str(), dash(r.probability).c_str(),
                dash(r.convergence_delta).c_str(), output.c_str());
  }
  std::printf("%zu image(s), %d failed, %d kept from an earlier run; summary in %s\n", rows.size(), failures, kept,
              (fs::path(plan.out_dir) / "summary.csv").c_str());
  return failures > 0 ? 1 : 0;
}

}  // namespace intgrads
