#include "worker/engine/engine.h"

#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/autograd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include "common/request.h"
#include "common/torchio/torch_file.h"

namespace intgrads {

namespace {

// Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on P_n,
// symmetrized as numpy's leggauss does; exact to double precision.
void GaussLegendre(int n, std::vector<double>* nodes, std::vector<double>* weights) {
  nodes->assign(static_cast<size_t>(n), 0.0);
  weights->assign(static_cast<size_t>(n), 0.0);
  for (int i = 0; i < (n + 1) / 2; ++i) {
    double x = std::cos(M_PI * (i + 0.75) / (n + 0.5));
    double derivative = 0.0;
    for (int iteration = 0; iteration < 100; ++iteration) {
      double p0 = 1.0, p1 = x;
      for (int k = 2; k <= n; ++k) {
        const double p2 = ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k;
        p0 = p1;
        p1 = p2;
      }
      derivative = n * (x * p1 - p0) / (x * x - 1.0);
      const double step = p1 / derivative;
      x -= step;
      if (std::fabs(step) < 1e-16) break;
    }
    const double w = 2.0 / ((1.0 - x * x) * derivative * derivative);
    // Newton from cos(...) approaches the i-th largest root: store ascending.
    (*nodes)[static_cast<size_t>(n - 1 - i)] = x;
    (*nodes)[static_cast<size_t>(i)] = -x;
    (*weights)[static_cast<size_t>(n - 1 - i)] = w;
    (*weights)[static_cast<size_t>(i)] = w;
  }
  if (n % 2 == 1) (*nodes)[static_cast<size_t>(n / 2)] = 0.0;
  double total = 0.0;
  for (double w : *weights) total += w;
  for (double& w : *weights) w *= 2.0 / total;
}

std::vector<double> Linspace32(double start, double end, int n) {
  torch::Tensor t = torch::linspace(start, end, n, torch::TensorOptions().dtype(torch::kFloat32));
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = t[i].item<float>();
  return out;
}

}  // namespace

StatusOr<PathSchedule> MakeSchedule(Method method, int n_steps) {
  if (n_steps < 1) return InvalidError("n_steps must be at least 1");
  PathSchedule s;
  const double n = n_steps;
  switch (method) {
    case Method::kGaussLegendre: {
      std::vector<double> nodes, weights;
      GaussLegendre(n_steps, &nodes, &weights);
      for (int k = 0; k < n_steps; ++k) {
        s.alphas.push_back(0.5 * (1.0 + nodes[static_cast<size_t>(k)]));
        s.step_sizes.push_back(0.5 * weights[static_cast<size_t>(k)]);
      }
      return s;
    }
    case Method::kScan: return InvalidError("method scan: its points come from the model (PlanSchedule)");
    case Method::kRiemannTrapezoid: s.alphas = Linspace32(0.0, 1.0, n_steps); break;
    case Method::kRiemannLeft: s.alphas = Linspace32(0.0, 1.0 - 1.0 / n, n_steps); break;
    case Method::kRiemannMiddle: s.alphas = Linspace32(1.0 / (2.0 * n), 1.0 - 1.0 / (2.0 * n), n_steps); break;
    case Method::kRiemannRight: s.alphas = Linspace32(1.0 / n, 1.0, n_steps); break;
  }
  if (n_steps < 2) return InvalidError("Riemann methods need n_steps >= 2");
  s.step_sizes.assign(static_cast<size_t>(n_steps), 1.0 / n);
  if (method == Method::kRiemannTrapezoid) {
    s.step_sizes.front() /= 2.0;
    s.step_sizes.back() /= 2.0;
  }
  return s;
}

std::vector<double> ScanAlphas(int count) {
  std::vector<double> alphas = {0.0};
  for (int k = 0; k + 1 < count; ++k) {
    alphas.push_back(kScanSmallest * std::pow(1.0 / kScanSmallest, k / std::max(1.0, count - 2.0)));
  }
  alphas.back() = 1.0;
  return alphas;
}

PathSchedule PlanFromScan(const std::vector<double>& alphas, const std::vector<double>& values, int n_steps) {
  double variation = 0.0, near_zero = 0.0;
  for (size_t j = 0; j + 1 < alphas.size(); ++j) {
    const double change = std::fabs(values[j + 1] - values[j]);
    variation += change;
    if (alphas[j + 1] <= kScanNearZero) near_zero += change;
  }
  if (n_steps < 2 || !(variation > 0.0) || !std::isfinite(variation) || near_zero < kScanNearZeroShare * variation) {
    return *MakeSchedule(Method::kGaussLegendre, n_steps);
  }
  // The lower end: the last scan point before f departs from f(0).
  size_t first = 1;
  while (first + 1 < alphas.size() && std::fabs(values[first] - values[0]) <= kScanTolerance * variation) ++first;
  const double low = alphas[std::max<size_t>(first - 1, 1)];
  const int below = std::max(1, static_cast<int>(std::lround(kScanShareBelow * n_steps)));
  PathSchedule schedule;
  std::vector<double> nodes, weights;
  GaussLegendre(below, &nodes, &weights);  // [0, low]: plain Gauss-Legendre
  for (int k = 0; k < below; ++k) {
    schedule.alphas.push_back(0.5 * low * (1.0 + nodes[static_cast<size_t>(k)]));
    schedule.step_sizes.push_back(0.5 * low * weights[static_cast<size_t>(k)]);
  }
  GaussLegendre(n_steps - below, &nodes, &weights);  // [low, 1]: Gauss-Legendre in u = ln a, da = a du
  const double span = -std::log(low);
  double total = 0.0;
  for (int k = 0; k < n_steps - below; ++k) {
    const double a = std::exp(-span + 0.5 * span * (1.0 + nodes[static_cast<size_t>(k)]));
    schedule.alphas.push_back(a);
    schedule.step_sizes.push_back(0.5 * span * weights[static_cast<size_t>(k)] * a);
    total += schedule.step_sizes.back();
  }
  // Constants integrate exactly (IG of a linear model is exact): the weights
  // on [low, 1] sum to 1 - low.
  for (size_t k = static_cast<size_t>(below); k < schedule.step_sizes.size(); ++k) {
    schedule.step_sizes[k] *= (1.0 - low) / total;
  }
  return schedule;
}

StatusOr<PathSchedule> PlanSchedule(const Classifier& model, const torch::Tensor& input, int target, Method method,
                                    int n_steps, const EngineOptions& options, const torch::Tensor& baseline) {
  if (method != Method::kScan) return MakeSchedule(method, n_steps);
  if (n_steps < 1) return InvalidError("n_steps must be at least 1");
  const std::vector<double> alphas = ScanAlphas(kScanPoints);
  const auto n = static_cast<int64_t>(alphas.size());
  torch::Tensor a = torch::tensor(alphas, torch::kFloat64).to(input.options()).view({n, 1, 1, 1});
  torch::Tensor f = torch::empty({n}, torch::kFloat64);
  torch::NoGradGuard no_grad;
  const int64_t chunk = options.chunk_size > 0 ? options.chunk_size : n;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t last = std::min(n, first + chunk);
    // From the zero baseline the path point is a * input.
    torch::Tensor points =
        baseline.defined() ? baseline + a.slice(0, first, last) * (input - baseline) : a.slice(0, first, last) * input;
    points = points.to(model.dtype());
    f.slice(0, first, last).copy_(model.Forward(points).select(1, target).to(torch::kCPU));
  }
  PathSchedule schedule =
      PlanFromScan(alphas, std::vector<double>(f.data_ptr<double>(), f.data_ptr<double>() + n), n_steps);
  schedule.forward_points = static_cast<int>(n);
  return schedule;
}

int64_t ChunkRows(const EngineOptions& options, int64_t rows, bool cuda) {
  if (options.chunk_size > 0) return options.chunk_size;
  int64_t chunk = cuda ? rows : std::min(rows, kCpuChunk);
  if (options.memory_budget_bytes > 0 && options.point_bytes > 0) {
    chunk = std::min(chunk, std::max<int64_t>(1, options.memory_budget_bytes / options.point_bytes));
  }
  return std::max<int64_t>(chunk, 1);
}

namespace {

// c10::Allocator's interface differs between LibTorch releases: allocate is
// const in 1.13 and not in 2.x, and 2.x requires copy_data, which 1.13 lacks.
// AllocateForm and CopyDataForm override the form the headers in use declare
// (the compiler finds which), so that one allocator builds against both; the
// class below implements Allocate.
template <typename A>
constexpr bool kConstAllocate = std::is_same_v<decltype(&A::allocate), c10::DataPtr (A::*)(size_t) const>;
template <typename A, typename = void>
constexpr bool kDeclaresCopyData = false;
template <typename A>
constexpr bool kDeclaresCopyData<A, std::void_t<decltype(&A::copy_data)>> = true;

template <typename A, bool = kConstAllocate<A>>
struct AllocateForm : A {
  c10::DataPtr allocate(size_t n) override { return Allocate(n); }
  virtual c10::DataPtr Allocate(size_t n) const = 0;
};
template <typename A>
struct AllocateForm<A, true> : A {
  c10::DataPtr allocate(size_t n) const override { return Allocate(n); }
  virtual c10::DataPtr Allocate(size_t n) const = 0;
};
template <typename A, bool = kDeclaresCopyData<A>>
struct CopyDataForm : A {};
template <typename A>
struct CopyDataForm<A, true> : A {
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

// While installed as LibTorch's CPU allocator: counts the bytes of the CPU
// tensors alive and their peak, passing every allocation to the allocator it
// replaced (which must free by a raw deleter, as LibTorch's own does; else
// nothing is counted). Static: tensors allocated under it may outlive the probe.
class CountingAllocator final : public CopyDataForm<AllocateForm<c10::Allocator>> {
 public:
  void Install() {
    inner_ = c10::GetAllocator(c10::DeviceType::CPU);
    inner_deleter_ = inner_->raw_deleter();
    alive_ = 0;
    peak_ = 0;
    if (inner_deleter_ != nullptr) c10::SetAllocator(c10::DeviceType::CPU, this, kPriority);
  }
  void Uninstall() const {
    if (inner_deleter_ != nullptr) c10::SetAllocator(c10::DeviceType::CPU, inner_, kPriority);
  }
  int64_t peak() const { return peak_.load(); }

  c10::DataPtr Allocate(size_t n) const override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr || inner.get_context() != data) return inner;  // not the raw kind: not counted
    const c10::Device device = inner.device();
    (void)inner.release_context();
    const auto bytes = static_cast<int64_t>(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[data] = bytes;
    }
    const int64_t now = alive_ += bytes;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return {data, data, &Release, device};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

 private:
  static constexpr uint8_t kPriority = 255;  // above any allocator set at static initialization
  static void Release(void* data);
  c10::Allocator* inner_ = nullptr;
  c10::DeleterFnPtr inner_deleter_ = nullptr;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, int64_t> sizes_;
  mutable std::atomic<int64_t> alive_{0}, peak_{0};
};

CountingAllocator& Counting() {
  static CountingAllocator counting;
  return counting;
}

void CountingAllocator::Release(void* data) {
  CountingAllocator& counting = Counting();
  {
    std::lock_guard<std::mutex> lock(counting.mutex_);
    auto it = counting.sizes_.find(data);
    if (it != counting.sizes_.end()) {
      counting.alive_ -= it->second;
      counting.sizes_.erase(it);
    }
  }
  counting.inner_deleter_(data);
}

}  // namespace

int64_t MeasurePointBytes(const Classifier& model) {
  const ModelInfo& info = model.info();
  const torch::Tensor points =
      torch::zeros({kProbePoints, 3, info.input_size, info.input_size}, torch::TensorOptions().dtype(model.dtype()))
          .requires_grad_(true);
  torch::AutoGradMode enable_grad(true);
  CountingAllocator& counting = Counting();
  counting.Install();
  int64_t peak = 0;
  try {
    torch::Tensor out = model.Forward(points);
    if (out.device().is_cpu()) {
      // As the engine: one target's logit, summed over the batch, back to the points.
      (void)torch::autograd::grad({out.select(1, 0).sum()}, {points});
      peak = counting.peak();
    }
  } catch (const std::exception&) {
    peak = 0;  // a model that is not on the CPU
  }
  counting.Uninstall();
  return peak / kProbePoints;
}

bool IsIncomplete(const Attribution& attribution, double fraction) {
  return std::fabs(attribution.convergence_delta) >
         fraction * std::fabs(attribution.target_logit - attribution.baseline_logit);
}

Attribution Attribute(const Classifier& model, const torch::Tensor& input, int target, const PathSchedule& schedule,
                      const EngineOptions& options) {
  return AttributePaths(model, input, {{input, torch::zeros_like(input)}}, target, schedule, options);
}

Attribution AttributePaths(const Classifier& model, const torch::Tensor& input, const std::vector<Path>& paths,
                           int target, const PathSchedule& schedule, const EngineOptions& options) {
  return AttributeTargets(model, input, paths, {{target}, 0}, schedule, options).front();
}

std::vector<int> ChooseTargets(const Targets& targets, const torch::Tensor& logits) {
  if (targets.top_k > 0) {
    const int64_t k = std::min<int64_t>(targets.top_k, logits.size(1));
    const torch::Tensor top = std::get<1>(logits.topk(k, 1)).to(torch::kCPU).flatten();
    std::vector<int> chosen;
    for (int64_t i = 0; i < k; ++i) chosen.push_back(static_cast<int>(top[i].item<int64_t>()));
    return chosen;
  }
  std::vector<int> chosen = targets.classes;
  for (int& t : chosen) {
    if (t < 0) t = static_cast<int>(logits.argmax(1).item<int64_t>());
  }
  return chosen;
}

std::vector<Attribution> AttributeTargets(const Classifier& model, const torch::Tensor& input,
                                          const std::vector<Path>& paths, const Targets& wanted,
                                          const PathSchedule& schedule, const EngineOptions& options,
                                          const PassProgress& progress) {
  return AttributeJobs(model, {{input, paths, wanted, schedule}}, options, false, progress).front();
}

// The host copies of a GPU attribution in flight: an event after the last.
struct PendingCopies {
  std::unique_ptr<c10::Event> event;
};

namespace {

// One job between the passes: its ends' logits, its targets, its path
// points and the gradients the passes fill in.
struct Prepared {
  int64_t n = 0;                                   // path points per path
  int64_t count = 0;                               // paths
  torch::Tensor inputs, baselines, differences;    // P x 3 x S x S
  torch::Tensor logits, end_logits, start_logits;  // 1 x classes; P x classes each
  torch::Tensor path_points;                       // P n x 3 x S x S
  std::vector<int> targets;
  std::vector<torch::Tensor> gradients;  // per target, like path_points
  std::vector<double> step_sizes;        // n: the schedule's, for IgSoFar

  // IG of the first target over the rows [0, rows) done so far (row r is
  // point r % n of path r / n): 1 x 3 x S x S. Made only for progress reports.
  torch::Tensor IgSoFar(int64_t rows) const {
    const torch::Tensor gradient = gradients.front();
    const torch::Tensor w = (torch::tensor(step_sizes, torch::kFloat64) / static_cast<double>(count))
                                .repeat({count})
                                .slice(0, 0, rows)
                                .to(gradient.options())
                                .view({-1, 1, 1, 1});
    const torch::Tensor path_of_row =
        torch::arange(rows, torch::TensorOptions().dtype(torch::kLong).device(differences.device())).div(n, "floor");
    return (gradient.slice(0, 0, rows) * w * differences.index_select(0, path_of_row)).sum(0, true);
  }
};

Prepared Prepare(const Classifier& model, const PathJob& job) {
  const torch::Tensor& input = job.input;
  Prepared p;
  p.n = static_cast<int64_t>(job.schedule.alphas.size());
  p.count = static_cast<int64_t>(job.paths.size());
  std::vector<torch::Tensor> starts, ends;
  for (const Path& path : job.paths) {
    ends.push_back(path.input);
    starts.push_back(path.baseline);
  }
  p.inputs = torch::cat(ends);
  p.baselines = torch::cat(starts);
  {
    // One forward pass over f(input), the paths' ends (unless one is `input`
    // itself) and their starts.
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> rows = {input};
    std::vector<int64_t> end_row;
    for (const Path& path : job.paths) {
      end_row.push_back(path.input.is_same(input) ? 0 : static_cast<int64_t>(rows.size()));
      if (!path.input.is_same(input)) rows.push_back(path.input);
    }
    const auto first_start = static_cast<int64_t>(rows.size());
    rows.push_back(p.baselines);
    torch::Tensor f = model.Forward(torch::cat(rows).to(model.dtype())).to(input.scalar_type()).to(torch::kCPU);
    p.logits = f.slice(0, 0, 1).contiguous();
    p.end_logits = f.index_select(0, torch::tensor(end_row, torch::kInt64));
    p.start_logits = f.slice(0, first_start, first_start + p.count);
  }
  p.targets = ChooseTargets(job.targets, p.logits);
  // Path points in the input's dtype (float32 as Captum forms them):
  // baseline + alpha * (x - baseline), path by path.
  const torch::Tensor alphas =
      torch::tensor(job.schedule.alphas, torch::kFloat64).to(input.options()).view({1, p.n, 1, 1, 1});
  p.differences = p.inputs - p.baselines;
  p.path_points = (p.baselines.unsqueeze(1) + alphas * p.differences.unsqueeze(1)).flatten(0, 1);
  for (size_t t = 0; t < p.targets.size(); ++t) p.gradients.push_back(torch::empty_like(p.path_points));
  p.step_sizes = job.schedule.step_sizes;
  return p;
}

// The rows [first, first + size) of one job that fall in a batch, at
// `offset` in it.
struct Segment {
  size_t job = 0;
  int64_t first = 0, size = 0, offset = 0;
};

// Forward and backward passes over the path points of all jobs, in batches
// of ChunkRows rows that may mix jobs: one forward pass a batch, then one
// backward pass per target index, whose objective sums each row's logit of
// its own job's target (rows of a job with fewer targets sit it out).
void RunPasses(const Classifier& model, std::vector<Prepared>& jobs, const EngineOptions& options,
               const PassProgress& progress) {
  const torch::ScalarType compute = model.dtype();
  int64_t rows = 0;
  for (const Prepared& p : jobs) rows += p.path_points.size(0);
  if (rows == 0) return;
  // As few batches as ChunkRows allows, evened out: 50 rows at most 16 a
  // batch run as 13, 13, 12, 12 rather than 16, 16, 16, 2 (as many passes, a
  // lower peak, no small batch paying a whole batch's per-call costs).
  const int64_t most = ChunkRows(options, rows, jobs.front().path_points.is_cuda());
  const int64_t batches = (rows + most - 1) / most;
  torch::AutoGradMode enable_grad(true);  // even when called under a NoGradGuard
  size_t job = 0;
  int64_t row = 0;  // within `job`
  for (int64_t batch = 0; batch < batches; ++batch) {
    const int64_t chunk = rows / batches + (batch < rows % batches ? 1 : 0);
    std::vector<Segment> segments;
    std::vector<torch::Tensor> parts;
    for (int64_t filled = 0; filled < chunk && job < jobs.size();) {
      const int64_t left = jobs[job].path_points.size(0) - row;
      const int64_t take = std::min(left, chunk - filled);
      if (take > 0) {
        segments.push_back({job, row, take, filled});
        parts.push_back(jobs[job].path_points.slice(0, row, row + take).to(compute));
        filled += take;
        row += take;
      }
      if (row == jobs[job].path_points.size(0)) {
        ++job;
        row = 0;
      }
    }
    if (segments.empty()) break;
    torch::Tensor points = (parts.size() == 1 ? parts.front() : torch::cat(parts)).detach().requires_grad_(true);
    torch::Tensor out = model.Forward(points);
    size_t target_count = 0;
    for (const Segment& s : segments) target_count = std::max(target_count, jobs[s.job].targets.size());
    for (size_t t = 0; t < target_count; ++t) {
      torch::Tensor objective;
      for (const Segment& s : segments) {
        if (t >= jobs[s.job].targets.size()) continue;
        torch::Tensor term = out.slice(0, s.offset, s.offset + s.size).select(1, jobs[s.job].targets[t]).sum();
        objective = objective.defined() ? objective + term : term;
      }
      const bool more = t + 1 < target_count;
      const torch::Tensor grad = torch::autograd::grad({objective}, {points}, {}, /*retain_graph=*/more)[0];
      for (const Segment& s : segments) {
        if (t >= jobs[s.job].targets.size()) continue;
        jobs[s.job].gradients[t].slice(0, s.first, s.first + s.size).copy_(grad.slice(0, s.offset, s.offset + s.size));
      }
    }
    if (progress) {
      for (const Segment& seg : segments) {
        const Prepared& p = jobs[seg.job];
        const int64_t done = seg.first + seg.size;
        progress(seg.job, done, p.path_points.size(0), [&p, done] {
          torch::NoGradGuard no_grad;
          return p.IgSoFar(done);
        });
      }
    }
  }
}

std::vector<Attribution> Finish(const PathJob& job, const Prepared& p, const std::shared_ptr<PendingCopies>& pending) {
  const torch::TensorOptions& options = job.input.options();
  // On a GPU with copies in flight: into pinned host memory, not waited for.
  const auto host = [&pending](const torch::Tensor& t) {
    if (pending == nullptr || t.device().is_cpu()) return t.to(torch::kCPU);
    return t.to(torch::TensorOptions().device(torch::kCPU).dtype(t.scalar_type()).pinned_memory(true),
                /*non_blocking=*/true);
  };
  const torch::Tensor steps64 = torch::tensor(job.schedule.step_sizes, torch::kFloat64).view({1, p.n, 1});
  const torch::Tensor steps = steps64.to(options);
  const torch::Tensor step_sizes64 =
      steps64.expand({p.count, p.n, 1}).reshape({p.count * p.n, 1}) / static_cast<double>(p.count);
  const torch::Tensor step_sizes = step_sizes64.to(torch::kFloat32);
  const torch::Tensor points_cpu = host(p.path_points);
  const torch::Tensor inputs_cpu = host(p.inputs);
  const torch::Tensor baselines_cpu = host(p.baselines);
  std::vector<Attribution> results;
  for (size_t t = 0; t < p.targets.size(); ++t) {
    Attribution a;
    a.n_steps = static_cast<int>(p.n);
    a.target = p.targets[t];
    a.logits = p.logits;
    a.target_logit = p.end_logits.select(1, a.target).mean().item<double>();
    a.baseline_logit = p.start_logits.select(1, a.target).mean().item<double>();
    // Per path: (x_p - b_p) * sum_k s_k grad_{p,k}; IG: their mean.
    const torch::Tensor& g = p.gradients[t];
    torch::Tensor totals = (g.reshape({p.count, p.n, -1}) * steps).sum(1).reshape(p.differences.sizes());
    torch::Tensor per_path = totals * p.differences;
    a.integrated_grads = host(p.count == 1 ? per_path : per_path.mean(0, true));
    a.step_sizes = step_sizes;
    a.step_sizes64 = step_sizes64;
    a.path_gradients = host(g);
    a.path_points = points_cpu;
    a.path_inputs = inputs_cpu;
    a.baselines = baselines_cpu;
    a.pending = pending;
    if (pending == nullptr) ResolveCopies(&a);
    results.push_back(std::move(a));
  }
  return results;
}

}  // namespace

void ResolveCopies(Attribution* a) {
  if (a->pending != nullptr) {
    // c10::Event can only be asked (LibTorch 1.13 has no wait): the copies
    // of a batch take a millisecond or so.
    const c10::Event* event = a->pending->event.get();
    while (event != nullptr && !event->query()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    a->pending.reset();
  }
  a->convergence_delta = a->integrated_grads.sum().item<double>() - (a->target_logit - a->baseline_logit);
}

std::vector<std::vector<Attribution>> AttributeJobs(const Classifier& model, const std::vector<PathJob>& jobs,
                                                    const EngineOptions& options, bool async_copies,
                                                    const PassProgress& progress) {
  std::vector<Prepared> prepared;
  prepared.reserve(jobs.size());
  for (const PathJob& job : jobs) prepared.push_back(Prepare(model, job));
  RunPasses(model, prepared, options, progress);
  const torch::Device device = jobs.empty() ? torch::Device(torch::kCPU) : jobs.front().input.device();
  std::shared_ptr<PendingCopies> pending;
  if (async_copies && device.is_cuda()) pending = std::make_shared<PendingCopies>();
  std::vector<std::vector<Attribution>> results;
  results.reserve(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) results.push_back(Finish(jobs[i], prepared[i], pending));
  if (pending != nullptr) {
    // After the copies on the device's current stream: when it has passed, they are on the host.
    auto& event = pending->event;
    event = std::make_unique<c10::Event>(device.type());
    event->record(c10::impl::VirtualGuardImpl(device.type()).getStream(device));
  }
  return results;
}

std::vector<Attribution> AttributeToTolerance(const Classifier& model, const torch::Tensor& input,
                                              const std::vector<Path>& paths, Targets targets, double tolerance,
                                              int max_n_steps, const EngineOptions& options, bool* met,
                                              int* points_spent, const PassProgress& progress) {
  *points_spent = 0;
  // The most the tries may take: 8, 16, ... up to max_n_steps points per path.
  int64_t most = 0;
  for (int n = std::min(8, max_n_steps);; n = std::min(2 * n, max_n_steps)) {
    most += static_cast<int64_t>(n) * static_cast<int64_t>(paths.size());
    if (n >= max_n_steps) break;
  }
  for (int n = std::min(8, max_n_steps);; n = std::min(2 * n, max_n_steps)) {
    const int64_t before = *points_spent;
    PassProgress this_try;
    if (progress) {
      this_try = [&progress, before, most](size_t job, int64_t done, int64_t,
                                           const std::function<torch::Tensor()>& ig) {
        progress(job, before + done, most, ig);
      };
    }
    std::vector<Attribution> a =
        AttributeTargets(model, input, paths, targets, *MakeSchedule(Method::kGaussLegendre, n), options, this_try);
    *points_spent += n * static_cast<int>(paths.size());
    *met = std::none_of(a.begin(), a.end(), [&](const Attribution& x) { return IsIncomplete(x, tolerance); });
    if (*met || n >= max_n_steps) return a;
    // The targets stay those first chosen (predicted, top-k).
    targets = {{}, 0};
    for (const Attribution& x : a) targets.classes.push_back(x.target);
  }
}

namespace {

// The normalized value of a constant pixel value (0..1) in every channel.
torch::Tensor Constant(const torch::Tensor& like, const ModelInfo& info, double unit) {
  torch::Tensor out = torch::empty_like(like);
  for (int c = 0; c < 3; ++c) {
    out.select(1, c).fill_((unit - info.normalization.mean[static_cast<size_t>(c)]) /
                           info.normalization.std[static_cast<size_t>(c)]);
  }
  return out;
}

// A Gaussian blur with reflected edges, channel by channel. In the normalized
// space it equals normalizing the blurred image (the kernel sums to 1). The
// radius is at most the shorter side less one, as far as reflection reaches.
torch::Tensor Blur(const torch::Tensor& input, double sigma) {
  const int64_t side = std::min(input.size(2), input.size(3));
  const auto radius = std::min<int64_t>(side - 1, static_cast<int64_t>(std::ceil(3.0 * sigma)));
  std::vector<double> weights;
  for (int64_t i = -radius; i <= radius; ++i) weights.push_back(std::exp(-0.5 * i * i / (sigma * sigma)));
  torch::Tensor kernel = torch::tensor(weights, torch::kFloat64).to(input.options());
  kernel = kernel / kernel.sum();
  const int64_t size = kernel.size(0);
  // One channel at a time (3 groups), along the rows or the columns.
  auto blur_along = [&](const torch::Tensor& x, torch::IntArrayRef kernel_shape) {
    return torch::conv2d(x, kernel.view(kernel_shape).repeat({3, 1, 1, 1}), /*bias=*/torch::Tensor(), /*stride=*/1,
                         /*padding=*/torch::IntArrayRef{0}, /*dilation=*/1, /*groups=*/3);
  };
  const torch::Tensor padded = torch::reflection_pad2d(input, {radius, radius, radius, radius});
  return blur_along(blur_along(padded, {1, 1, 1, size}), {1, 1, size, 1});
}

// A tensor like `like` filled from `draw` (in the order of its elements).
template <typename Draw>
torch::Tensor Drawn(const torch::Tensor& like, Draw draw) {
  std::vector<double> values(static_cast<size_t>(like.numel()));
  for (double& v : values) v = draw();
  return torch::tensor(values, torch::kFloat64).view(like.sizes()).to(like.options());
}

}  // namespace

StatusOr<std::vector<Path>> MakePaths(const torch::Tensor& input, const ModelInfo& info, const PathRequest& options,
                                      const torch::Tensor& baseline_image) {
  std::mt19937_64 random(static_cast<uint64_t>(options.seed));
  std::vector<torch::Tensor> baselines;
  const Baseline kind = options.baseline;
  if (options.baseline_count < 1) return InvalidError("baseline_count: must be at least 1");
  if (options.baseline_count > 1 && kind != Baseline::kUniform) {
    return InvalidError("baseline_count: only uniform baselines are drawn several times (the others are fixed)");
  }
  switch (kind) {
    case Baseline::kZero: baselines.push_back(torch::zeros_like(input)); break;
    case Baseline::kBlack:
    case Baseline::kWhite: baselines.push_back(Constant(input, info, kind == Baseline::kBlack ? 0.0 : 1.0)); break;
    case Baseline::kBlur:
      if (!(options.blur_sigma > 0.0 && options.blur_sigma <= 1000.0)) {
        return InvalidError("blur_sigma: expected a number of pixels in (0, 1000]");
      }
      baselines.push_back(Blur(input, options.blur_sigma));
      break;
    case Baseline::kUniform: {
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      const torch::Tensor black = Constant(input, info, 0.0);
      const torch::Tensor scale = Constant(input, info, 1.0) - black;  // 1 / std per channel
      for (int i = 0; i < options.baseline_count; ++i) {
        baselines.push_back(black + scale * Drawn(input, [&] { return unit(random); }));
      }
      break;
    }
    case Baseline::kImage:
      if (!baseline_image.defined() || baseline_image.sizes() != input.sizes()) {
        return InvalidError("baseline: 'image' needs a baseline image (baseline_image)");
      }
      baselines.push_back(baseline_image.to(input.options()));
      break;
  }
  std::vector<torch::Tensor> inputs = {input};
  if (options.smoothgrad_samples > 0) {
    if (!(options.smoothgrad_sigma > 0.0 && options.smoothgrad_sigma <= 10.0)) {
      return InvalidError("smoothgrad_sigma: expected a number in (0, 10] (a share of the input's range)");
    }
    const double sd = options.smoothgrad_sigma * (input.max().item<double>() - input.min().item<double>());
    std::normal_distribution<double> noise(0.0, sd);
    inputs.clear();
    for (int i = 0; i < options.smoothgrad_samples; ++i) {
      inputs.push_back(input + Drawn(input, [&] { return noise(random); }));
    }
  }
  std::vector<Path> paths;
  for (const torch::Tensor& x : inputs) {
    for (const torch::Tensor& b : baselines) paths.push_back({x, b});
  }
  return paths;
}

bool OnOriginalPath(const Attribution& a) {
  return !a.baselines.defined() || (a.baselines.size(0) == 1 && a.baselines.abs().max().item<double>() == 0.0);
}

std::string EncodeAttribution(const Attribution& a) {
  // The original's keys, in its order, and its dtypes: IG and the step sizes
  // in float64 (Captum's), the rest in float32.
  std::vector<SavedEntry> entries = {
      {"integrated_directional_grads", a.path_gradients, 0},
      {"step_sizes", a.step_sizes64.defined() ? a.step_sizes64 : a.step_sizes.to(torch::kFloat64), 0},
      {"intermediates", a.path_points, 0},
      {"integrated_grads", a.integrated_grads.to(torch::kFloat64), 0},
      {"output", a.logits, 0},
      {"target_class", {}, a.target},
  };
  if (!OnOriginalPath(a)) {
    entries.push_back({"path_inputs", a.path_inputs, 0});
    entries.push_back({"path_baselines", a.baselines, 0});
  }
  return TorchSaveDict(entries);
}

Image ModelInputImage(const Image& image, const ModelInfo& info) {
  Image rgb = ToRgb(image);
  if (rgb.width != info.input_size || rgb.height != info.input_size) {
    rgb = ResizeBilinear(rgb, info.input_size, info.input_size);
  }
  return rgb;
}

torch::Tensor NormalizedTensor(const Image& rgb, const ModelInfo& info) {
  std::vector<float> chw = NormalizeChw(rgb, info.normalization);
  return torch::tensor(chw).view({1, 3, info.input_size, info.input_size});
}

torch::Tensor PreprocessImage(const Image& image, const ModelInfo& info) {
  return NormalizedTensor(ModelInputImage(image, info), info);
}

}  // namespace intgrads
