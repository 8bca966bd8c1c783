// The engine against the mathematics: quadrature rules as Captum makes them,
// IG of functions whose IG is known, chunking, determinism, the response.
#include "worker/engine/engine.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/protocol.h"
#include "tests/worker/reference.h"
#include "worker/kernels/max_pool_kernel.h"
#include "worker/serving/model_flags.h"
#include "worker/serving/replies.h"

namespace intgrads {
namespace {

// f(x) = sum(w * x) + sum(v * x^2): its IG from a zero baseline is exact.
class Quadratic final : public Classifier {
 public:
  using Classifier::info_;
  Quadratic() {
    w_ = torch::linspace(-1, 1, int64_t{3} * 4 * 4).view({1, 3, 4, 4});
    v_ = torch::linspace(0.5, -0.5, int64_t{3} * 4 * 4).view({1, 3, 4, 4});
    info_.classes = {"a", "b"};
    info_.input_size = 4;
  }
  torch::Tensor Forward(const torch::Tensor& x) const override {
    torch::Tensor linear = (x * w_).sum({1, 2, 3});
    torch::Tensor quadratic = (x * x * v_).sum({1, 2, 3});
    return torch::stack({linear, quadratic}, 1);
  }
  void To(const torch::TensorOptions&) override {}
  torch::Tensor w_, v_;
};

// f(x) = sum(w * x) / sqrt(mean(x^2) + eps), the way GroupNorm makes BiT
// nearly invariant to the scale of its input: along the path a x from the zero
// baseline, f(a x) changes almost entirely for a below about 100 sqrt(eps).
class ScaleInvariant final : public Classifier {
 public:
  explicit ScaleInvariant(double eps) : eps_(eps) {
    w_ = torch::linspace(-1, 2, int64_t{3} * 4 * 4).view({1, 3, 4, 4});
    info_.classes = {"a"};
    info_.input_size = 4;
  }
  torch::Tensor Forward(const torch::Tensor& x) const override {
    return ((x * w_).sum({1, 2, 3}) / torch::sqrt((x * x).mean({1, 2, 3}) + eps_)).unsqueeze(1);
  }
  void To(const torch::TensorOptions&) override {}

 private:
  double eps_;
  torch::Tensor w_;
};

// A function of a on [0, 1] and its derivative, for the rules alone.
struct Curve {
  const char* name;
  std::function<double(double)> f;
  std::function<double(double)> df;
};

// |sum_k s_k f'(a_k) - (f(1) - f(0))| / |f(1) - f(0)|: the completeness gap.
double Gap(const Curve& curve, const PathSchedule& schedule) {
  double sum = 0.0;
  for (size_t k = 0; k < schedule.alphas.size(); ++k) sum += schedule.step_sizes[k] * curve.df(schedule.alphas[k]);
  const double change = curve.f(1.0) - curve.f(0.0);
  return std::fabs(sum - change) / std::fabs(change);
}

PathSchedule ScanSchedule(const Curve& curve, int n_steps) {
  const std::vector<double> alphas = ScanAlphas(kScanPoints);
  std::vector<double> values;
  values.reserve(alphas.size());
  for (double a : alphas) values.push_back(curve.f(a));
  return PlanFromScan(alphas, values, n_steps);
}

const std::vector<Curve>& Curves() {
  static const std::vector<Curve> kCurves = {
      {"step near 0: tanh(a / 1e-4) + a / 10", [](double a) { return std::tanh(a / 1e-4) + 0.1 * a; },
       [](double a) { return (1.0 - std::pow(std::tanh(a / 1e-4), 2)) / 1e-4 + 0.1; }},
      {"scale invariant: a / sqrt(a^2 + 1e-8)", [](double a) { return a / std::sqrt(a * a + 1e-8); },
       [](double a) { return 1e-8 / std::pow(a * a + 1e-8, 1.5); }},
      {"smooth: sin(3 a) + a^2", [](double a) { return std::sin(3.0 * a) + a * a; },
       [](double a) { return 3.0 * std::cos(3.0 * a) + 2.0 * a; }},
  };
  return kCurves;
}

TEST(Schedule, GaussLegendreMatchesNumpy) {
  auto s = MakeSchedule(Method::kGaussLegendre, 50);
  ASSERT_TRUE(s.ok());
  // numpy.polynomial.legendre.leggauss(50), mapped to [0, 1].
  EXPECT_NEAR(s->alphas[0], 0.0005667977899644905, 1e-15);
  EXPECT_NEAR(s->alphas[24], 0.48445083083640555, 1e-15);
  EXPECT_NEAR(s->alphas[49], 0.9994332022100355, 1e-15);
  // Weights agree to 1e-11 relative (numpy normalizes them differently).
  EXPECT_NEAR(s->step_sizes[0], 0.0014543112765789342, 1e-11 * 0.0014543112765789342);
  EXPECT_NEAR(s->step_sizes[25], 0.0310883083276735, 1e-11 * 0.0310883083276735);
  double total = 0;
  for (double step : s->step_sizes) total += step;
  EXPECT_NEAR(total, 1.0, 1e-14);
  auto three = MakeSchedule(Method::kGaussLegendre, 3);
  EXPECT_NEAR(three->alphas[0], 0.5 * (1 - std::sqrt(0.6)), 1e-15);
  EXPECT_NEAR(three->alphas[1], 0.5, 1e-15);
  EXPECT_NEAR(three->step_sizes[1], 4.0 / 9.0, 1e-15);
  auto one = MakeSchedule(Method::kGaussLegendre, 1);
  EXPECT_NEAR(one->alphas[0], 0.5, 1e-15);
  EXPECT_NEAR(one->step_sizes[0], 1.0, 1e-15);
}

TEST(Schedule, RiemannRulesAsCaptum) {
  auto left = MakeSchedule(Method::kRiemannLeft, 4);
  EXPECT_EQ(left->alphas, (std::vector<double>{0, 0.25, 0.5, 0.75}));
  auto right = MakeSchedule(Method::kRiemannRight, 4);
  EXPECT_EQ(right->alphas, (std::vector<double>{0.25, 0.5, 0.75, 1}));
  auto middle = MakeSchedule(Method::kRiemannMiddle, 4);
  EXPECT_EQ(middle->alphas, (std::vector<double>{0.125, 0.375, 0.625, 0.875}));
  auto trapezoid = MakeSchedule(Method::kRiemannTrapezoid, 4);
  EXPECT_DOUBLE_EQ(trapezoid->alphas[1], static_cast<double>(1.0F / 3.0F));
  EXPECT_EQ(trapezoid->step_sizes, (std::vector<double>{0.125, 0.25, 0.25, 0.125}));  // sums to 3/4, as Captum
  EXPECT_FALSE(MakeSchedule(Method::kRiemannLeft, 1).ok());
  EXPECT_FALSE(MakeSchedule(Method::kScan, 10).ok());  // the scan's points come from the model
}

TEST(Schedule, ScanCoversThePathWithNSteps) {
  const Curve& step = Curves()[0];
  for (int n = 1; n <= 64; ++n) {
    const PathSchedule s = ScanSchedule(step, n);
    ASSERT_EQ(s.alphas.size(), static_cast<size_t>(n));
    double total = 0.0;
    for (size_t k = 0; k < s.alphas.size(); ++k) {
      EXPECT_GT(s.alphas[k], 0.0);
      EXPECT_LT(s.alphas[k], 1.0);
      if (k > 0) {
        EXPECT_GT(s.alphas[k], s.alphas[k - 1]);
      }
      EXPECT_GT(s.step_sizes[k], 0.0);
      total += s.step_sizes[k];
    }
    EXPECT_NEAR(total, 1.0, 1e-12) << n;
  }
  // Points where f changes: below 1e-4 for the step, none there for a smooth f.
  const PathSchedule at_step = ScanSchedule(Curves()[0], 50);
  EXPECT_GT(std::count_if(at_step.alphas.begin(), at_step.alphas.end(), [](double a) { return a < 1e-4; }), 10);
  EXPECT_LT(MakeSchedule(Method::kGaussLegendre, 50)->alphas.front(), 6e-4);
  // The change spread over [0, 1], nothing changes, or one point: plain Gauss-Legendre.
  EXPECT_EQ(ScanSchedule(Curves()[2], 50).alphas, MakeSchedule(Method::kGaussLegendre, 50)->alphas);
  const PathSchedule flat = PlanFromScan(ScanAlphas(10), std::vector<double>(10, 3.0), 7);
  EXPECT_EQ(flat.alphas, MakeSchedule(Method::kGaussLegendre, 7)->alphas);
  EXPECT_EQ(ScanSchedule(step, 1).alphas, MakeSchedule(Method::kGaussLegendre, 1)->alphas);
}

// The table of docs/FAITHFULNESS.md: Gauss-Legendre in a misses what happens
// below its smallest point (5.7e-4 at n_steps 50); the scan rule converges
// on the first two like Gauss-Legendre on a smooth integrand, and is
// Gauss-Legendre on the third.
TEST(Schedule, ScanFollowsTheIntegrandNearZero) {
  const std::vector<int> steps = {10, 25, 50, 100, 200};
  for (const Curve& curve : Curves()) {
    std::vector<double> gl, scan;
    std::printf("%s\n  n_steps      gausslegendre  scan\n", curve.name);
    for (int n : steps) {
      gl.push_back(Gap(curve, *MakeSchedule(Method::kGaussLegendre, n)));
      scan.push_back(Gap(curve, ScanSchedule(curve, n)));
      std::printf("  %-12d %-14.3g %.3g\n", n, gl.back(), scan.back());
    }
    EXPECT_LT(scan[2], 1e-5) << curve.name;  // n_steps 50
    EXPECT_LT(scan[3], 1e-9) << curve.name;  // n_steps 100
    EXPECT_LE(scan[3], scan[1]) << curve.name;
  }
  EXPECT_GT(Gap(Curves()[0], *MakeSchedule(Method::kGaussLegendre, 50)), 0.2);
  EXPECT_GT(Gap(Curves()[1], *MakeSchedule(Method::kGaussLegendre, 50)), 0.2);
}

TEST(Engine, ScanOnAScaleInvariantModel) {
  ScaleInvariant model(1e-8);
  const torch::Tensor x = torch::linspace(-2, 2, 48).view({1, 3, 4, 4});
  const auto gl = *PlanSchedule(model, x, 0, Method::kGaussLegendre, 50, {});
  const auto scan = *PlanSchedule(model, x, 0, Method::kScan, 50, {});
  EXPECT_EQ(gl.forward_points, 0);
  EXPECT_EQ(scan.forward_points, kScanPoints);
  const Attribution by_gl = Attribute(model, x, 0, gl, {});
  const Attribution by_scan = Attribute(model, x, 0, scan, {});
  const double change = by_scan.target_logit - by_scan.baseline_logit;
  std::printf("gap at n_steps 50: gausslegendre %.3g, scan %.3g\n", by_gl.convergence_delta / change,
              by_scan.convergence_delta / change);
  EXPECT_TRUE(IsIncomplete(by_gl, 0.1));
  EXPECT_FALSE(IsIncomplete(by_scan, 0.001));
  // The per-step fields follow the schedule: IG = x * sum_k s_k grad_k.
  torch::Tensor rebuilt = x * (by_scan.path_gradients * by_scan.step_sizes.view({50, 1, 1, 1})).sum(0, true);
  EXPECT_TRUE(torch::allclose(rebuilt, by_scan.integrated_grads, 1e-5, 1e-7));
  for (int k = 0; k < 50; ++k) {
    EXPECT_TRUE(torch::allclose(by_scan.path_points[k], x[0] * static_cast<float>(scan.alphas[k])));
  }
  // Exact where the rule must be: a quadratic target's integrand is linear in a.
  Quadratic quadratic;
  const Attribution q = Attribute(quadratic, x, 1, *PlanSchedule(quadratic, x, 1, Method::kScan, 16, {}), {});
  EXPECT_TRUE(torch::allclose(q.integrated_grads, quadratic.v_ * x * x, 1e-4, 1e-6));
}

TEST(Engine, ExactOnKnownIntegrals) {
  Quadratic model;
  torch::Tensor x = torch::linspace(-2, 2, 48).view({1, 3, 4, 4});
  // Linear target: IG = w * x for any rule whose steps sum to 1.
  for (const Method method : {Method::kGaussLegendre, Method::kRiemannMiddle, Method::kRiemannLeft}) {
    Attribution a = Attribute(model, x, 0, *MakeSchedule(method, 5), {});
    EXPECT_TRUE(torch::allclose(a.integrated_grads, model.w_ * x, 1e-5, 1e-6)) << method;
    EXPECT_NEAR(a.convergence_delta, 0.0, 1e-5) << method;
  }
  // Quadratic target: IG = v x^2, exact for Gauss-Legendre with 2 points or more.
  Attribution q = Attribute(model, x, 1, *MakeSchedule(Method::kGaussLegendre, 2), {});
  EXPECT_TRUE(torch::allclose(q.integrated_grads, model.v_ * x * x, 1e-5, 1e-6));
  // The per-step fields: path points, gradients at them, and IG = x * sum s_k grad_k.
  auto schedule = *MakeSchedule(Method::kGaussLegendre, 4);
  Attribution a = Attribute(model, x, 1, schedule, {});
  ASSERT_EQ(a.path_points.sizes(), (std::vector<int64_t>{4, 3, 4, 4}));
  ASSERT_EQ(a.step_sizes.sizes(), (std::vector<int64_t>{4, 1}));
  for (int k = 0; k < 4; ++k) {
    torch::Tensor point = x[0] * static_cast<float>(schedule.alphas[k]);
    EXPECT_TRUE(torch::allclose(a.path_points[k], point));
    EXPECT_TRUE(torch::allclose(a.path_gradients[k], 2 * model.v_[0] * point, 1e-5, 1e-6));
  }
  torch::Tensor rebuilt = x * (a.path_gradients * a.step_sizes.view({4, 1, 1, 1})).sum(0, true);
  EXPECT_TRUE(torch::allclose(rebuilt, a.integrated_grads, 1e-5, 1e-7));
  EXPECT_EQ(a.logits.sizes(), (std::vector<int64_t>{1, 2}));
}

TEST(Engine, ChunksDeterminismAndAnUnchangedModel) {
  const nlohmann::json ref = testing::LoadReferenceKeys("lanet-c16-l8");
  auto model = LoadModel(ModelFamily::kLanet, testing::DeterministicStateDict(ref));
  ASSERT_TRUE(model.ok());
  torch::Tensor x = torch::randn({1, 3, 32, 32}, torch::Generator(at::detail::createCPUGenerator(3)));
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = (*model)->Forward(x);
  }
  auto schedule = *MakeSchedule(Method::kGaussLegendre, 12);
  Attribution whole = Attribute(**model, x, 2, schedule, {});
  Attribution again = Attribute(**model, x, 2, schedule, {});
  EngineOptions in_chunks;
  in_chunks.chunk_size = 5;
  Attribution chunked = Attribute(**model, x, 2, schedule, in_chunks);
  EXPECT_TRUE(torch::equal(whole.integrated_grads, again.integrated_grads));  // deterministic
  EXPECT_TRUE(torch::allclose(whole.integrated_grads, chunked.integrated_grads, 1e-4, 1e-7));
  EXPECT_TRUE(torch::allclose(whole.path_gradients, chunked.path_gradients, 1e-4, 1e-7));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(before, (*model)->Forward(x)));  // the model is never modified
}

TEST(Chunks, ChosenByHandByTheDeviceAndByTheMemoryBudget) {
  EngineOptions options;
  EXPECT_EQ(ChunkRows(options, 50, false), 50);
  EXPECT_EQ(ChunkRows(options, 300, false), kCpuChunk);  // larger CPU batches run slower
  EXPECT_EQ(ChunkRows(options, 300, true), 300);         // a GPU takes all at once
  options.point_bytes = 300;
  options.memory_budget_bytes = 1000;
  EXPECT_EQ(ChunkRows(options, 300, false), 3);
  EXPECT_EQ(ChunkRows(options, 300, true), 3);
  options.memory_budget_bytes = 100;  // less than one point: still one at a time
  EXPECT_EQ(ChunkRows(options, 300, false), 1);
  options.point_bytes = 0;  // unknown: no bound
  EXPECT_EQ(ChunkRows(options, 300, true), 300);
  options.point_bytes = 300;
  options.chunk_size = 7;  // by hand
  EXPECT_EQ(ChunkRows(options, 300, false), 7);
}

// relu(x * w): per point, 3 x S x S floats each for x * w, relu's output
// (kept for the backward pass), its gradient and the gradient of x, of which
// at most three are alive at once.
class KeepsOneActivation final : public Classifier {
 public:
  KeepsOneActivation() {
    info_.classes = {"a"};
    info_.input_size = 64;
    w_ = torch::linspace(-1, 1, int64_t{3} * 64 * 64).view({1, 3, 64, 64});
  }
  torch::Tensor Forward(const torch::Tensor& x) const override {
    return torch::relu(x * w_).sum({1, 2, 3}).unsqueeze(1);
  }
  void To(const torch::TensorOptions&) override {}
  torch::Tensor w_;
};

TEST(Chunks, TheProbeMeasuresWhatAPathPointKeeps) {
  KeepsOneActivation model;
  const int64_t bytes = MeasurePointBytes(model);
  const auto activation = static_cast<int64_t>(sizeof(float)) * 3 * 64 * 64;
  EXPECT_GE(bytes, 2 * activation);
  EXPECT_LE(bytes, 3 * activation + 1024);
  // The allocator it counted with is gone again: a tensor allocated now is not counted in a later probe.
  const torch::Tensor big = torch::ones({1 << 20});
  EXPECT_EQ(MeasurePointBytes(model), bytes);
  // A real network: more than its input, and a batch that fits the budget.
  auto lanet =
      LoadModel(ModelFamily::kLanet, testing::DeterministicStateDict(testing::LoadReferenceKeys("lanet-c16-l8")));
  ASSERT_TRUE(lanet.ok());
  const int64_t lanet_bytes = MeasurePointBytes(**lanet);
  EXPECT_GT(lanet_bytes, 10 * 3 * 32 * 32 * 4);
  EngineOptions options;
  options.point_bytes = lanet_bytes;
  options.memory_budget_bytes = 5 * lanet_bytes + 1;
  EXPECT_EQ(ChunkRows(options, 50, false), 5);
}

// --bf16: weights and passes in bfloat16, everything returned in float32, and
// IG within the tolerance docs/PERFORMANCE.md states (0.08 relative L2 on the
// default model at n_steps 50; held to 0.2 here).
TEST(Engine, Bfloat16PassesStayCloseToFloat32) {
  auto low = LoadDefaultModel();
  auto high = LoadDefaultModel();
  ASSERT_TRUE(low.ok() && high.ok());
  (*low)->To(torch::TensorOptions().dtype(torch::kBFloat16));
  const torch::Tensor x = torch::randn({1, 3, 32, 32}, torch::Generator(at::detail::createCPUGenerator(0)));
  const auto schedule = *MakeSchedule(Method::kGaussLegendre, 50);
  EXPECT_EQ((*low)->dtype(), torch::kBFloat16);
  EXPECT_EQ((*high)->dtype(), torch::kFloat32);
  const Attribution a = Attribute(**low, x, 3, schedule, {});
  const Attribution b = Attribute(**high, x, 3, schedule, {});
  for (const torch::Tensor& t : {a.integrated_grads, a.path_gradients, a.path_points, a.logits, a.step_sizes}) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  }
  EXPECT_TRUE(torch::equal(a.path_points, b.path_points));  // formed in float32, cast for the passes only
  const double relative_l2 =
      ((a.integrated_grads - b.integrated_grads).norm() / b.integrated_grads.norm()).item<double>();
  std::printf("bfloat16 against float32: IG relative L2 %.3g\n", relative_l2);
  EXPECT_GT(relative_l2, 0.0);  // it did run in bfloat16
  EXPECT_LT(relative_l2, 0.2);
  torch::Tensor rebuilt = x * (a.path_gradients * a.step_sizes.view({50, 1, 1, 1})).sum(0, true);
  EXPECT_TRUE(torch::allclose(rebuilt, a.integrated_grads, 1e-4, 1e-6));
  ModelFlags flags;
  flags.bf16 = true;
  torch::Device device(torch::kCPU);
  auto flagged = LoadFlaggedModel(flags, &device);
  ASSERT_TRUE(flagged.ok());
  EXPECT_EQ((*flagged)->dtype(), torch::kBFloat16);
  EXPECT_EQ((*LoadFlaggedModel(ModelFlags{}, &device))->dtype(), torch::kFloat32);
}

// IG from any baseline: a linear function's is (x - b) * w exactly; the
// quadratic one's is (x - b) * (v (x + b)) (its gradient 2 v z averaged along
// the path), exact under Gauss-Legendre with 2 or more points.
TEST(Paths, EveryBaselineKindIsExactOnAQuadratic) {
  Quadratic model;
  model.info_.normalization = {{0.5F, 0.4F, 0.3F}, {0.25F, 0.2F, 0.5F}};
  const torch::Tensor x = torch::linspace(-1.5, 2.0, 48).view({1, 3, 4, 4});
  const auto schedule = *MakeSchedule(Method::kGaussLegendre, 4);
  for (const Baseline kind : ValuesOf<Baseline>()) {
    PathRequest options;
    options.baseline = kind;
    options.baseline_count = kind == Baseline::kUniform ? 3 : 1;
    options.blur_sigma = 1.0;
    auto paths = MakePaths(x, model.info(), options, torch::full({1, 3, 4, 4}, 0.7));
    ASSERT_TRUE(paths.ok()) << kind << ": " << paths.status().message();
    ASSERT_EQ(paths->size(), kind == Baseline::kUniform ? 3U : 1U) << kind;
    const Attribution a = AttributePaths(model, x, *paths, 1, schedule, {});
    torch::Tensor expected = torch::zeros_like(x);
    for (const Path& p : *paths) expected += (x - p.baseline) * model.v_ * (x + p.baseline);
    expected /= static_cast<double>(paths->size());
    EXPECT_TRUE(torch::allclose(a.integrated_grads, expected, 1e-5, 1e-5)) << kind;
    EXPECT_NEAR(a.convergence_delta, 0.0, 1e-4) << kind;
    // The per-step fields rebuild IG: sum over rows of step x grad x (x_p - b_p).
    const auto rows = static_cast<int64_t>(paths->size()) * 4;
    ASSERT_EQ(a.path_gradients.size(0), rows);
    torch::Tensor rebuilt = torch::zeros_like(x);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t p = r / 4;
      rebuilt += a.step_sizes[r].item<float>() * a.path_gradients[r] * (a.path_inputs[p] - a.baselines[p]);
    }
    EXPECT_TRUE(torch::allclose(rebuilt, a.integrated_grads, 1e-5, 1e-5)) << kind;
  }
  // What each kind is, in the normalized space.
  PathRequest black;
  black.baseline = Baseline::kBlack;
  const torch::Tensor b = MakePaths(x, model.info(), black)->front().baseline;
  EXPECT_FLOAT_EQ(b[0][1][2][3].item<float>(), (0.0F - 0.4F) / 0.2F);
  PathRequest blur;
  blur.baseline = Baseline::kBlur;
  const torch::Tensor flat = torch::full({1, 3, 4, 4}, 0.25);
  EXPECT_TRUE(torch::allclose(MakePaths(flat, model.info(), blur)->front().baseline, flat));  // a constant stays
  // A wider than high image: the kernel is cut to what both sides can reflect.
  const torch::Tensor wide = torch::full({1, 3, 4, 9}, 0.25);
  EXPECT_TRUE(torch::allclose(MakePaths(wide, model.info(), blur)->front().baseline, wide));
  // A Gaussian of sigma 1 cut at 3 sigma, rows then columns, edges reflected
  // (pixel -1 is pixel 1), summed here by hand.
  blur.blur_sigma = 1.0;
  const torch::Tensor ramp = torch::arange(108, torch::kFloat32).view({1, 3, 6, 6}).pow(1.5) / 100;
  const torch::Tensor blurred = MakePaths(ramp, model.info(), blur)->front().baseline;
  auto reflect = [](int64_t i) { return i < 0 ? -i : (i > 5 ? 10 - i : i); };
  double norm = 0;
  for (int k = -3; k <= 3; ++k) norm += std::exp(-0.5 * k * k);
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t y = 0; y < 6; ++y) {
      for (int64_t x = 0; x < 6; ++x) {
        double sum = 0;
        for (int64_t i = -3; i <= 3; ++i) {
          for (int64_t j = -3; j <= 3; ++j) {
            sum += std::exp(-0.5 * static_cast<double>(i * i + j * j)) *
                   ramp[0][c][reflect(y + i)][reflect(x + j)].item<double>();
          }
        }
        EXPECT_NEAR(blurred[0][c][y][x].item<double>(), sum / (norm * norm), 1e-5) << c << " " << y << " " << x;
      }
    }
  }
  PathRequest uniform;
  uniform.baseline = Baseline::kUniform;
  const torch::Tensor u = MakePaths(x, model.info(), uniform)->front().baseline;
  const torch::Tensor pixels = u * 0.2 + 0.4;  // channel 1 back to [0, 1]
  EXPECT_GE(pixels.select(1, 1).min().item<float>(), -1e-6);
  EXPECT_LE(pixels.select(1, 1).max().item<float>(), 1.0 + 1e-6);
}

TEST(Paths, SmoothGradIsTheMeanOfIgOverTheSameNoisyInputs) {
  Quadratic model;
  const torch::Tensor x = torch::linspace(-1.0, 1.0, 48).view({1, 3, 4, 4});
  PathRequest options;
  options.smoothgrad_samples = 5;
  options.smoothgrad_sigma = 0.2;
  options.seed = 11;
  const auto paths = *MakePaths(x, model.info(), options);
  ASSERT_EQ(paths.size(), 5U);
  const double sd = (paths[0].input - x).std().item<double>();
  EXPECT_NEAR(sd, 0.2 * 2.0, 0.15);  // sigma x the input's range (2)
  const auto schedule = *MakeSchedule(Method::kRiemannTrapezoid, 7);
  const Attribution together = AttributePaths(model, x, paths, 1, schedule, {});
  torch::Tensor mean = torch::zeros_like(x);
  for (const Path& p : paths) mean += AttributePaths(model, p.input, {p}, 1, schedule, {}).integrated_grads / 5.0;
  EXPECT_TRUE(torch::allclose(together.integrated_grads, mean, 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(together.logits, model.Forward(x)));  // output is f(x), not of a noisy sample
  // Seeded: the same seed, the same draws; another seed, others.
  EXPECT_TRUE(torch::equal(MakePaths(x, model.info(), options)->at(3).input, paths[3].input));
  options.seed = 12;
  EXPECT_FALSE(torch::equal(MakePaths(x, model.info(), options)->at(3).input, paths[3].input));
  // Chunks across paths change nothing.
  EngineOptions chunked;
  chunked.chunk_size = 3;
  EXPECT_TRUE(torch::allclose(AttributePaths(model, x, paths, 1, schedule, chunked).integrated_grads,
                              together.integrated_grads, 1e-6, 1e-6));
}

TEST(Paths, AdaptiveStepsStopAtTheTolerance) {
  ScaleInvariant model(1e-4);  // hard near a = 0: Gauss-Legendre needs many points
  const torch::Tensor x = torch::linspace(-1.0, 1.0, 48).view({1, 3, 4, 4});
  const std::vector<Path> paths = {{x, torch::zeros_like(x)}};
  bool met = false;
  int spent = 0;
  const Attribution a = AttributeToTolerance(model, x, paths, {{0}, 0}, 0.01, 1024, {}, &met, &spent).front();
  EXPECT_TRUE(met);
  EXPECT_FALSE(IsIncomplete(a, 0.01));
  EXPECT_GE(a.n_steps, 16);
  EXPECT_EQ(a.path_gradients.size(0), a.n_steps);
  int tries = 0;
  for (int n = 8; n <= a.n_steps; n *= 2) tries += n;
  EXPECT_EQ(spent, tries);  // every try's points are counted
  // The try before the last did not meet it.
  const Attribution before =
      AttributePaths(model, x, paths, 0, *MakeSchedule(Method::kGaussLegendre, a.n_steps / 2), {});
  EXPECT_TRUE(IsIncomplete(before, 0.01));
  // A cap below what is needed: the cap's answer, not met.
  const Attribution capped = AttributeToTolerance(model, x, paths, {{0}, 0}, 1e-9, 12, {}, &met, &spent).front();
  EXPECT_FALSE(met);
  EXPECT_EQ(capped.n_steps, 12);
  EXPECT_EQ(spent, 8 + 12);
}

// A model that counts its forward passes (rows) and the backward passes
// through it, so that sharing can be seen.
class Counting final : public Classifier {
 public:
  Counting() {
    w_ = torch::linspace(-1, 1, int64_t{4} * 48).view({4, 48});
    info_.classes = {"a", "b", "c", "d"};
    info_.input_size = 4;
  }
  torch::Tensor Forward(const torch::Tensor& x) const override {
    forward_rows += x.size(0);
    if (x.requires_grad()) path_batch_rows.push_back(x.size(0));
    // Class c: sum(w_c * x) + (c + 1) * sum(x^2) / 10, so the classes differ.
    torch::Tensor flat = x.flatten(1);
    torch::Tensor square = (flat * flat).sum(1, true) * torch::tensor({0.1, 0.2, 0.3, 0.4});
    return flat.matmul(w_.t()) + square;
  }
  void To(const torch::TensorOptions&) override {}
  mutable int64_t forward_rows = 0;
  mutable std::vector<int64_t> path_batch_rows;  // the size of each forward pass over path points
  torch::Tensor w_;
};

// The passes take as few batches as ChunkRows allows, their sizes evened out.
TEST(Chunks, BatchesAreEvenedOut) {
  const torch::Tensor x = torch::linspace(-1.0, 1.5, 48).view({1, 3, 4, 4});
  const PathSchedule schedule = *MakeSchedule(Method::kGaussLegendre, 50);
  for (const auto& [most, rows] : std::vector<std::pair<int, std::vector<int64_t>>>{{16, {13, 13, 12, 12}},
                                                                                    {8, {8, 7, 7, 7, 7, 7, 7}},
                                                                                    {50, {50}},
                                                                                    {64, {50}},
                                                                                    {1, std::vector<int64_t>(50, 1)}}) {
    Counting model;
    EngineOptions options;
    options.chunk_size = most;
    const Attribution chunked = Attribute(model, x, 1, schedule, options);
    EXPECT_EQ(model.path_batch_rows, rows) << most;
    Counting whole_model;
    options.chunk_size = 50;
    const Attribution whole = Attribute(whole_model, x, 1, schedule, options);
    EXPECT_TRUE(torch::allclose(chunked.integrated_grads, whole.integrated_grads, 1e-6, 1e-7)) << most;
  }
}

// An input with two paths (zero and 0.25 baselines), 10 Gauss-Legendre
// points each, passes of at most 6 rows.
struct TwoPaths {
  torch::Tensor x = torch::linspace(-1.0, 1.5, 48).view({1, 3, 4, 4});
  std::vector<Path> paths = {{x, torch::zeros_like(x)}, {x, torch::full_like(x, 0.25)}};
  PathSchedule schedule = *MakeSchedule(Method::kGaussLegendre, 10);
  EngineOptions chunked = [] {
    EngineOptions options;
    options.chunk_size = 6;
    return options;
  }();
};

TEST(Targets, SeveralTargetsShareTheForwardPassesAndEqualOneAtATime) {
  Counting model;
  const TwoPaths two;
  const auto& [x, paths, schedule, chunked] = two;
  const std::vector<Attribution> together = AttributeTargets(model, x, paths, {{3, 0, 2}, 0}, schedule, chunked);
  // One forward over f(x) and the 2 starts, then the 20 path points once.
  EXPECT_EQ(model.forward_rows, 3 + 20);
  ASSERT_EQ(together.size(), 3U);
  const std::vector<int> order = {3, 0, 2};
  for (size_t t = 0; t < 3; ++t) {
    const Attribution alone = AttributePaths(model, x, paths, order[t], schedule, chunked);
    EXPECT_EQ(together[t].target, order[t]);
    EXPECT_TRUE(torch::allclose(together[t].integrated_grads, alone.integrated_grads, 1e-6, 1e-7)) << t;
    EXPECT_TRUE(torch::equal(together[t].path_gradients, alone.path_gradients)) << t;
    EXPECT_DOUBLE_EQ(together[t].convergence_delta, alone.convergence_delta) << t;
    EXPECT_DOUBLE_EQ(together[t].baseline_logit, alone.baseline_logit) << t;
  }
}

// Progress after each batch: each job's points done rise to its total, and
// the IG over the points done ends as the first target's IG.
TEST(Targets, ProgressCountsPointsAndBuildsTheIg) {
  Counting model;
  const TwoPaths two;
  const auto& [x, paths, schedule, chunked] = two;
  std::vector<int64_t> done;
  torch::Tensor last;
  const std::vector<Attribution> together =
      AttributeTargets(model, x, paths, {{3, 0}, 0}, schedule, chunked,
                       [&](size_t job, int64_t points, int64_t total, const std::function<torch::Tensor()>& ig_so_far) {
                         EXPECT_EQ(job, 0U);
                         EXPECT_EQ(total, 20);
                         done.push_back(points);
                         last = ig_so_far();
                       });
  EXPECT_EQ(done, (std::vector<int64_t>{5, 10, 15, 20}));  // 20 points in batches of 5
  ASSERT_TRUE(last.defined());
  EXPECT_EQ(last.sizes(), together[0].integrated_grads.sizes());
  EXPECT_TRUE(torch::allclose(last, together[0].integrated_grads, 1e-6, 1e-7));
  // Adaptive steps count every try against the most they may take (8 + 16 + 20 per path).
  std::vector<std::pair<int64_t, int64_t>> tries;
  bool met = false;
  int spent = 0;
  AttributeToTolerance(model, x, {paths[0]}, {{1}, 0}, 1e-12, 20, chunked, &met, &spent,
                       [&](size_t, int64_t points, int64_t total, const std::function<torch::Tensor()>&) {
                         tries.emplace_back(points, total);
                       });
  ASSERT_FALSE(tries.empty());
  for (const auto& [points, total] : tries) EXPECT_EQ(total, 8 + 16 + 20);
  EXPECT_EQ(tries.back().first, spent);
  EXPECT_TRUE(std::is_sorted(tries.begin(), tries.end()));
}

PathJob MakeJob(const torch::Tensor& input, std::vector<Path> paths, std::vector<int> classes, int top_k, Method method,
                int n_steps) {
  PathJob job;
  job.input = input;
  job.paths = std::move(paths);
  job.targets.classes = std::move(classes);
  job.targets.top_k = top_k;
  job.schedule = *MakeSchedule(method, n_steps);
  return job;
}

// The worker's batching: requests with their own inputs, paths, targets and
// rules share batches that cut across them, and each gets what it gets alone.
TEST(Batching, JobsSharingBatchesEqualEachAlone) {
  const torch::Tensor x1 = torch::linspace(-1.0, 1.5, 48).view({1, 3, 4, 4});
  const torch::Tensor x2 = torch::linspace(2.0, -0.5, 48).view({1, 3, 4, 4});
  const torch::Tensor x3 = torch::cos(torch::linspace(0.0, 9.0, 48)).view({1, 3, 4, 4});
  std::vector<PathJob> jobs;
  jobs.push_back(MakeJob(x1, {{x1, torch::zeros_like(x1)}}, {1}, 0, Method::kGaussLegendre, 7));
  jobs.push_back(MakeJob(x2, {{x2, torch::zeros_like(x2)}, {x2, torch::full_like(x2, 0.25)}}, {3, 0}, 0,
                         Method::kRiemannTrapezoid, 5));
  jobs.push_back(MakeJob(x3, {{x3, torch::zeros_like(x3)}}, {}, 2, Method::kGaussLegendre, 4));
  EngineOptions chunked;
  chunked.chunk_size = 6;  // 7 + 10 + 4 path points: batches of 6, 5, 5 and 5, mixing jobs
  Counting model;
  const std::vector<std::vector<Attribution>> together = AttributeJobs(model, jobs, chunked);
  EXPECT_EQ(model.path_batch_rows, (std::vector<int64_t>{6, 5, 5, 5}));
  ASSERT_EQ(together.size(), jobs.size());
  int64_t batches_alone = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    Counting alone_model;
    const std::vector<Attribution> alone =
        AttributeTargets(alone_model, jobs[j].input, jobs[j].paths, jobs[j].targets, jobs[j].schedule, chunked);
    batches_alone += static_cast<int64_t>(alone_model.path_batch_rows.size());
    ASSERT_EQ(together[j].size(), alone.size()) << j;
    for (size_t t = 0; t < alone.size(); ++t) {
      EXPECT_EQ(together[j][t].target, alone[t].target) << j << " " << t;
      EXPECT_EQ(together[j][t].n_steps, alone[t].n_steps);
      EXPECT_TRUE(torch::allclose(together[j][t].integrated_grads, alone[t].integrated_grads, 1e-6, 1e-7));
      EXPECT_TRUE(torch::allclose(together[j][t].path_gradients, alone[t].path_gradients, 1e-6, 1e-7));
      EXPECT_TRUE(torch::equal(together[j][t].path_points, alone[t].path_points));
      EXPECT_TRUE(torch::equal(together[j][t].step_sizes, alone[t].step_sizes));
      EXPECT_NEAR(together[j][t].convergence_delta, alone[t].convergence_delta, 1e-5);
    }
  }
  EXPECT_EQ(batches_alone, 2 + 2 + 1);
  EXPECT_EQ(together[2].size(), 2U);  // top_k 2, chosen from the job's own input
}

// The reference networks, in float64 so that the comparison is exact to
// rounding: batches that mix requests of different n_steps and classes
// (chunks of 5 over 4 + 6 + 3 path points) give each what it gets alone.
// (In float32 the rounding alone moves IG by up to ~1% of its largest value
// on these networks when the batch size changes: test_service.py.)
class BatchingOnReferenceNetworks : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchingOnReferenceNetworks, MixedBatchesEqualEachAloneInFloat64) {
  const ModelFamily family = GetParam().rfind("bit", 0) == 0 ? ModelFamily::kBit : ModelFamily::kLanet;
  auto model = LoadModel(family, testing::DeterministicStateDict(testing::LoadReferenceKeys(GetParam())));
  ASSERT_TRUE(model.ok());
  (*model)->To(torch::TensorOptions().dtype(torch::kFloat64));
  torch::Generator generator = at::detail::createCPUGenerator(5);
  std::vector<PathJob> jobs;
  const std::vector<int> steps = {4, 6, 3};
  const std::vector<int> classes = {2, 7, 0};
  for (size_t j = 0; j < steps.size(); ++j) {
    const torch::Tensor x = torch::randn({1, 3, 32, 32}, generator).to(torch::kFloat64);
    jobs.push_back(MakeJob(x, {{x, torch::zeros_like(x)}}, {classes[j]}, 0, Method::kGaussLegendre, steps[j]));
  }
  EngineOptions chunked;
  chunked.chunk_size = 5;  // batches of 4 + 1, 5, 3 path points
  const auto together = AttributeJobs(**model, jobs, chunked);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Attribution alone = Attribute(**model, jobs[j].input, classes[j], jobs[j].schedule, chunked);
    const double scale = alone.integrated_grads.abs().max().item<double>();
    EXPECT_LT((together[j][0].integrated_grads - alone.integrated_grads).abs().max().item<double>(), 1e-9 * scale) << j;
    const double step_scale = alone.path_gradients.abs().max().item<double>();
    EXPECT_LT((together[j][0].path_gradients - alone.path_gradients).abs().max().item<double>(), 1e-9 * step_scale)
        << j;
    EXPECT_NEAR(together[j][0].convergence_delta, alone.convergence_delta, 1e-9 * std::fabs(alone.target_logit));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BatchingOnReferenceNetworks, ::testing::Values("lanet-c16-l8", "bit-m-r50x1"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(Targets, TopKIsTheMostProbableFirstAndPredictedIsTheArgmax) {
  const torch::Tensor logits = torch::tensor({{0.5, 3.0, -1.0, 2.0}});
  EXPECT_EQ(ChooseTargets({{}, 3}, logits), (std::vector<int>{1, 3, 0}));
  EXPECT_EQ(ChooseTargets({{}, 9}, logits), (std::vector<int>{1, 3, 0, 2}));  // at most every class
  EXPECT_EQ(ChooseTargets({{kPredictedTarget, 2}, 0}, logits), (std::vector<int>{1, 2}));
  Counting model;
  const torch::Tensor x = torch::linspace(-1.0, 1.5, 48).view({1, 3, 4, 4});
  const std::vector<Attribution> top =
      AttributeTargets(model, x, {{x, torch::zeros_like(x)}}, {{}, 2}, *MakeSchedule(Method::kGaussLegendre, 4), {});
  const torch::Tensor f = model.Forward(x);
  ASSERT_EQ(top.size(), 2U);
  EXPECT_EQ(top[0].target, f.argmax(1).item<int64_t>());
  EXPECT_GE(f[0][top[0].target].item<double>(), f[0][top[1].target].item<double>());
}

TEST(Paths, MistakesAreNamed) {
  Quadratic model;
  const torch::Tensor x = torch::zeros({1, 3, 4, 4});
  auto message = [&](const PathRequest& options) {
    auto paths = MakePaths(x, model.info(), options);
    return paths.ok() ? std::string("ok") : paths.status().message();
  };
  PathRequest o;
  o.baseline = Baseline::kImage;  // with no image
  EXPECT_NE(message(o).find("baseline: 'image' needs"), std::string::npos);
  o.baseline = Baseline::kZero;
  o.baseline_count = 2;
  EXPECT_NE(message(o).find("baseline_count"), std::string::npos);
  o.baseline_count = 1;
  o.baseline = Baseline::kImage;
  EXPECT_NE(message(o).find("baseline_image"), std::string::npos);
  o.baseline = Baseline::kBlur;
  o.blur_sigma = 0.0;
  EXPECT_NE(message(o).find("blur_sigma"), std::string::npos);
  o.baseline = Baseline::kZero;
  o.smoothgrad_samples = 2;
  o.smoothgrad_sigma = -1.0;
  EXPECT_NE(message(o).find("smoothgrad_sigma"), std::string::npos);
}

TEST(Engine, EncodesTheResponseDict) {
  Quadratic model;
  torch::Tensor x = torch::ones({1, 3, 4, 4});
  Attribution a = Attribute(model, x, 1, *MakeSchedule(Method::kGaussLegendre, 3), {});
  auto root = ParseTorchFile(EncodeAttribution(a), "response");
  ASSERT_TRUE(root.ok()) << root.status().message();
  std::vector<std::string> keys;
  for (const auto& [k, v] : (*root)->entries) keys.push_back(k->text);
  // The original's order and dtypes: IG and the step sizes in float64 (Captum's), the rest float32.
  EXPECT_EQ(keys, (std::vector<std::string>{"integrated_directional_grads", "step_sizes", "intermediates",
                                            "integrated_grads", "output", "target_class"}));
  EXPECT_TRUE(torch::equal((*root)->Find("integrated_directional_grads")->tensor, a.path_gradients));
  EXPECT_EQ((*root)->Find("integrated_grads")->tensor.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal((*root)->Find("integrated_grads")->tensor, a.integrated_grads.to(torch::kFloat64)));
  const torch::Tensor steps = (*root)->Find("step_sizes")->tensor;
  EXPECT_EQ(steps.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(steps[1].item<double>(), 4.0 / 9.0, 1e-15);  // Gauss-Legendre's middle weight at 3 points, in float64
  EXPECT_EQ((*root)->Find("intermediates")->tensor.scalar_type(), torch::kFloat32);
  EXPECT_EQ((*root)->Find("target_class")->integer, 1);
}

}  // namespace
}  // namespace intgrads

namespace intgrads {
namespace {

// State dicts of any configuration, from the key lists, with small random weights.
StateDict RandomStateDict(const KeyShapes& keys) {
  torch::manual_seed(0);
  StateDict weights;
  for (const auto& [key, shape] : keys) {
    const bool is_var = key.find("running_var") != std::string::npos;
    weights.emplace_back(key, key.find("num_batches_tracked") != std::string::npos ? torch::zeros(shape, torch::kInt64)
                              : is_var                                             ? torch::ones(shape)
                                                                                   : torch::randn(shape) * 0.1);
  }
  return weights;
}

// MaxPool2d gives what LibTorch's NCHW max-pool gives: values, and
// gradients (its picks), ties, -inf and NaN included, in our loops (3 x 3)
// and in torch's channels-last kernel (2 x 2), with and without a sum fused
// after it, whose gradient is the output's.
TEST(Models, MaxPoolIsTorchs) {
  torch::Generator generator = at::detail::createCPUGenerator(11);
  struct Case {
    int64_t kernel, stride, padding, channels, side;
    bool plus;
  };
  // 16 channels (one block of our loops), 6 (none), 37 (two and 5 more); odd
  // and even maps; BiT's root pool (stride 2, no padding).
  for (const Case c : {Case{3, 1, 1, 16, 12, false}, Case{3, 2, 1, 16, 12, false}, Case{3, 1, 1, 6, 7, true},
                       Case{3, 2, 1, 37, 9, true}, Case{3, 2, 0, 37, 9, false}, Case{3, 1, 1, 37, 3, true},
                       Case{3, 2, 1, 16, 2, true}, Case{2, 2, 0, 16, 8, true}}) {
    const std::string what = "kernel " + std::to_string(c.kernel) + " stride " + std::to_string(c.stride) +
                             " padding " + std::to_string(c.padding) + " channels " + std::to_string(c.channels) +
                             " side " + std::to_string(c.side) + (c.plus ? " plus" : "");
    torch::Tensor x = torch::round(torch::randn({3, c.channels, c.side, c.side}, generator) * 1.5);  // many ties
    x.slice(2, 0, 2).slice(3, 0, 2).zero_();                                                         // a flat region
    x.select(0, 1).select(1, 1).select(1, 1).fill_(-std::numeric_limits<float>::infinity());
    x.select(0, 2).select(1, 0).fill_(std::numeric_limits<float>::quiet_NaN());  // a row of NaN, each channel
    x.select(0, 2).select(2, 1).slice(0, 0, 3).fill_(std::numeric_limits<float>::quiet_NaN());
    const torch::Tensor a = x.clone().requires_grad_(true);
    const torch::Tensor b = x.clone().contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
    torch::Tensor plain = torch::max_pool2d(a, c.kernel, c.stride, c.padding);
    const torch::Tensor z = torch::randn(plain.sizes(), generator);
    const torch::Tensor za = z.clone().requires_grad_(true), zb = z.clone().requires_grad_(true);
    if (c.plus) plain = plain + za;
    const torch::Tensor ours = MaxPool2d(b, c.kernel, c.stride, c.padding, c.plus ? zb : torch::Tensor());
    EXPECT_TRUE(ours.is_contiguous(at::MemoryFormat::ChannelsLast)) << what;
    if (MaxPool3x3Supported() && c.kernel == 3) {
      EXPECT_NE(ours.grad_fn()->name().find("MaxPool"), std::string::npos) << what;
    }
    ASSERT_TRUE(torch::equal(torch::nan_to_num(plain, 7.0), torch::nan_to_num(ours, 7.0))) << what;
    EXPECT_TRUE(torch::equal(torch::isnan(plain), torch::isnan(ours))) << what;
    const torch::Tensor g = torch::randn(plain.sizes(), generator);
    plain.backward(g);
    ours.backward(g);
    EXPECT_TRUE(torch::equal(a.grad(), b.grad())) << what;
    if (c.plus) {
      EXPECT_TRUE(torch::equal(za.grad(), zb.grad())) << what;
    }
  }
}

// ConcatRelu's values and gradients are torch's relu(cat(...)) to the bit:
// negative, zero and NaN inputs, parts of different widths in channels-last
// and in NCHW, a part that needs no gradient, and torch's own operations on
// float64, where the loops do not run.
TEST(Models, ConcatReluIsTorchs) {
  torch::Generator generator = at::detail::createCPUGenerator(13);
  for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
    std::vector<torch::Tensor> plain, ours;
    int index = 0;
    for (const int64_t channels : {16, 5, 32}) {
      torch::Tensor x = torch::round(torch::randn({3, channels, 6, 7}, generator) * 2).to(dtype);  // zeros too
      x.select(0, 1).select(1, 2).fill_(std::numeric_limits<double>::quiet_NaN());
      const bool needs_grad = index != 1;
      plain.push_back(x.clone().requires_grad_(needs_grad));
      const torch::Tensor y = index == 2 ? x.clone() : x.clone().contiguous(at::MemoryFormat::ChannelsLast);
      ours.push_back(y.requires_grad_(needs_grad));
      ++index;
    }
    const std::string what = dtype == torch::kFloat32 ? "float32" : "float64";
    const torch::Tensor a = torch::relu(torch::cat(plain, 1));
    const torch::Tensor b = ConcatRelu(ours);
    if (dtype == torch::kFloat32) {
      EXPECT_NE(b.grad_fn()->name().find("ConcatRelu"), std::string::npos);
      EXPECT_TRUE(b.is_contiguous(at::MemoryFormat::ChannelsLast));
    }
    ASSERT_TRUE(torch::equal(torch::nan_to_num(a, 7.0), torch::nan_to_num(b, 7.0))) << what;
    EXPECT_TRUE(torch::equal(torch::isnan(a), torch::isnan(b))) << what;
    const torch::Tensor g = torch::randn(a.sizes(), generator).to(dtype);
    a.backward(g);
    b.backward(g);
    for (size_t i = 0; i < plain.size(); ++i) {
      if (i == 1) {
        EXPECT_FALSE(ours[i].grad().defined()) << what;
        continue;
      }
      ASSERT_TRUE(ours[i].grad().defined()) << what << " part " << i;
      EXPECT_TRUE(torch::equal(plain[i].grad(), ours[i].grad())) << what << " part " << i;
    }
  }
}

TEST(Models, PackedConvIsTheConvolution) {
  torch::Generator generator = at::detail::createCPUGenerator(12);
  struct Case {
    int64_t kernel, stride, padding, side;
  };
  // Stride 1 (packed; on a 1 x 1 map with the batch laid out as one image's
  // width, a 3 x 3 there by its centre tap), a strided
  // 1 x 1 (packed, on the strided slice), a 3 x 3 of stride 2 on a 2 x 2 map
  // (one 1 x 1 over the four pixels) and on larger maps (plain), and BiT's
  // root, 7 x 7 of stride 2 (its input gradient through the space-to-depth
  // layout), on even and odd maps and on one as large as the kernel padded.
  for (const Case c : {Case{1, 1, 0, 4}, Case{1, 1, 0, 1}, Case{3, 1, 1, 5}, Case{3, 1, 1, 2}, Case{3, 1, 1, 1},
                       Case{3, 2, 1, 4}, Case{3, 2, 1, 5}, Case{3, 2, 1, 2}, Case{1, 2, 0, 4}, Case{1, 2, 0, 5},
                       Case{1, 2, 0, 2}, Case{7, 2, 3, 32}, Case{7, 2, 3, 33}, Case{7, 2, 3, 31}, Case{7, 2, 3, 1}}) {
    const std::string what = "kernel " + std::to_string(c.kernel) + " stride " + std::to_string(c.stride) + " side " +
                             std::to_string(c.side);
    const torch::Tensor weight = torch::randn({24, 16, c.kernel, c.kernel}, generator);
    PackedConv conv(weight, c.stride, c.padding);
    EXPECT_EQ(conv.packed(), (c.stride == 1 || c.kernel == 1) && at::hasMKLDNN()) << what;
    const torch::Tensor x = torch::randn({6, 16, c.side, c.side}, generator);
    const torch::Tensor a = x.clone().requires_grad_(true);
    const torch::Tensor b = x.clone().requires_grad_(true);
    const torch::Tensor plain = torch::conv2d(a, weight, {}, c.stride, c.padding);
    const torch::Tensor ours = conv(b);
    ASSERT_EQ(plain.sizes(), ours.sizes()) << what;
    EXPECT_TRUE(torch::allclose(ours, plain, 1e-5, 1e-4)) << what << ": " << (ours - plain).abs().max().item<float>();
    const torch::Tensor g = torch::randn(plain.sizes(), generator);
    plain.backward(g);
    ours.backward(g);
    EXPECT_TRUE(torch::allclose(b.grad(), a.grad(), 1e-5, 1e-4))
        << what << ": " << (b.grad() - a.grad()).abs().max().item<float>();
    // Moved to float64 it is the plain convolution, to the last bit.
    conv.To(torch::TensorOptions().dtype(torch::kFloat64));
    EXPECT_FALSE(conv.packed()) << what;
    const torch::Tensor x64 = x.to(torch::kFloat64);
    EXPECT_TRUE(torch::equal(conv(x64), torch::conv2d(x64, weight.to(torch::kFloat64), {}, c.stride, c.padding)))
        << what;
  }
}

// GroupNormRelu's own loops (bfloat16 on a CPU) against torch's GroupNorm
// and ReLU in float64: values and input gradients, on BiT's map sizes at 32 x
// 32 (8 x 8 to 1 x 1: rows of 16 or more, short rows, one value per
// channel), on rows and blocks that leave a remainder past 16 values, and on
// blocks whose mean is large against their spread. In float32 the values
// are torch's and the input gradient the fused loop's.
TEST(Models, GroupNormReluIsGroupNormThenRelu) {
  torch::Generator generator = at::detail::createCPUGenerator(5);
  struct Case {
    int64_t batch, channels, side;
    double offset;  // added to x: a mean far from 0
  };
  for (const Case c :
       {Case{3, 64, 8, 0}, Case{2, 128, 4, 0}, Case{3, 256, 2, 0}, Case{2, 512, 1, 0}, Case{8, 2048, 1, 0},
        Case{2, 96, 3, 0}, Case{2, 32, 5, 0}, Case{2, 160, 1, 0}, Case{4, 64, 4, 50}, Case{2, 64, 16, 0}}) {
    const std::string what = std::to_string(c.channels) + " x " + std::to_string(c.side) + " x " +
                             std::to_string(c.side) + ", offset " + std::to_string(c.offset);
    const torch::Tensor x = (torch::randn({c.batch, c.channels, c.side, c.side}, generator) * 0.5 + c.offset);
    const torch::Tensor weight = torch::rand({c.channels}, generator) + 0.5;
    const torch::Tensor bias = torch::randn({c.channels}, generator) * 0.3;
    const torch::Tensor ours_in = x.to(torch::kBFloat16).requires_grad_(true);
    const torch::Tensor ours = GroupNormRelu(ours_in, 32, weight, bias, 1e-5);
    ASSERT_NE(ours.grad_fn(), nullptr);
    EXPECT_NE(ours.grad_fn()->name().find("GroupNormRelu"), std::string::npos) << what;
    ASSERT_EQ(ours.scalar_type(), torch::kBFloat16);
    // The same bfloat16 input, in float64.
    const torch::Tensor exact_in = ours_in.detach().to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor exact =
        torch::relu(torch::group_norm(exact_in, 32, weight.to(torch::kFloat64), bias.to(torch::kFloat64), 1e-5));
    // Only the results are rounded to bfloat16 (2^-9 of each); a float32
    // computation, to 1e-5 of the largest, is well inside that.
    const double largest = exact.abs().max().item<double>();
    EXPECT_LT((ours.to(torch::kFloat64) - exact).abs().max().item<double>(), std::ldexp(largest, -8)) << what;
    const torch::Tensor g = torch::randn(ours.sizes(), generator).to(torch::kBFloat16);
    const torch::Tensor ours_grad = torch::autograd::grad({ours}, {ours_in}, {g})[0];
    const torch::Tensor exact_grad = torch::autograd::grad({exact}, {exact_in}, {g.to(torch::kFloat64)})[0];
    ASSERT_EQ(ours_grad.scalar_type(), torch::kBFloat16);
    const double steepest = exact_grad.abs().max().item<double>();
    EXPECT_LT((ours_grad.to(torch::kFloat64) - exact_grad).abs().max().item<double>(), std::ldexp(steepest, -8))
        << what;
    // float32: the values torch's, to the last bit, with or without a
    // gradient; the input gradient by the fused loop, against float64, as
    // close as torch's own float32 gradient.
    const torch::Tensor torch_f32 = torch::relu(torch::group_norm(x, 32, weight, bias, 1e-5));
    EXPECT_TRUE(torch::equal(GroupNormRelu(x, 32, weight, bias, 1e-5), torch_f32)) << what;
    const torch::Tensor f32_in = x.clone().requires_grad_(true);
    const torch::Tensor f32 = GroupNormRelu(f32_in, 32, weight, bias, 1e-5);
    EXPECT_NE(f32.grad_fn()->name().find("GroupNormReluGrad"), std::string::npos) << what;
    EXPECT_TRUE(torch::equal(f32.detach(), torch_f32)) << what;
    const torch::Tensor g32 = g.to(torch::kFloat32);
    const torch::Tensor f32_grad = torch::autograd::grad({f32}, {f32_in}, {g32})[0];
    const torch::Tensor torch_in = x.clone().requires_grad_(true);
    const torch::Tensor torch_grad =
        torch::autograd::grad({torch::relu(torch::group_norm(torch_in, 32, weight, bias, 1e-5))}, {torch_in}, {g32})[0];
    const torch::Tensor x64 = x.to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor exact64_grad = torch::autograd::grad(
        {torch::relu(torch::group_norm(x64, 32, weight.to(torch::kFloat64), bias.to(torch::kFloat64), 1e-5))}, {x64},
        {g.to(torch::kFloat64)})[0];
    const double steepest64 = exact64_grad.abs().max().item<double>();
    const double torch_error = (torch_grad.to(torch::kFloat64) - exact64_grad).abs().max().item<double>();
    const double ours_error = (f32_grad.to(torch::kFloat64) - exact64_grad).abs().max().item<double>();
    // Measured: both 0.7-1.9e-7 of the steepest, 3.6e-6 and 4.7e-6 with
    // the offset.
    EXPECT_LT(ours_error, std::max(2 * torch_error, 2e-7 * steepest64))
        << what << ": torch's float32 is off by " << torch_error;
  }
  // A NaN makes its group NaN, forward and backward, as in torch (ReLU passes
  // NaN): not zeros that would hide it. Map sizes of each loop: 1 x 1 (16
  // channels a group), 4 x 4 and 2 x 2.
  for (const auto& [side, dtype] : {std::pair{1, torch::kBFloat16}, std::pair{4, torch::kBFloat16},
                                    std::pair{2, torch::kBFloat16}, std::pair{4, torch::kFloat32}}) {
    torch::Tensor x = torch::randn({2, 512, side, side}, generator).to(dtype);
    x[1][40][0][0] = std::nan("");  // group 2 of the second image
    const torch::Tensor weight = torch::ones({512}), bias = torch::zeros({512});
    const torch::Tensor in = x.clone().requires_grad_(true);
    const torch::Tensor out = GroupNormRelu(in, 32, weight, bias, 1e-5);
    const torch::Tensor grad = torch::autograd::grad({out}, {in}, {torch::ones_like(out)})[0];
    const torch::Tensor nan = torch::isnan(out).view({2, 32, -1});
    EXPECT_TRUE(nan[1][2].all().item<bool>()) << side;
    EXPECT_EQ(nan.sum().item<int64_t>(), nan[1][2].numel()) << side;
    EXPECT_TRUE(torch::isnan(grad).view({2, 32, -1})[1][2].all().item<bool>()) << side;
  }
}

// BiT under --bf16: packed bfloat16 convolutions, GroupNorm in float32
// (its parameters stay float32). Logits and input gradients of a small BiT
// with random weights stay close to float32's: measured 0.005 and 0.17
// relative L2 (0.0075 and 0.22 with GroupNorm in bfloat16), held to 0.02
// and 0.4.
TEST(Engine, BitInBfloat16StaysCloseToFloat32) {
  const StateDict weights = RandomStateDict(BitKeys({{1, 1, 1, 1}, 1, 10}));
  auto low = LoadModel(ModelFamily::kBit, weights);
  auto high = LoadModel(ModelFamily::kBit, weights);
  ASSERT_TRUE(low.ok() && high.ok());
  (*low)->To(torch::TensorOptions().dtype(torch::kBFloat16));
  const torch::Tensor x = torch::randn({6, 3, 32, 32}, torch::Generator(at::detail::createCPUGenerator(3)));
  const torch::Tensor a = x.to(torch::kBFloat16).requires_grad_(true);
  const torch::Tensor b = x.clone().requires_grad_(true);
  const torch::Tensor out_low = (*low)->Forward(a);
  const torch::Tensor out_high = (*high)->Forward(b);
  EXPECT_EQ(out_low.scalar_type(), torch::kBFloat16);
  const torch::Tensor grad_low = torch::autograd::grad({out_low.select(1, 3).sum()}, {a})[0].to(torch::kFloat32);
  const torch::Tensor grad_high = torch::autograd::grad({out_high.select(1, 3).sum()}, {b})[0];
  const double logits = ((out_low.to(torch::kFloat32) - out_high).norm() / out_high.norm()).item<double>();
  const double grads = ((grad_low - grad_high).norm() / grad_high.norm()).item<double>();
  std::printf("BiT bfloat16 against float32: logits relative L2 %.3g, input gradients %.3g\n", logits, grads);
  EXPECT_GT(logits, 0.0);
  EXPECT_LT(logits, 0.02);
  EXPECT_LT(grads, 0.4);
}

TEST(Models, VariantsAndClassCountsComeFromTheShapes) {
  EXPECT_EQ(BitKeys({{3, 8, 36, 3}, 2, 10}).size(),
            BitKeys({{3, 4, 6, 3}, 2, 10}).size() + size_t{34} * 9);  // R152 vs R50
  auto lanet = LoadModel(ModelFamily::kLanet, RandomStateDict(LanetKeys({8, 5, false, 3})));
  ASSERT_TRUE(lanet.ok()) << lanet.status().message();
  EXPECT_EQ((*lanet)->info().variant, "C8-L5");
  EXPECT_EQ((*lanet)->info().classes, (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  auto bit = LoadModel(ModelFamily::kBit, RandomStateDict(BitKeys({{1, 1, 1, 1}, 1, 7})));
  ASSERT_TRUE(bit.ok()) << bit.status().message();
  EXPECT_EQ((*bit)->info().variant, "R?x1");
  torch::NoGradGuard no_grad;
  EXPECT_EQ((*lanet)->Forward(torch::zeros({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*bit)->Forward(torch::zeros({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 7}));
}

// Built with tcmalloc (CMake's INTGRADS_TCMALLOC, when found), the programs that run the passes get their
// memory from it, LibTorch's tensors included: malloc is tcmalloc's. A linker that drops the library as
// unneeded (none of our code names it) would leave the C library's.
TEST(Allocator, MallocIsTcmallocWhereBuiltWithIt) {
#ifdef INTGRADS_TCMALLOC
  void* tc_malloc = dlsym(RTLD_DEFAULT, "tc_malloc");
  ASSERT_NE(tc_malloc, nullptr) << "tcmalloc is not loaded";
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "malloc"), tc_malloc);
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "posix_memalign"), dlsym(RTLD_DEFAULT, "tc_posix_memalign"));
#else
  GTEST_SKIP() << "built without tcmalloc";
#endif
}

}  // namespace
}  // namespace intgrads

namespace intgrads {
namespace {

JobRequest ImageRequest(const Image& image) {
  JobRequest request;
  request.target = 1;
  request.n_steps = 4;
  request.format = Format::kJson;
  request.image = image;
  return request;
}

// A prediction is the forward pass the attribution makes at x, alone; a
// tensor input (the model's normalized input, as KServe v2's FP32 input
// sends it) is attributed as the image it came from.
TEST(Replies, PredictionsAreTheForwardPassAndTensorInputsTheImagesInput) {
  auto model = LoadModel(ModelFamily::kLanet, RandomStateDict(LanetKeys({8, 5, false, 3})));
  ASSERT_TRUE(model.ok()) << model.status().message();
  const Classifier& lanet = **model;
  torch::manual_seed(4);
  Image image{40, 36, 3, {}};
  const torch::Tensor noise = torch::randint(0, 256, {int64_t{40} * 36 * 3}, torch::kUInt8);
  image.pixels.assign(noise.data_ptr<uint8_t>(), noise.data_ptr<uint8_t>() + noise.numel());
  const WorkerOptions options;
  const torch::Device cpu(torch::kCPU);
  const JobRequest attribute = ImageRequest(image);
  const JobReply attributed = ComputeReply(lanet, cpu, attribute, options);
  ASSERT_TRUE(attributed.ok()) << attributed.error;
  const auto ig = nlohmann::json::parse(attributed.payload);

  JobRequest predict = attribute;
  predict.predict = true;
  predict.n_steps = 0;  // not read: no path
  predict.format = Format::kPng;
  const JobReply predicted = ComputeReply(lanet, cpu, predict, options);
  ASSERT_TRUE(predicted.ok()) << predicted.error;
  EXPECT_EQ(predicted.content_type, "application/json");
  const auto p = nlohmann::json::parse(predicted.payload);
  // The same pass up to float rounding (the attribution's ran in a batch with the path points).
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(p["output"][0][c].get<double>(), ig["output"][0][c].get<double>(), 1e-5) << c;
    EXPECT_NEAR(p["probabilities"][c].get<double>(), ig["probabilities"][c].get<double>(), 1e-6) << c;
  }
  EXPECT_EQ(p["predicted_class"], ig["predicted_class"]);
  EXPECT_EQ(predicted.target, ig["predicted_class"].get<int>());
  EXPECT_EQ(p["classes"], (nlohmann::json{"class_0", "class_1", "class_2"}));

  const torch::Tensor input = NormalizedTensor(ModelInputImage(image, lanet.info()), lanet.info()).contiguous();
  JobRequest tensor = attribute;
  tensor.image = {32, 32, 3, {}};
  tensor.tensor.assign(reinterpret_cast<const char*>(input.data_ptr<float>()), input.numel() * sizeof(float));
  const JobReply from_tensor = ComputeReply(lanet, cpu, tensor, options);
  ASSERT_TRUE(from_tensor.ok()) << from_tensor.error;
  const auto t = nlohmann::json::parse(from_tensor.payload);
  EXPECT_EQ(t["integrated_grads"], ig["integrated_grads"]);
  EXPECT_EQ(t["input"], ig["input"]);

  // Poison and a tensor of another size are refused, not computed.
  JobRequest poisoned = tensor;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(poisoned.tensor.data() + 40, &nan, sizeof(nan));
  const JobReply refused = ComputeReply(lanet, cpu, poisoned, options);
  EXPECT_EQ(refused.code, StatusCode::kInvalid);
  EXPECT_NE(refused.error.find("NaN"), std::string::npos) << refused.error;
  JobRequest small = tensor;
  small.image.height = small.image.width = 16;
  small.tensor.resize(size_t{3} * 16 * 16 * sizeof(float));
  EXPECT_EQ(ComputeReply(lanet, cpu, small, options).code, StatusCode::kInvalid);
}

}  // namespace
}  // namespace intgrads
