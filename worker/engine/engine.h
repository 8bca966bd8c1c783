// Integrated gradients in one pass (Sundararajan et al. 2017):
//   IG = (x - baseline) * sum_k s_k * grad_k,
// grad_k the gradient of the target logit at baseline + alpha_k (x - baseline).
// The n_steps path gradients are computed once, in chunks of path points to
// bound memory, and serve both IG and the per-step fields of the response.
// Only the input needs a gradient: the model's weights never do.
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/request.h"
#include "common/status.h"
#include "worker/models/model.h"

namespace intgrads {

// Path points alpha_k on [0, 1] (ascending) and their weights s_k.
struct PathSchedule {
  std::vector<double> alphas;
  std::vector<double> step_sizes;
  int forward_points = 0;  // forward-only passes spent choosing the points (the scan)
};

// The fixed rules, as Captum makes them: gausslegendre (numpy's leggauss
// mapped to [0, 1]), riemann_left, riemann_right, riemann_middle,
// riemann_trapezoid (float32 linspace alphas). The scan needs the model
// (PlanSchedule); here it is refused.
StatusOr<PathSchedule> MakeSchedule(Method method, int n_steps);

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
// [0, low]. A change spread smoothly over decades of a becomes a smooth
// function of u, and the rule converges like Gauss-Legendre on smooth
// integrands (a trained BiT's is rough in u too, so more slowly there:
// docs/FAITHFULNESS.md), where
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
  // With P paths (several baselines, SmoothGrad samples), P x n rows, path
  // by path; with one, n rows as the original.
  torch::Tensor path_gradients;  // grad_k ("integrated_directional_grads")
  torch::Tensor step_sizes;      // s_k / P: IG = sum over rows of step x grad x (x_p - b_p)
  torch::Tensor step_sizes64;    // the same in float64 (the original's payload sends them so)
  torch::Tensor path_points;     // b_p + alpha_k (x_p - b_p) ("intermediates")
  torch::Tensor path_inputs;     // P x 3 x S x S: x_p
  torch::Tensor baselines;       // P x 3 x S x S: b_p
  torch::Tensor logits;          // 1 x classes, f(x)
  int target = 0;
  double target_logit = 0.0;       // f(x)[target] (the mean over the paths' ends)
  double baseline_logit = 0.0;     // f(baseline)[target] (the mean over the paths' starts)
  double convergence_delta = 0.0;  // sum(IG) - (f(x) - f(baseline)), Captum's sign
  int n_steps = 0;                 // path points per path
  // Set while the copies of the tensors above to the host are in flight
  // (AttributeJobs with async_copies, on a GPU): ResolveCopies completes it.
  std::shared_ptr<struct PendingCopies> pending;
};

// Waits for an attribution's copies to the host, if any are in flight, and
// completes it (its convergence delta needs the IG on the host).
void ResolveCopies(Attribution* attribution);

// One straight path of IG, from `baseline` to `input` (1 x 3 x S x S each,
// normalized, on the model's device).
struct Path {
  torch::Tensor input;
  torch::Tensor baseline;
};

// The paths a request asks for (common/request.h, PathRequest; its
// baseline_image is ignored here: `baseline_image` is that image
// preprocessed, 1 x 3 x S x S):
//   baseline  zero (the original: zeros in the normalized space), black,
//             white, blur (the input blurred, Gaussian of blur_sigma pixels
//             at the model's input size), uniform (pixels uniform in
//             [0, 255], `baseline_count` of them averaged, expected-gradients
//             style), image (`baseline_image`)
//   smoothgrad_samples > 0: SmoothGrad over IG (Captum's
//             NoiseTunnel(IntegratedGradients), nt_type "smoothgrad"): the
//             mean of IG over noisy inputs x + N(0, sd^2), sd =
//             smoothgrad_sigma x (max(x) - min(x))
// Every path pairs each input (x, or the noisy samples) with each baseline;
// IG is the mean of their IGs. Random draws use std::mt19937_64 seeded by
// `seed`: the same request gives the same answer.

StatusOr<std::vector<Path>> MakePaths(const torch::Tensor& input, const ModelInfo& info, const PathRequest& options,
                                      const torch::Tensor& baseline_image = {});

struct EngineOptions {
  // The most path points per forward/backward batch; 0: chosen by ChunkRows.
  int chunk_size = 0;
  // The memory a batch may take (0: no bound), and what one path point
  // takes (MeasurePointBytes; 0: unknown, no bound).
  int64_t memory_budget_bytes = 0;
  int64_t point_bytes = 0;
};
constexpr int64_t kCpuChunk = 64;

// The most path points per batch for `rows` of them: chunk_size if set; else
// all at once on a GPU and at most kCpuChunk on a CPU, where much larger
// batches run slower (docs/PERFORMANCE.md, "The engine alone"); and no more than the memory budget holds (at least
// one). The passes take as few batches as this allows, evened out (50 rows at
// most 16 a batch: 13, 13, 12, 12).
int64_t ChunkRows(const EngineOptions& options, int64_t rows, bool cuda);

// The memory one path point costs in a forward and input-gradient pass, in
// bytes: the peak of the CPU tensors alive during a forward and backward pass
// of kProbePoints points (LibTorch's CPU allocator, counted while the probe
// runs), per point. Measured on a model on the CPU; the sizes are the same on
// a GPU (cuDNN's workspaces aside), so measure before moving the model. 0
// where it cannot be measured (a model on a GPU).
constexpr int64_t kProbePoints = 4;
int64_t MeasurePointBytes(const Classifier& model);

// input: 1 x 3 x S x S normalized, on the model's device. Path points are
// formed in the input's dtype and cast to the model's (Classifier::dtype) for
// the passes; gradients and IG are accumulated in the input's. The baseline is
// zero in the normalized space (compat.md). A negative target is the class
// the model predicts at `input`, read from the forward pass Attribute makes at
// the path's end anyway.
Attribution Attribute(const Classifier& model, const torch::Tensor& input, int target, const PathSchedule& schedule,
                      const EngineOptions& options);
// The same over several paths: their path points share batches, IG is the
// mean of the paths' IGs, and `output` (logits) is f(input). One path from
// a zero baseline to `input` is exactly Attribute.
Attribution AttributePaths(const Classifier& model, const torch::Tensor& input, const std::vector<Path>& paths,
                           int target, const PathSchedule& schedule, const EngineOptions& options);

// Told after each batch of passes, for each job the batch advanced: its
// path points done and in all (over all its paths), and the IG of its first
// target over the points done (1 x 3 x S x S, on the model's device),
// computed only if asked for.
using PassProgress =
    std::function<void(size_t job, int64_t done, int64_t total, const std::function<torch::Tensor()>& ig_so_far)>;

// The classes to explain: `classes` (kPredictedTarget, or any negative, is
// the predicted class), or with top_k > 0 the top_k classes at the input,
// most probable first.
struct Targets {
  std::vector<int> classes;
  int top_k = 0;
};
std::vector<int> ChooseTargets(const Targets& targets, const torch::Tensor& logits);

// Several targets over the same paths, one Attribution each (in the order of
// ChooseTargets): each chunk of path points goes forward once, and back once
// per target through the same graph, so T targets cost n forward and T x n
// backward passes instead of T x n of each. AttributePaths is this with one.
std::vector<Attribution> AttributeTargets(const Classifier& model, const torch::Tensor& input,
                                          const std::vector<Path>& paths, const Targets& targets,
                                          const PathSchedule& schedule, const EngineOptions& options,
                                          const PassProgress& progress = nullptr);

// Several requests at once (the worker's batching of queued requests): each
// job's path points join shared forward and backward batches of at most
// ChunkRows rows, and each job's result is what AttributeTargets gives for it alone.
// The models here treat the rows of a batch independently (GroupNorm is per
// sample, BatchNorm runs in eval mode), so sharing changes no number beyond
// float rounding.
struct PathJob {
  torch::Tensor input;
  std::vector<Path> paths;
  Targets targets;
  PathSchedule schedule;
};
// With `async_copies` on a GPU, the results' tensors are copied to pinned
// host memory without waiting, so that the caller can queue the next passes
// while they travel: each result must be passed to ResolveCopies before it is
// read. Elsewhere (the CPU) the results are complete.
std::vector<std::vector<Attribution>> AttributeJobs(const Classifier& model, const std::vector<PathJob>& jobs,
                                                    const EngineOptions& options, bool async_copies = false,
                                                    const PassProgress& progress = nullptr);

// MakeSchedule, or for "scan" the scan of the model along the path from
// `baseline` (zero if undefined) to `input` and PlanFromScan.
StatusOr<PathSchedule> PlanSchedule(const Classifier& model, const torch::Tensor& input, int target, Method method,
                                    int n_steps, const EngineOptions& options, const torch::Tensor& baseline = {});

// Adaptive steps: Gauss-Legendre with n = 8, 16, 32, ... (the last try
// `max_n_steps`) until |convergence delta| <= tolerance x |f(x) - f(baseline)|
// for every target. Returns the last try (its n_steps is the count used);
// *met says whether it reached the tolerance, *points_spent counts the path
// points of all tries. Its progress counts the points of all tries against
// the most they may take.
std::vector<Attribution> AttributeToTolerance(const Classifier& model, const torch::Tensor& input,
                                              const std::vector<Path>& paths, Targets targets, double tolerance,
                                              int max_n_steps, const EngineOptions& options, bool* met,
                                              int* points_spent, const PassProgress& progress = nullptr);

// Whether |convergence delta| exceeds `fraction` of |f(x) - f(baseline)|
// (the worker logs a warning past 10%).
bool IsIncomplete(const Attribution& attribution, double fraction);

// The original server's response: torch.save bytes of the dict with its keys
// in its order, integrated_directional_grads, step_sizes (float64),
// intermediates, integrated_grads (float64), output, target_class
// (uncompressed; the worker gzips it). Unless OnOriginalPath, also
// path_inputs and path_baselines.
std::string EncodeAttribution(const Attribution& attribution);

// Whether an attribution is the original's computation: one path, from the
// zero baseline. Every format adds path_inputs and path_baselines otherwise.
bool OnOriginalPath(const Attribution& attribution);

// Preprocessing for a family: to RGB, resize to S x S as Pillow, normalize.
torch::Tensor PreprocessImage(const Image& image, const ModelInfo& info);
// Its two halves: the RGB image the model sees, and that image normalized
// (1 x 3 x S x S).
Image ModelInputImage(const Image& image, const ModelInfo& info);
torch::Tensor NormalizedTensor(const Image& rgb, const ModelInfo& info);

}  // namespace intgrads
