// Integrated gradients in one pass (Sundararajan et al. 2017):
//   IG = (x - baseline) * sum_k s_k * grad_k,
// grad_k the gradient of the target logit at baseline + alpha_k (x - baseline).
// The n_steps path gradients are computed once, in chunks of path points to
// bound memory, and serve both IG and the per-step fields of the response.
// Only the input needs a gradient: the model's weights never do.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model.h"

namespace intgrads {

// Path points alpha_k on [0, 1] (ascending) and their weights s_k.
struct PathSchedule {
  std::vector<double> alphas;
  std::vector<double> step_sizes;
  int forward_points = 0;  // forward-only passes spent choosing the points (the scan)
};

// The fixed rules, as Captum makes them: gausslegendre (numpy's leggauss
// mapped to [0, 1]), riemann_left, riemann_right, riemann_middle,
// riemann_trapezoid (float32 linspace alphas). "scan" needs the model: see
// PlanSchedule.
StatusOr<PathSchedule> MakeSchedule(const std::string& method, int n_steps);

// The "scan" rule, for integrands that live near a = 0 (BiT: GroupNorm makes
// f(a x) nearly invariant to the scale a, so f changes where a is tiny). A
// forward-only scan evaluates the target logit f at ScanAlphas(kScanPoints):
// a = 0, then a geometric grid from kScanSmallest to 1. If less than a share
// kScanNearZeroShare of the variation it sees lies below kScanNearZero, the
// change is spread over [0, 1] and the rule is plain Gauss-Legendre.
// Otherwise, with `low` the last scan point before f departs from f(0) by
// more than kScanTolerance of that variation, Gauss-Legendre in u = ln a on
// [ln low, 0] (weights times a, as da = a du) takes all points but a share
// kScanShareBelow (at least one), which plain Gauss-Legendre puts on
// [0, low]. A change spread over decades of a becomes a smooth function of
// u, and the rule converges like Gauss-Legendre on smooth integrands, where
// Gauss-Legendre in a misses everything below its smallest point (5.7e-4 at
// n_steps 50). With no change seen, or n_steps 1, it is plain
// Gauss-Legendre. The weights on [low, 1] are scaled to sum to 1 - low (a
// correction of 1e-8 at n_steps 20, larger below): constants integrate
// exactly, so the IG of a linear model is exact at any n_steps.
constexpr double kScanSmallest = 1e-9;
constexpr double kScanTolerance = 1e-3;
constexpr double kScanShareBelow = 0.05;
constexpr double kScanNearZero = 0.02;
constexpr double kScanNearZeroShare = 0.1;
constexpr int kScanPoints = 12;
std::vector<double> ScanAlphas(int count);
PathSchedule PlanFromScan(const std::vector<double>& alphas, const std::vector<double>& values, int n_steps);

struct Attribution {
  torch::Tensor integrated_grads;  // 1 x 3 x S x S
  torch::Tensor path_gradients;    // n x 3 x S x S: grad_k ("integrated_directional_grads")
  torch::Tensor step_sizes;        // n x 1: s_k
  torch::Tensor path_points;       // n x 3 x S x S: baseline + alpha_k (x - baseline) ("intermediates")
  torch::Tensor logits;            // 1 x classes, f(x)
  int target = 0;
  double target_logit = 0.0;       // f(x)[target]
  double baseline_logit = 0.0;     // f(baseline)[target]
  double convergence_delta = 0.0;  // sum(IG) - (f(x) - f(baseline)), Captum's sign
};

struct EngineOptions {
  int chunk_size = 0;  // path points per forward/backward batch; 0: all at once
};

// input: 1 x 3 x S x S normalized, on the model's device. Path points are
// formed in the input's dtype and cast to the model's (Classifier::dtype) for
// the passes; gradients and IG are accumulated in the input's. The baseline is
// zero in the normalized space (compat.md). A negative target is the class
// the model predicts at `input`, read from the forward pass Attribute makes at
// the path's end anyway.
Attribution Attribute(const Classifier& model, const torch::Tensor& input, int target, const PathSchedule& schedule,
                      const EngineOptions& options);

// MakeSchedule, or for "scan" the scan of the model along the path from the
// zero baseline to `input` and PlanFromScan.
StatusOr<PathSchedule> PlanSchedule(const Classifier& model, const torch::Tensor& input, int target,
                                    const std::string& method, int n_steps, const EngineOptions& options);

// Whether |convergence delta| exceeds `fraction` of |f(x) - f(baseline)|
// (the worker logs a warning past 10%).
bool IsIncomplete(const Attribution& attribution, double fraction);

// The response of compat.md: torch.save bytes of the dict with the keys
// integrated_grads, integrated_directional_grads, step_sizes, intermediates,
// output, target_class (uncompressed; the worker gzips it).
std::string EncodeAttribution(const Attribution& attribution);

// Preprocessing for a family: to RGB, resize to S x S as Pillow, normalize.
torch::Tensor PreprocessImage(const Image& image, const ModelInfo& info);
// Its two halves: the RGB image the model sees, and that image normalized
// (1 x 3 x S x S).
Image ModelInputImage(const Image& image, const ModelInfo& info);
torch::Tensor NormalizedTensor(const Image& rgb, const ModelInfo& info);

}  // namespace intgrads
