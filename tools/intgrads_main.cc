// intgrads-images (also installed as `intgrads`): the original server's
// command line, plus offline subcommands.
//   intgrads-images -bp model.pth [-h HOST] [-p PORT] [--cpu|--cuda]   serve
//   intgrads-images attribute --bit-path P --input in.json --output out.gzip
//   intgrads-images prepare IMAGE CLASS OUT.json
//   intgrads-images explain IMAGE_OR_FOLDER... --out DIR [--target CLASS] [--server URL]
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/attributions.h"
#include "common/file.h"
#include "common/image.h"
#include "common/memory.h"
#include "common/request.h"
#include "tools/cli.h"
#include "tools/explain.h"
#include "tools/launcher.h"
#include "tools/path_scan.h"
#include "tools/train.h"
#include "worker/serving/model_flags.h"
#include "worker/serving/worker_loop.h"

namespace intgrads {
namespace {

const char kAttributeHelp[] =
    "usage: intgrads-images attribute [model flags] --input in.json --output out.gzip [--n-steps N] [--method M]\n\n"
    "Computes one attribution without a server; the output is byte for byte what the service sends.\n"
    "in.json is the request body of POST /model/ (as prepare_input.py writes it); --n-steps and\n"
    "--method override its fields, --target CLASSES (comma-separated) or --top-k K its target_class:\n"
    "with several classes, out.gzip becomes out-CLASS.gzip, one file per class. --format: {format}\n"
    "(default gzip, the service's bytes; docs/API.md).\n\n"
    "  --input PATH, --output PATH, --n-steps N, --target CLASSES, --top-k K, --format F, --chunk-size N,\n"
    "  --memory-budget-mb N, --threads N, --gzip-level N (as intgrads-worker's), --method M, one of\n"
    "  {method}\n"
    "the options beyond the original (docs/API.md):\n";

// --method or --format from its text; the refusal names the flag.
StatusOr<bool> SetWord(const std::string& flag, const std::string& value, std::optional<Method>* method,
                       Format* format) {
  if (flag == "--method") {
    auto parsed = Parse<Method>(value);
    if (!parsed.ok()) return InvalidError("--" + parsed.status().message());
    *method = *parsed;
  } else {
    auto parsed = Parse<Format>(value);
    if (!parsed.ok()) return InvalidError("--" + parsed.status().message());
    *format = *parsed;
  }
  return true;
}

int RunAttribute(const std::vector<std::string>& args) {
  ModelFlags model_flags;
  WorkerOptions options;
  std::string input_path, output_path;
  int n_steps = 0;
  std::optional<Method> method;
  std::string target;
  int top_k = 0;
  Format format = Format::kGzip;
  PathRequest paths;
  RegionRequest regions;
  std::string baseline_image;
  int64_t budget_mb = -1;
  auto set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (const std::string name = OptionFlagParameter(a); !name.empty()) {
      auto path_option = SetPathOption(name, v, &paths);
      if (path_option.ok() && !*path_option) path_option = SetRegionOption(name, v, &regions);
      if (!path_option.ok()) return InvalidError("--" + path_option.status().message());
      return true;
    }
    if (a == "--baseline-image")
      baseline_image = v;
    else if (a == "--input")
      input_path = v;
    else if (a == "--output")
      output_path = v;
    else if (a == "--n-steps")
      n_steps = std::stoi(v);
    else if (a == "--method" || a == "--format")
      return SetWord(a, v, &method, &format);
    else if (a == "--target")
      target = v;
    else if (a == "--top-k")
      top_k = std::stoi(v);
    else if (a == "--chunk-size")
      options.engine.chunk_size = std::stoi(v);
    else if (a == "--memory-budget-mb")
      budget_mb = std::stoll(v);
    else if (a == "--threads")
      torch::set_num_threads(std::stoi(v));
    else if (a == "--gzip-level")
      options.gzip_level = std::stoi(v);
    else
      return false;
    return true;
  };
  const std::string help = WithWords(std::string(kAttributeHelp) + kPathFlagsHelp);
  if (auto exit = WalkFlags("attribute", args, help.c_str(), &model_flags, set)) return *exit;
  if (input_path.empty() || output_path.empty()) return Fail("attribute: --input and --output are required");
  if (!baseline_image.empty()) {
    auto image = ReadImageFile(baseline_image);
    if (!image.ok()) return Fail("attribute: --baseline-image: " + image.status().message());
    paths.baseline_image = std::move(image).value();
  }
  torch::Device device(torch::kCPU);
  auto model = LoadFlaggedModel(model_flags, &device, &options.engine, budget_mb);
  if (!model.ok()) return Fail(model.status().message());
  auto body = ReadWholeFile(input_path);
  if (!body.ok()) return Fail("attribute: " + body.status().message());
  auto request = ParseModelRequest(*body, (*model)->info().classes, options.limits);
  if (!request.ok()) return Fail(input_path + ": " + request.status().message());
  const std::vector<std::string>& classes = (*model)->info().classes;
  JobRequest job;
  job.target = request->target;
  job.top_k = top_k;
  if (!target.empty()) {
    auto targets = ResolveTargets({target}, classes);
    if (!targets.ok()) return Fail("attribute: --target: " + targets.status().message());
    job.targets = *targets;
  }
  job.n_steps = n_steps > 0 ? n_steps : request->n_steps;
  job.method = method.value_or(request->method);
  job.image = std::move(request->image);
  job.paths = paths;
  job.regions = regions;
  job.format = format;
  const auto started = std::chrono::steady_clock::now();
  JobReply reply = ComputeReply(**model, device, job, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!reply.ok()) return Fail(reply.error);
  std::vector<const JobReply*> results = {&reply};
  for (const JobReply& other : reply.others) results.push_back(&other);
  for (const JobReply* r : results) {
    const std::string& name = classes[static_cast<size_t>(r->target)];
    std::string path = output_path;
    if (results.size() > 1) {  // out.gzip -> out-cat.gzip
      const size_t dot = path.rfind('.');
      const size_t slash = path.rfind('/');
      const size_t cut = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? dot : path.size();
      path.insert(cut, "-" + name);
    }
    std::ofstream out(path, std::ios::binary);
    out.write(r->payload.data(), static_cast<std::streamsize>(r->payload.size()));
    if (!out) return Fail("attribute: cannot write " + path);
    std::printf("wrote %s: target %d (%s), n_steps %d, %s, convergence delta %.6g, %.3f s\n", path.c_str(), r->target,
                name.c_str(), r->n_steps, Name(job.method).c_str(), r->convergence_delta, seconds);
  }
  return 0;
}

int RunPrepare(const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "--help") {
    std::printf(
        "usage: intgrads-images prepare IMAGE CLASS OUT.json\n\n"
        "Writes the request body of POST /model/ for a PNG or JPEG image (converted to RGB),\n"
        "as prepare_input.py does.\n");
    return 0;
  }
  if (args.size() != 3) return Fail("prepare: usage: intgrads-images prepare IMAGE CLASS OUT.json");
  auto image = ReadImageFile(args[0]);
  if (!image.ok()) return Fail(image.status().message());
  const Image rgb = ToRgb(*image);
  nlohmann::json rows = nlohmann::json::array();
  for (int y = 0; y < rgb.height; ++y) {
    nlohmann::json row = nlohmann::json::array();
    for (int x = 0; x < rgb.width; ++x) row.push_back({rgb.at(y, x, 0), rgb.at(y, x, 1), rgb.at(y, x, 2)});
    rows.push_back(std::move(row));
  }
  std::ofstream out(args[2]);
  out << nlohmann::json{{"img_data", rows}, {"target_class", args[1]}}.dump();
  if (!out) return Fail("prepare: cannot write " + args[2]);
  return 0;
}

}  // namespace
}  // namespace intgrads

int main(int argc, char** argv) {
  intgrads::KeepFreedMemoryForPasses();
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    const std::string command = args.empty() ? "" : args[0];
    const std::vector<std::string> rest = args.empty() ? args : std::vector<std::string>(args.begin() + 1, args.end());
    if (command == "attribute") return intgrads::RunAttribute(rest);
    if (command == "explain") return intgrads::RunExplain(rest);
    if (command == "prepare") return intgrads::RunPrepare(rest);
    if (command == "train") return intgrads::RunTrain(rest);
    if (command == "evaluate") return intgrads::RunEvaluate(rest);
    if (command == "path-scan") return intgrads::RunPathScan(rest);
    return intgrads::RunLauncher(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "intgrads-images: %s\n", e.what());
    return 1;
  }
}
