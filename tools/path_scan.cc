// For one image and target: f(baseline + a (x - baseline)) and its derivative
// along the path, d/da f = grad f . (x - baseline), on a geometric grid of a
// (the integrand of IG is that derivative); then the completeness gap
// |sum(IG) - (f(x) - f(baseline))| / |f(x) - f(baseline)| of every method at
// several n_steps. Markdown tables on stdout, --json for a machine.
#include "tools/path_scan.h"

#include <torch/autograd.h>
#include <torch/utils.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/file.h"
#include "common/request.h"
#include "tools/cli.h"
#include "worker/engine/engine.h"
#include "worker/serving/model_flags.h"

namespace intgrads {

namespace {

const char kHelp[] =
    "usage: intgrads-images path-scan [model flags] --input in.json [--points N] [--smallest A] [--float64]\n"
    "                             [--json]\n\n"
    "For the image and target_class of in.json (the body of POST /model/): the target logit f and its\n"
    "derivative along the path baseline + a (x - baseline) at N points a on a geometric grid from A to 1\n"
    "(default 25 points from 1e-6), then the completeness gap |sum(IG) - (f(x) - f(baseline))| as a\n"
    "fraction of |f(x) - f(baseline)| for every method at n_steps 10, 25, 50, 100, 200.\n"
    "--float64 runs the model and the path in double precision (to tell the function from float32 rounding).\n";

constexpr int64_t kScanChunk = 25;

}  // namespace

int RunPathScan(const std::vector<std::string>& args) {
  ModelFlags model_flags;
  std::string input_path;
  int points = 25;
  double smallest = 1e-6;
  bool as_json = false;
  bool float64 = false;
  auto take = [&](const std::vector<std::string>& all, size_t* i) -> StatusOr<bool> {
    if (all[*i] == "--json") as_json = true;
    if (all[*i] == "--float64") float64 = true;
    return all[*i] == "--json" || all[*i] == "--float64";
  };
  auto set = [&](const std::string& a, const std::string& v) -> StatusOr<bool> {
    if (a == "--input")
      input_path = v;
    else if (a == "--points")
      points = std::stoi(v);
    else if (a == "--smallest")
      smallest = std::stod(v);
    else if (a == "--threads")
      torch::set_num_threads(std::stoi(v));
    else
      return false;
    return true;
  };
  if (auto exit = WalkFlags("path-scan", args, kHelp, &model_flags, set, take)) return *exit;
  if (input_path.empty()) return Fail("path-scan: --input is required");
  if (points < 2 || !(smallest > 0 && smallest < 1))
    return Fail("path-scan: need --points >= 2 and 0 < --smallest < 1");
  torch::Device device(torch::kCPU);
  auto model = LoadFlaggedModel(model_flags, &device);
  if (!model.ok()) return Fail(model.status().message());
  auto body = ReadWholeFile(input_path);
  if (!body.ok()) return Fail("path-scan: " + body.status().message());
  auto request = ParseModelRequest(*body, (*model)->info().classes, {});
  if (!request.ok()) return Fail(input_path + ": " + request.status().message());
  const torch::ScalarType dtype = float64 ? torch::kFloat64 : torch::kFloat32;
  if (!model_flags.bf16) (*model)->To(torch::TensorOptions().dtype(dtype));
  const torch::Tensor x = PreprocessImage(request->image, (*model)->info()).to(device, dtype);
  const int target = request->target;

  // The integrand on a geometric grid of a, and a = 0.
  std::vector<double> alphas = {0.0};
  for (int k = 0; k < points; ++k) alphas.push_back(smallest * std::pow(1.0 / smallest, k / (points - 1.0)));
  const auto n = static_cast<int64_t>(alphas.size());
  torch::Tensor a = torch::tensor(alphas, torch::kFloat64).to(x.options()).view({n, 1, 1, 1});
  torch::Tensor f = torch::empty({n}, x.options());
  torch::Tensor derivative = torch::empty({n}, x.options());
  for (int64_t first = 0; first < n; first += kScanChunk) {  // in chunks, to bound memory
    const int64_t last = std::min(n, first + kScanChunk);
    torch::Tensor path = (a.slice(0, first, last) * x).requires_grad_(true);  // the baseline is zero
    torch::Tensor logit = (*model)->Forward(path.to((*model)->dtype())).select(1, target);
    torch::Tensor grad = torch::autograd::grad({logit.sum()}, {path})[0];
    f.slice(0, first, last).copy_(logit.detach());
    derivative.slice(0, first, last).copy_((grad * x).sum({1, 2, 3}));
  }
  f = f.cpu();
  derivative = derivative.cpu();
  const double change = f[n - 1].item<double>() - f[0].item<double>();

  nlohmann::json result = {{"target", target}, {"f_x", f[n - 1].item<double>()}, {"f_baseline", f[0].item<double>()}};
  nlohmann::json scan = nlohmann::json::array();
  for (int64_t k = 0; k < n; ++k) {
    scan.push_back({{"a", alphas[static_cast<size_t>(k)]},
                    {"f", f[k].item<double>()},
                    {"df_da", derivative[k].item<double>()},
                    {"fraction_of_change", (f[k].item<double>() - f[0].item<double>()) / change}});
  }
  result["scan"] = scan;
  const std::vector<int> steps = {10, 25, 50, 100, 200};
  nlohmann::json gaps = nlohmann::json::object();
  EngineOptions options;
  options.chunk_size = kScanChunk;
  for (const Method method : ValuesOf<Method>()) {
    nlohmann::json row = nlohmann::json::array();
    for (int s : steps) {
      const Attribution attribution =
          Attribute(**model, x, target, *PlanSchedule(**model, x, target, method, s, options), options);
      row.push_back(std::abs(attribution.convergence_delta) / std::abs(change));
    }
    gaps[Name(method)] = row;
  }
  result["n_steps"] = steps;
  result["gap_fraction"] = gaps;
  if (as_json) {
    std::printf("%s\n", result.dump(1).c_str());
    return 0;
  }
  std::printf("target %d (%s): f(x) = %.6g, f(baseline) = %.6g, f(x) - f(baseline) = %.6g\n\n", target,
              (*model)->info().classes[static_cast<size_t>(target)].c_str(), f[n - 1].item<double>(),
              f[0].item<double>(), change);
  std::printf("| a | f(a x) | (f(a x) - f(0)) / (f(x) - f(0)) | d/da f(a x) |\n| --- | --- | --- | --- |\n");
  for (const auto& p : scan) {
    std::printf("| %.3g | %.6g | %.4f | %.6g |\n", p["a"].get<double>(), p["f"].get<double>(),
                p["fraction_of_change"].get<double>(), p["df_da"].get<double>());
  }
  std::printf("\ncompleteness gap |sum(IG) - (f(x) - f(baseline))| / |f(x) - f(baseline)|\n\n| method |");
  for (int s : steps) std::printf(" n_steps %d |", s);
  std::printf("\n| --- |");
  for (size_t i = 0; i < steps.size(); ++i) std::printf(" --- |");
  std::printf("\n");
  for (const auto& [method, row] : gaps.items()) {
    std::printf("| %s |", method.c_str());
    for (const auto& g : row) std::printf(" %.4f |", g.get<double>());
    std::printf("\n");
  }
  return 0;
}

}  // namespace intgrads
