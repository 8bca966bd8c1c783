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

// Path points alpha_k on [0, 1] and their weights s_k, as Captum makes them.
struct PathSchedule {
  std::vector<double> alphas;
  std::vector<double> step_sizes;
};

// method: gausslegendre (numpy's leggauss mapped to [0, 1]), riemann_left,
// riemann_right, riemann_middle, riemann_trapezoid (float32 linspace alphas).
StatusOr<PathSchedule> MakeSchedule(const std::string& method, int n_steps);

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

// input: 1 x 3 x S x S normalized, on the model's device. The baseline is
// zero in the normalized space (compat.md).
Attribution Attribute(const Classifier& model, const torch::Tensor& input, int target, const PathSchedule& schedule,
                      const EngineOptions& options);

// The response of compat.md: torch.save bytes of the dict with the keys
// integrated_grads, integrated_directional_grads, step_sizes, intermediates,
// output, target_class (uncompressed; the worker gzips it).
std::string EncodeAttribution(const Attribution& attribution);

// Preprocessing for a family: to RGB, resize to S x S as Pillow, normalize.
torch::Tensor PreprocessImage(const Image& image, const ModelInfo& info);

}  // namespace intgrads
