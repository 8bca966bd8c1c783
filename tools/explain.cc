#include "tools/explain.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "common/http_client.h"
#include "common/image.h"
#include "common/protocol.h"
#include "tools/cli.h"

namespace intgrads {

namespace {

namespace fs = std::filesystem;

const char kExplainHelp[] =
    "usage: intgrads-images explain IMAGE_OR_FOLDER... --out DIR [--target CLASS] [--server URL] [options]\n\n"
    "Sends each image (for a folder: its .png, .jpg and .jpeg files) to a running service's\n"
    "POST /v1/attributions and writes one output per image into DIR, named after the image.\n"
    "A progress bar goes to stderr, a summary table (target, predicted class, probability,\n"
    "convergence delta) to stdout. Exits 1 if any image failed (its row says why).\n\n"
    "  --out DIR          where the outputs go (created if missing)\n"
    "  --target CLASS     a class name, an index, or predicted (default: predicted); several,\n"
    "                     comma-separated (cat,dog), give one output each, in IMAGE.zip\n"
    "  --top-k K          the K most probable classes instead, in IMAGE.zip\n"
    "  --server URL       the service (default http://localhost:8888, or $INTGRADS_SERVER); several gateways\n"
    "                     of one pool comma-separated: an image whose gateway cannot be reached (or answers\n"
    "                     503) goes to the next\n"
    "  --format F         gzip (the original's dict, default), npz, json or png (the heatmap)\n"
    "  --n-steps N        path points (default 50)\n"
    "  --method M         gausslegendre (default), riemann_left, riemann_right, riemann_middle,\n"
    "                     riemann_trapezoid, scan\n"
    "  --heatmap H        png only: signed (default) or absolute\n"
    "  --sign S           png only, Captum's look: all, positive, negative or absolute_value\n"
    "  --outlier-perc P   with --sign: the percent of the attribution left past the scale (default 2)\n"
    "  --model NAME       when the service serves several models\n"
    "  --token TOKEN      for a service started with --token (default: $INTGRADS_TOKEN)\n"
    "  --timeout S        seconds to wait for each image (default 600)\n"
    "the options beyond the original (docs/API.md):\n";

// The image files named: files as given, folders' image files sorted.
StatusOr<std::vector<fs::path>> ListImages(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const std::string& input : inputs) {
    std::error_code error;
    if (fs::is_directory(input, error)) {
      std::vector<fs::path> found;
      for (const auto& entry : fs::directory_iterator(input, error)) {
        if (entry.is_regular_file() && HasImageExtension(entry.path().string())) found.push_back(entry.path());
      }
      std::sort(found.begin(), found.end());
      if (found.empty()) return InvalidError("explain: no .png or .jpg files in " + input);
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(input, error)) {
      files.emplace_back(input);
    } else {
      return NotFoundError("explain: no such file or folder: " + input);
    }
  }
  if (files.empty()) return InvalidError("explain: name at least one image or folder");
  return files;
}

void Progress(size_t done, size_t total, const std::string& current) {
  if (!isatty(STDERR_FILENO) && done < total) return;  // a log gets the final line only
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / std::max<size_t>(total, 1));
  std::fprintf(stderr, "\r[%s%s] %zu/%zu %-40.40s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), done, total, current.c_str());
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

struct Row {
  std::string image;
  std::string target = "-";
  std::string predicted = "-";
  std::string probability = "-";
  std::string delta = "-";
  std::string output;  // the file written, or the error
};

std::string Header(const HttpAnswer& answer, const std::string& name) {
  const auto it = answer.headers.find(name);
  return it == answer.headers.end() ? "-" : it->second;
}

}  // namespace

int RunExplain(const std::vector<std::string>& args) {
  std::vector<std::string> inputs;
  std::string out_dir, target = "predicted", format = "gzip", n_steps, method, heatmap, model, token, top_k;
  std::string sign, outlier_perc;
  const char* env_server = std::getenv("INTGRADS_SERVER");
  const char* env_token = std::getenv("INTGRADS_TOKEN");
  std::string server = env_server != nullptr ? env_server : "http://localhost:8888";
  if (env_token != nullptr) token = env_token;
  int timeout = 600;
  std::string path_query, baseline_image_path;
  FlagReader reader;
  reader.program = "intgrads-images: explain";
  reader.help_flags = {"--help", "-h"};
  reader.print_help = [] { std::printf("%s%s", kExplainHelp, kPathFlagsHelp); };
  reader.take = [&inputs](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
    if (all[*i].rfind('-', 0) == 0) return false;
    inputs.push_back(all[*i]);  // an image, a folder or a zip
    return true;
  };
  reader.set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (const std::string name = OptionFlagParameter(a); !name.empty()) {
      path_query += "&" + name + "=" + UrlEncode(v);
    } else if (a == "--baseline-image") {
      baseline_image_path = v;
    } else if (a == "--out") {
      out_dir = v;
    } else if (a == "--target") {
      target = v;
    } else if (a == "--top-k") {
      top_k = v;
    } else if (a == "--server") {
      server = v;
    } else if (a == "--format") {
      format = v;
    } else if (a == "--n-steps") {
      n_steps = v;
    } else if (a == "--method") {
      method = v;
    } else if (a == "--heatmap") {
      heatmap = v;
    } else if (a == "--sign") {
      sign = v;
    } else if (a == "--outlier-perc") {
      outlier_perc = v;
    } else if (a == "--model") {
      model = v;
    } else if (a == "--token") {
      token = v;
    } else if (a == "--timeout") {
      timeout = std::max(1, std::stoi(v));
    } else {
      return false;
    }
    return true;
  };
  if (auto exit = ReadFlags(reader, args)) return *exit;
  if (out_dir.empty()) return Fail("explain: --out DIR is required (see --help)");
  const PayloadFormat* payload = FindPayloadFormat(format);
  if (payload == nullptr) return Fail("explain: --format must be gzip, npz, json or png, not '" + format + "'");
  auto files = ListImages(inputs);
  if (!files.ok()) return Fail(files.status().message());
  std::error_code error;
  fs::create_directories(out_dir, error);
  if (error) return Fail("explain: cannot create " + out_dir + ": " + error.message());
  // --server: one URL, or several comma-separated (gateways of one pool).
  std::vector<std::string> servers;
  for (size_t from = 0; from <= server.size();) {
    const size_t comma = std::min(server.find(',', from), server.size());
    std::string url = server.substr(from, comma - from);
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (!url.empty()) servers.push_back(url);
    from = comma + 1;
  }
  if (servers.empty()) return Fail("explain: --server needs a URL");
  size_t current = 0;
  std::string route = model.empty() ? "/v1/attributions" : "/v1/models/" + UrlEncode(model) + "/attributions";
  std::string query =
      "?format=" + format + (top_k.empty() ? "&target=" + UrlEncode(target) : "&top_k=" + UrlEncode(top_k));
  if (!n_steps.empty()) query += "&n_steps=" + UrlEncode(n_steps);
  if (!method.empty()) query += "&method=" + UrlEncode(method);
  if (!heatmap.empty()) query += "&heatmap=" + UrlEncode(heatmap);
  if (!sign.empty()) query += "&sign=" + UrlEncode(sign);
  if (!outlier_perc.empty()) query += "&outlier_perc=" + UrlEncode(outlier_perc);
  query += path_query;
  std::string baseline_image;
  if (!baseline_image_path.empty()) {
    auto bytes = ReadWholeFile(baseline_image_path);
    if (!bytes.ok()) return Fail("explain: --baseline-image: " + bytes.status().message());
    baseline_image = std::move(bytes).value();
  }

  std::vector<Row> rows;
  int failures = 0;
  for (size_t i = 0; i < files->size(); ++i) {
    const fs::path& file = (*files)[i];
    Progress(i, files->size(), file.filename().string());
    Row row;
    row.image = file.string();
    auto bytes = ReadWholeFile(file.string());
    StatusOr<HttpAnswer> answer = bytes.ok() ? StatusOr<HttpAnswer>(HttpAnswer{}) : bytes.status();
    if (bytes.ok()) {
      // A multipart upload: the image, and the baseline image when there is one.
      const std::string boundary = "intgrads-explain-7d1f3a9c";
      std::string form;
      auto part = [&](const std::string& name, const std::string& filename, const std::string& data) {
        for (const std::string& piece :
             {std::string("--"), boundary, std::string("\r\nContent-Disposition: form-data; name=\""), name,
              std::string("\"; filename=\""), filename,
              std::string("\"\r\nContent-Type: application/octet-stream\r\n\r\n")}) {
          form += piece;
        }
        form += data;
        form += "\r\n";
      };
      std::string filename = file.filename().string();
      std::replace(filename.begin(), filename.end(), '"', '_');
      part("image", filename, *bytes);
      if (!baseline_image.empty()) part("baseline_image", "baseline", baseline_image);
      form += "--" + boundary + "--\r\n";
      std::vector<std::pair<std::string, std::string>> headers = {
          {"Content-Type", "multipart/form-data; boundary=" + boundary}};
      if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
      // Attributions are deterministic, so a request whose gateway cannot be
      // reached (or is shutting down: 503) is sent to the next one.
      for (size_t tries = 0; tries < servers.size(); ++tries) {
        answer = HttpRequest("POST", servers[current] + route + query, headers, form, timeout);
        if (answer.ok() && answer->status != 503) break;
        current = (current + 1) % servers.size();
      }
    }
    if (!answer.ok()) {
      row.output = "error: " + answer.status().message();
    } else if (answer->status != 200) {
      const auto doc = nlohmann::json::parse(answer->body, nullptr, false);
      const std::string message = doc.is_object() && doc.contains("error") && doc["error"].is_string()
                                      ? doc["error"].get<std::string>()
                                      : answer->body.substr(0, 200);
      row.output = "error " + std::to_string(answer->status) + ": " + message;
    } else {
      // Several classes come back as a zip with summary.json, one file each.
      const bool several = Header(*answer, "content-type") == "application/zip";
      const fs::path written = fs::path(out_dir) / (file.stem().string() + (several ? ".zip" : payload->extension));
      std::ofstream out(written, std::ios::binary);
      out.write(answer->body.data(), static_cast<std::streamsize>(answer->body.size()));
      row.output = out ? written.string() : "error: cannot write " + written.string();
      row.target = several ? (top_k.empty() ? target : "top " + top_k) : Header(*answer, "x-target-name");
      row.predicted = Header(*answer, "x-predicted-name");
      row.probability = Header(*answer, "x-probability");
      row.delta = Header(*answer, "x-convergence-delta");
    }
    if (row.output.rfind("error", 0) == 0) ++failures;
    rows.push_back(std::move(row));
  }
  Progress(files->size(), files->size(), "done");
  size_t width = 5;
  for (const Row& r : rows) width = std::max(width, std::min<size_t>(r.image.size(), 48));
  std::printf("%-*s  %-12s  %-12s  %-11s  %-12s  %s\n", static_cast<int>(width), "image", "target", "predicted",
              "probability", "delta", "output");
  for (const Row& r : rows) {
    std::printf("%-*s  %-12s  %-12s  %-11s  %-12s  %s\n", static_cast<int>(width), r.image.c_str(), r.target.c_str(),
                r.predicted.c_str(), r.probability.c_str(), r.delta.c_str(), r.output.c_str());
  }
  std::printf("%zu image(s), %d failed\n", rows.size(), failures);
  return failures > 0 ? 1 : 0;
}

}  // namespace intgrads
