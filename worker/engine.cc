#include "worker/engine.h"

#include <algorithm>
#include <cmath>

#include "common/request.h"
#include "common/torch_file.h"

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

StatusOr<PathSchedule> MakeSchedule(const std::string& method, int n_steps) {
  if (n_steps < 1) return InvalidError("n_steps must be at least 1");
  PathSchedule s;
  if (method == "gausslegendre") {
    std::vector<double> nodes, weights;
    GaussLegendre(n_steps, &nodes, &weights);
    for (int k = 0; k < n_steps; ++k) {
      s.alphas.push_back(0.5 * (1.0 + nodes[static_cast<size_t>(k)]));
      s.step_sizes.push_back(0.5 * weights[static_cast<size_t>(k)]);
    }
    return s;
  }
  if (!IsAttributionMethod(method)) return InvalidError("unknown method '" + method + "'");
  if (n_steps < 2) return InvalidError("Riemann methods need n_steps >= 2");
  const double n = n_steps;
  if (method == "riemann_trapezoid")
    s.alphas = Linspace32(0.0, 1.0, n_steps);
  else if (method == "riemann_left")
    s.alphas = Linspace32(0.0, 1.0 - 1.0 / n, n_steps);
  else if (method == "riemann_middle")
    s.alphas = Linspace32(1.0 / (2.0 * n), 1.0 - 1.0 / (2.0 * n), n_steps);
  else
    s.alphas = Linspace32(1.0 / n, 1.0, n_steps);
  s.step_sizes.assign(static_cast<size_t>(n_steps), 1.0 / n);
  if (method == "riemann_trapezoid") {
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
    return *MakeSchedule("gausslegendre", n_steps);
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

StatusOr<PathSchedule> PlanSchedule(const Classifier& model, const torch::Tensor& input, int target,
                                    const std::string& method, int n_steps, const EngineOptions& options) {
  if (method != "scan") return MakeSchedule(method, n_steps);
  if (n_steps < 1) return InvalidError("n_steps must be at least 1");
  const std::vector<double> alphas = ScanAlphas(kScanPoints);
  const auto n = static_cast<int64_t>(alphas.size());
  torch::Tensor a = torch::tensor(alphas, torch::kFloat64).to(input.options()).view({n, 1, 1, 1});
  torch::Tensor f = torch::empty({n}, torch::kFloat64);
  torch::NoGradGuard no_grad;
  const int64_t chunk = options.chunk_size > 0 ? options.chunk_size : n;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t last = std::min(n, first + chunk);
    // The zero baseline: the path point is a * input.
    torch::Tensor points = (a.slice(0, first, last) * input).to(model.dtype());
    f.slice(0, first, last).copy_(model.Forward(points).select(1, target).to(torch::kCPU));
  }
  PathSchedule schedule =
      PlanFromScan(alphas, std::vector<double>(f.data_ptr<double>(), f.data_ptr<double>() + n), n_steps);
  schedule.forward_points = static_cast<int>(n);
  return schedule;
}

bool IsIncomplete(const Attribution& attribution, double fraction) {
  return std::fabs(attribution.convergence_delta) >
         fraction * std::fabs(attribution.target_logit - attribution.baseline_logit);
}

Attribution Attribute(const Classifier& model, const torch::Tensor& input, int target, const PathSchedule& schedule,
                      const EngineOptions& options) {
  const auto n = static_cast<int64_t>(schedule.alphas.size());
  const torch::ScalarType compute = model.dtype();
  Attribution result;
  torch::Tensor baseline = torch::zeros_like(input);
  {
    torch::NoGradGuard no_grad;
    torch::Tensor ends = model.Forward(torch::cat({input, baseline}).to(compute)).to(input.scalar_type());
    result.logits = ends.slice(0, 0, 1).to(torch::kCPU).contiguous();  // f(x); ends[1]: f(baseline)
    if (target < 0) target = static_cast<int>(result.logits.argmax(1).item<int64_t>());
    result.target = target;
    result.target_logit = ends[0][target].item<double>();
    result.baseline_logit = ends[1][target].item<double>();
  }
  // Path points in the input's dtype (float32 as Captum forms them):
  // baseline + alpha * (x - baseline).
  const torch::Tensor alphas64 = torch::tensor(schedule.alphas, torch::kFloat64);
  torch::Tensor alphas = alphas64.to(input.options()).view({n, 1, 1, 1});
  torch::Tensor path_points = baseline + alphas * (input - baseline);
  torch::Tensor gradients = torch::empty_like(path_points);
  torch::AutoGradMode enable_grad(true);  // even when called under a NoGradGuard
  const int64_t chunk = options.chunk_size > 0 ? options.chunk_size : n;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t count = std::min(chunk, n - first);
    torch::Tensor points = path_points.slice(0, first, first + count).to(compute).detach().requires_grad_(true);
    torch::Tensor logits = model.Forward(points);
    torch::Tensor objective = logits.select(1, target).sum();
    gradients.slice(0, first, first + count).copy_(torch::autograd::grad({objective}, {points})[0]);
  }
  const torch::Tensor steps64 = torch::tensor(schedule.step_sizes, torch::kFloat64).view({n, 1});
  result.step_sizes = steps64.to(torch::kFloat32);
  torch::Tensor steps = steps64.to(input.options());
  torch::Tensor total = (gradients.reshape({n, -1}) * steps).reshape(gradients.sizes()).sum(0, true);
  result.integrated_grads = (total * (input - baseline)).to(torch::kCPU);
  result.path_gradients = gradients.to(torch::kCPU);
  result.path_points = path_points.to(torch::kCPU);
  result.convergence_delta =
      result.integrated_grads.sum().item<double>() - (result.target_logit - result.baseline_logit);
  return result;
}

std::string EncodeAttribution(const Attribution& a) {
  return TorchSaveDict({
      {"integrated_grads", a.integrated_grads, 0},
      {"integrated_directional_grads", a.path_gradients, 0},
      {"step_sizes", a.step_sizes, 0},
      {"intermediates", a.path_points, 0},
      {"output", a.logits, 0},
      {"target_class", {}, a.target},
  });
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
