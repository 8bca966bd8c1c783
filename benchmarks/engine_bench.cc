// Times one attribution (n_steps forward and input-gradient passes) of the
// engine alone, warm, on the reference configurations under their
// deterministic weights.
//   build/bin/intgrads-bench-engine [--threads N] [--n-steps N] [--repeats N] [--chunk-size N]
//   [--memory-budget-mb N] [--method M] [--bf16] [--cuda [--tf32]] [--profile] [NAME ...]
//   build/bin/intgrads-bench-engine [--threads N] --fma-peak
// The batch size follows from the budget as in the worker (MB per point, measured at load, is printed).
// With --method scan the time includes the forward-only scan that places the points.
// --profile: one more attribution with every ATen operation and autograd node timed, then the operations
// by their own time (without the operations they call), largest first: where the time goes; and the
// convolutions' totals by kind (1 x 1, depthwise, other), every shape counted.
// NAME: default (the embedded default model), bit-m-r50x1, lanet-c16-l8, bit-s-r101x3, lanet-c128-l24
// (the reference configurations); without NAME: default, bit-m-r50x1, lanet-c16-l8.
// --fma-peak: this CPU's float32 multiply-add rate on N threads instead, best of 3: independent chains of
// multiply-adds in registers (AVX-512 where the CPU has it, else AVX2), two FLOPs each; no real kernel can beat it,
// so the passes' counted FLOPs divided by it bound their time from below.
#include <ATen/record_function.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/memory.h"
#include "tests/worker/reference.h"
#include "worker/engine/engine.h"
#include "worker/serving/model_flags.h"

namespace {

using Clock = std::chrono::steady_clock;

// Independent chains of `rounds` multiply-adds on a vector of floats (GCC's vector extension, compiled for the
// target of the function it is inlined into); returns the lanes' sum so that none is left out. Twelve chains cover
// the latency (4 cycles) times the pipes (2) of current x86 cores.
constexpr int kChains = 12;
template <typename Vector>
[[gnu::always_inline]] inline float FmaChains(int64_t rounds) {
  Vector v[kChains];
  for (int i = 0; i < kChains; ++i) v[i] = Vector{} + (1.0F + 1e-3F * static_cast<float>(i));
  const Vector b = Vector{} + 0.999999F, c = Vector{} + 1e-7F;
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) v[i] = v[i] * b + c;
  }
  float total = 0;
  for (int i = 0; i < kChains; ++i) {
    for (size_t lane = 0; lane < sizeof(Vector) / sizeof(float); ++lane) total += v[i][lane];
  }
  return total;
}

#if defined(__x86_64__)
using Float16 = float __attribute__((vector_size(64)));
using Float8 = float __attribute__((vector_size(32)));
__attribute__((target("avx512f"))) float Chains512(int64_t rounds) { return FmaChains<Float16>(rounds); }
__attribute__((target("avx2,fma"))) float Chains256(int64_t rounds) { return FmaChains<Float8>(rounds); }
#endif

// FLOP/s of `threads` threads each running the chains, best of 3; 0 where this build cannot measure it.
double FmaPeak(int threads) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") != 0;
  if (!avx512 && __builtin_cpu_supports("fma") == 0) return 0;
  constexpr int64_t kRounds = 100'000'000;
  const double flops_a_thread = 2.0 * (avx512 ? 16 : 8) * kChains * static_cast<double>(kRounds);
  double best = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<float> sums(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(threads));
    const auto started = Clock::now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back(
          [&sums, t, avx512] { sums[static_cast<size_t>(t)] = avx512 ? Chains512(kRounds) : Chains256(kRounds); });
    }
    for (std::thread& w : workers) w.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    best = std::max(best, flops_a_thread * threads / seconds);
  }
  return best;
#else
  (void)threads;
  return 0;
#endif
}

// A convolution's kind ("1 x 1", "depthwise", "other") and shape, " KxK CIN->COUT on HxW" (the input's map;
// "depthwise KxK on HxW"), for the forward and input-gradient calls; both empty for other operations.
struct Convolution {
  std::string kind, shape;
};
Convolution ConvolutionOf(const at::RecordFunction& fn) {
  const std::string name = fn.name();
  const bool forward = name == "aten::mkldnn_convolution" || name == "aten::convolution";
  if (!forward && name != "aten::convolution_backward") return {};
  const auto inputs = fn.inputs();  // forward (input, weight, ...); backward (grad_output, input, weight, ...)
  const size_t input = forward ? 0 : 1;
  if (inputs.size() < input + 2 || !inputs[input].isTensor() || !inputs[input + 1].isTensor()) return {};
  const at::Tensor x = inputs[input].toTensor(), w = inputs[input + 1].toTensor();
  if (x.dim() != 4 || w.dim() != 4) return {};
  auto str = [](int64_t v) { return std::to_string(v); };
  const std::string kernel = str(w.size(2)) + "x" + str(w.size(3));
  const std::string map = " on " + str(x.size(2)) + "x" + str(x.size(3));
  if (w.size(1) == 1 && x.size(1) > 1) return {"depthwise", " depthwise " + kernel + map};
  return {w.size(2) == 1 && w.size(3) == 1 ? "1 x 1" : "other",
          " " + kernel + " " + str(x.size(1)) + "->" + str(w.size(0)) + map};
}

// Self time per operation name (convolutions by shape), from RecordFunction's start and end callbacks: each thread
// keeps a stack of the operations open on it, and an operation's time is charged to it less the time of those it
// opened.
struct OpProfile {
  struct Open {
    Clock::time_point started;
    double children = 0;
  };
  std::mutex mutex;
  std::map<std::string, std::pair<double, long>> self;   // name: seconds, calls
  std::map<std::string, std::pair<double, long>> kinds;  // the convolutions' kinds: seconds, calls
  static thread_local std::vector<Open> stack;

  static OpProfile& Get() {
    static OpProfile profile;
    return profile;
  }
  static std::unique_ptr<at::ObserverContext> Start(const at::RecordFunction& /*fn*/) {
    stack.push_back({Clock::now()});
    return nullptr;
  }
  static void End(const at::RecordFunction& fn, at::ObserverContext* /*ctx*/) {
    if (stack.empty()) return;  // opened before the callback was added
    const Open open = stack.back();
    stack.pop_back();
    const double total = std::chrono::duration<double>(Clock::now() - open.started).count();
    if (!stack.empty()) stack.back().children += total;
    OpProfile& profile = Get();
    std::lock_guard<std::mutex> lock(profile.mutex);
    const Convolution convolution = ConvolutionOf(fn);
    auto& [seconds, calls] = profile.self[fn.name() + convolution.shape];
    seconds += total - open.children;
    ++calls;
    if (!convolution.kind.empty()) {
      auto& [kind_seconds, kind_calls] = profile.kinds[convolution.kind];
      kind_seconds += total - open.children;
      ++kind_calls;
    }
  }
  // The table, operations under 1% of the total summed into one row; then the convolutions' totals by kind.
  void Print(double wall) {
    std::vector<std::pair<double, std::string>> rows;
    double sum = 0;
    for (const auto& [name, entry] : self) {
      rows.push_back({entry.first, name + " | " + std::to_string(entry.second)});
      sum += entry.first;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::printf("\n| operation | calls | self ms | share of the attribution |\n| --- | --- | --- | --- |\n");
    double rest = 0;
    for (const auto& [seconds, row] : rows) {
      if (seconds < 0.01 * wall) {
        rest += seconds;
      } else {
        std::printf("| %s | %.1f | %.1f%% |\n", row.c_str(), 1e3 * seconds, 100 * seconds / wall);
      }
    }
    std::printf("| (each under 1%%) | | %.1f | %.1f%% |\n| (outside any operation) | | %.1f | %.1f%% |\n\n", 1e3 * rest,
                100 * rest / wall, 1e3 * (wall - sum), 100 * (wall - sum) / wall);
    // The convolutions again, every shape counted, by kind.
    std::printf(
        "| convolutions, forward and input gradient | calls | self ms | share of the attribution |\n"
        "| --- | --- | --- | --- |\n");
    for (const auto& [kind, entry] : kinds) {
      std::printf("| %s convolutions | %ld | %.1f | %.1f%% |\n", kind.c_str(), entry.second, 1e3 * entry.first,
                  100 * entry.first / wall);
    }
    std::printf("\n");
    self.clear();
    kinds.clear();
  }
};
thread_local std::vector<OpProfile::Open> OpProfile::stack;

int Run(int argc, char** argv) {
  using namespace intgrads;
  KeepFreedMemoryForPasses();  // as the worker
  int threads = 2, n_steps = 50, repeats = 5, budget_mb = -1, jobs = 1;
  EngineOptions options;
  torch::Device device(torch::kCPU);
  std::vector<std::string> names;
  Method method = Method::kGaussLegendre;
  bool bf16 = false, profile = false, fma_peak = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--n-steps" || a == "--repeats" || a == "--chunk-size" || a == "--memory-budget-mb" ||
         a == "--jobs") &&
        i + 1 < argc) {
      (a == "--threads"      ? threads
       : a == "--n-steps"    ? n_steps
       : a == "--repeats"    ? repeats
       : a == "--chunk-size" ? options.chunk_size
       : a == "--jobs"       ? jobs
                             : budget_mb) = std::atoi(argv[++i]);
    } else if (a == "--method" && i + 1 < argc) {
      const auto parsed = Parse<Method>(argv[++i]);
      if (!parsed.ok()) {
        std::fprintf(stderr, "%s\n", parsed.status().message().c_str());
        return 2;
      }
      method = *parsed;
    } else if (a == "--bf16") {
      bf16 = true;
    } else if (a == "--profile") {
      profile = true;
    } else if (a == "--fma-peak") {
      fma_peak = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: intgrads-bench-engine [--threads N] [--n-steps N] [--repeats N] [--chunk-size N] [--jobs K]\n"
          "         [--memory-budget-mb N] [--method M] [--bf16] [--cuda [--tf32]] [--profile] [NAME ...]\n"
          "       intgrads-bench-engine [--threads N] --fma-peak\n"
          "Times one warm attribution of the engine alone (n_steps forward and input-gradient passes) on each\n"
          "NAME: default, bit-m-r50x1, lanet-c16-l8, bit-s-r101x3, lanet-c128-l24 (reference weights); without\n"
          "NAME the first three. --profile: where one attribution's time goes, by operation. --fma-peak: the\n"
          "CPU's float32 multiply-add rate on N threads (chains in registers), the bound on any kernel.\n"
          "--jobs K: K requests' attributions in shared passes, as a worker batching K requests runs them\n"
          "(the times are the batch's; attributions/s counts all K).\n");
      return 0;
    } else if (a == "--cuda") {
      device = torch::Device(torch::kCUDA, 0);
      AllowTf32(false);
    } else if (a == "--tf32") {
      AllowTf32(true);
    } else {
      names.push_back(a);
    }
  }
  if (fma_peak) {
    const double peak = FmaPeak(std::max(threads, 1));
    if (peak == 0) {
      std::fprintf(stderr, "--fma-peak: not measured on this CPU (x86-64 with FMA only)\n");
      return 1;
    }
    std::printf("fma peak, %d threads: %.1f GFLOP/s\n", threads, peak / 1e9);
    return 0;
  }
  if (names.empty()) names = {"default", "bit-m-r50x1", "lanet-c16-l8"};
  repeats = std::max(repeats, 1);
  torch::set_num_threads(threads);
  jobs = std::max(jobs, 1);
  std::printf(
      "| model | device | threads | method | n_steps | MB per point | batch | jobs | first s | best s | median s | "
      "attributions/s |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  options.memory_budget_bytes = MemoryBudgetBytes(budget_mb, device);
  for (const std::string& name : names) {
    const nlohmann::json ref = name == "default" ? nlohmann::json() : testing::LoadReferenceKeys(name);
    if (name != "default" && !ref.is_object()) {
      std::fprintf(stderr, "%s: no %s/reference/%s.keys.json\n", name.c_str(), INTGRADS_TEST_DATA_DIR, name.c_str());
      return 1;
    }
    const ModelFamily family = name.rfind("bit", 0) == 0 ? ModelFamily::kBit : ModelFamily::kLanet;
    auto model = ref.is_object() ? LoadModel(family, testing::DeterministicStateDict(ref)) : LoadDefaultModel();
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
      std::fprintf(stderr, "bad n_steps %d for method %s\n", n_steps, Name(method).c_str());
      return 1;
    }
    std::vector<double> seconds;
    for (int r = 0; r <= repeats; ++r) {
      const auto started = std::chrono::steady_clock::now();
      const PathSchedule schedule = *PlanSchedule(**model, input, 3, method, n_steps, options);
      // Its results come back to the CPU: synchronized.
      if (jobs == 1) {
        (void)Attribute(**model, input, 3, schedule, options);
      } else {
        PathJob job;
        job.input = input;
        job.paths = {{input, torch::zeros_like(input)}};
        job.targets.classes = {3};
        job.schedule = schedule;
        (void)AttributeJobs(**model, std::vector<PathJob>(static_cast<size_t>(jobs), job), options);
      }
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    std::vector<double> warm(seconds.begin() + 1, seconds.end());
    std::sort(warm.begin(), warm.end());
    std::printf("| %s | %s | %d | %s | %d | %.1f | %lld | %d | %.3f | %.3f | %.3f | %.1f |\n", name.c_str(),
                device.str().c_str(), threads, Name(method).c_str(), n_steps,
                static_cast<double>(options.point_bytes) / (1024.0 * 1024.0),
                static_cast<long long>(ChunkRows(options, int64_t{n_steps} * jobs, device.is_cuda())), jobs,
                seconds.front(), warm.front(), warm[warm.size() / 2], jobs / warm[warm.size() / 2]);
    if (profile) {
      const at::CallbackHandle handle =
          at::addGlobalCallback(at::RecordFunctionCallback(&OpProfile::Start, &OpProfile::End).needsInputs(true));
      const auto started = Clock::now();
      (void)Attribute(**model, input, 3, *PlanSchedule(**model, input, 3, method, n_steps, options), options);
      const double wall = std::chrono::duration<double>(Clock::now() - started).count();
      at::removeCallback(handle);
      std::printf("\n%s, profiled: %.3f s\n", name.c_str(), wall);
      OpProfile::Get().Print(wall);
    }
    if (bf16) {  // the error against float32: the same weights loaded afresh, the same input
      auto full_model = ref.is_object() ? LoadModel(family, testing::DeterministicStateDict(ref)) : LoadDefaultModel();
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
}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // LibTorch's errors, a bad number on the command line
    std::fprintf(stderr, "intgrads-bench-engine: %s\n", e.what());
    return 1;
  }
}
