// Times one attribution (n_steps forward and input-gradient passes) of the
// engine alone, warm, on the reference configurations under their
// deterministic weights.
//   build/bin/intgrads-bench-engine [--threads N] [--n-steps N] [--repeats N] [--chunk-size N]
//   [--memory-budget-mb N] [--method M] [--bf16] [--cuda [--tf32]] [NAME ...]
// The batch size follows from the budget as in the worker (MB per point, measured at load, is printed).
// With --method scan the time includes the forward-only scan that places the points.
// NAME: default (the embedded default model), bit-m-r50x1, lanet-c16-l8, bit-s-r101x3, lanet-c128-l24
// (the reference configurations); without NAME: default, bit-m-r50x1, lanet-c16-l8.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/memory.h"
#include "tests/worker/reference.h"
#include "worker/engine.h"
#include "worker/model_flags.h"

int main(int argc, char** argv) {
  using namespace intgrads;
  KeepFreedMemoryForPasses();  // as the worker
  int threads = 2, n_steps = 50, repeats = 5, budget_mb = -1;
  EngineOptions options;
  torch::Device device(torch::kCPU);
  std::vector<std::string> names;
  std::string method = "gausslegendre";
  bool bf16 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--n-steps" || a == "--repeats" || a == "--chunk-size" ||
         a == "--memory-budget-mb") &&
        i + 1 < argc) {
      (a == "--threads"      ? threads
       : a == "--n-steps"    ? n_steps
       : a == "--repeats"    ? repeats
       : a == "--chunk-size" ? options.chunk_size
                             : budget_mb) = std::atoi(argv[++i]);
    } else if (a == "--method" && i + 1 < argc) {
      method = argv[++i];
    } else if (a == "--bf16") {
      bf16 = true;
    } else if (a == "--cuda") {
      device = torch::Device(torch::kCUDA, 0);
      AllowTf32(false);
    } else if (a == "--tf32") {
      AllowTf32(true);
    } else {
      names.push_back(a);
    }
  }
  if (names.empty()) names = {"default", "bit-m-r50x1", "lanet-c16-l8"};
  torch::set_num_threads(threads);
  std::printf(
      "| model | device | threads | method | n_steps | MB per point | batch | first s | best s | median s |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  options.memory_budget_bytes = MemoryBudgetBytes(budget_mb, device);
  for (const std::string& name : names) {
    auto ref = name == "default" ? std::nullopt : testing::LoadReference(name);
    if (name != "default" && !ref) {
      std::fprintf(stderr, "%s: reference not found under %s\n", name.c_str(), INTGRADS_REFERENCE_DIR);
      return 1;
    }
    const ModelFamily family = name.rfind("bit", 0) == 0 ? ModelFamily::kBit : ModelFamily::kLanet;
    auto model = ref ? LoadModel(family, testing::DeterministicStateDict(*ref)) : LoadDefaultModel();
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), model.status().message().c_str());
      return 1;
    }
    (*model)->To(torch::TensorOptions().dtype(bf16 ? torch::kBFloat16 : torch::kFloat32));
    options.point_bytes = MeasurePointBytes(**model);
    (*model)->To(device);
    const torch::Tensor input =
        torch::randn({1, 3, 32, 32}, torch::Generator(at::detail::createCPUGenerator(0))).to(device);
    if (!PlanSchedule(**model, input, 3, method, n_steps, options).ok()) {
      std::fprintf(stderr, "unknown method %s or bad n_steps %d\n", method.c_str(), n_steps);
      return 1;
    }
    std::vector<double> seconds;
    for (int r = 0; r <= repeats; ++r) {
      const auto started = std::chrono::steady_clock::now();
      const PathSchedule schedule = *PlanSchedule(**model, input, 3, method, n_steps, options);
      (void)Attribute(**model, input, 3, schedule, options);  // its results come back to the CPU: synchronized
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    std::vector<double> warm(seconds.begin() + 1, seconds.end());
    std::sort(warm.begin(), warm.end());
    std::printf("| %s | %s | %d | %s | %d | %.1f | %lld | %.3f | %.3f | %.3f |\n", name.c_str(), device.str().c_str(),
                threads, method.c_str(), n_steps, static_cast<double>(options.point_bytes) / (1024.0 * 1024.0),
                static_cast<long long>(ChunkRows(options, n_steps, device.is_cuda())), seconds.front(), warm.front(),
                warm[warm.size() / 2]);
    if (bf16) {  // the error against float32: the same weights loaded afresh, the same input
      auto full_model = ref ? LoadModel(family, testing::DeterministicStateDict(*ref)) : LoadDefaultModel();
      (*full_model)->To(device);
      const Attribution low =
          Attribute(**model, input, 3, *PlanSchedule(**model, input, 3, method, n_steps, options), options);
      const Attribution high =
          Attribute(**full_model, input, 3, *PlanSchedule(**full_model, input, 3, method, n_steps, options), options);
      const double relative_l2 =
          ((low.integrated_grads - high.integrated_grads).norm() / high.integrated_grads.norm()).item<double>();
      std::printf(
          "|   against float32 | IG relative L2 %.3g | delta %.4g (float32 %.4g) | f(x) - f(baseline) %.4g (float32 "
          "%.4g) |\n",
          relative_l2, low.convergence_delta, high.convergence_delta, low.target_logit - low.baseline_logit,
          high.target_logit - high.baseline_logit);
    }
  }
  return 0;
}
