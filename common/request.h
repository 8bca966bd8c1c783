// The original request body of POST /model/ and its validation:
//   {"img_data": H x W x 3 (or H x W, H x W x 4) integers 0..255,
//    "target_class": "cat", "n_steps": 50, "method": "gausslegendre"}
// Every way a body can be wrong becomes a Status naming the field and what
// was expected; nothing here throws.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/image.h"
#include "common/status.h"
#include "common/text.h"
#include "common/vocabulary.h"

namespace intgrads {

// CIFAR-10 in index order: the classes of the original server.
const std::vector<std::string>& Cifar10Classes();

struct RequestLimits {
  int max_side = 4096;                             // pixels per image side
  int64_t max_pixels = int64_t{16} * 1024 * 1024;  // height * width
  int max_n_steps = 1024;
  int max_paths = 64;    // paths per image: SmoothGrad samples x baselines
  int max_targets = 16;  // classes explained per image (a list, or top_k)
};

// The attribution options beyond the original (worker/engine/engine.h, MakePaths
// and AttributeToTolerance, says what each means): the baseline, SmoothGrad,
// adaptive steps. The defaults are the original's computation.
struct PathRequest {
  Baseline baseline = Baseline::kZero;
  double blur_sigma = 4.0;     // pixels at the model's input size
  int baseline_count = 1;      // uniform baselines averaged
  int smoothgrad_samples = 0;  // 0: no SmoothGrad
  double smoothgrad_sigma = 0.15;
  int64_t seed = 0;
  double tolerance = 0.0;  // > 0: adaptive Gauss-Legendre steps instead of n_steps
  Image baseline_image;    // for baseline "image", as sent (any size, like the image)
};

// Checks a PathRequest on its own and with the method (adaptive steps are
// Gauss-Legendre's; scan follows one path).
Status ValidatePathRequest(const PathRequest& paths, Method method, const RequestLimits& limits);

// Integrated Directional Gradients for image regions (worker/engine/regions.h).
struct RegionRequest {
  RegionKind kind = RegionKind::kNone;
  int min_side = 2;   // quadtree: patches are split while a side is longer
  int segments = 16;  // superpixels: about this many (SLIC)
  int top = 5;        // png: the regions drawn
};
constexpr int kMaxSegments = 1024;
constexpr int kMaxTopRegions = 64;

// Checks a RegionRequest and the format it goes with: the hierarchy comes
// back in json, the top regions drawn in png.
Status ValidateRegionRequest(const RegionRequest& regions, Format format);

// A PNG heatmap's look: ours, `heatmap` signed (red positive, blue
// negative) or absolute; or Captum's (visualize_image_attr's
// blended_heat_map) when `sign` is set: all (red negative, white, green
// positive), positive (Greens), negative (Reds) or absolute_value (Blues),
// scaled so that `outlier_perc` percent of the |IG| mass lies past the
// scale's end (Captum's cumulative-sum threshold, 0 <= outlier_perc < 100).
Status ValidateHeatmap(Heatmap heatmap, Sign sign, double outlier_perc);

// Checks the classes to explain for one image: indices within 0..classes-1
// or -1 (predicted), none twice, at most limits.max_targets; or top_k in
// 1..max_targets. `top_k` 0 and one target is the original's request. The
// scan places its points for one target, so it takes one.
Status ValidateTargets(const std::vector<int>& targets, int top_k, int num_classes, Method method,
                       const RequestLimits& limits);

struct AttributionRequest {
  Image image;  // as sent: any size, 1, 3 or 4 channels
  int target = 0;
  int n_steps = 50;
  Method method = Method::kGaussLegendre;
};

// `classes` are the served model's class names; target_class may be one of
// them or an integer index.
StatusOr<AttributionRequest> ParseModelRequest(std::string_view body, const std::vector<std::string>& classes,
                                               const RequestLimits& limits);

// The same through a JSON document only: what ParseModelRequest falls back on
// for any body its fast scanner declines (every bad one among them); tests
// hold the two to the same answers.
StatusOr<AttributionRequest> ParseModelRequestGeneral(std::string_view body, const std::vector<std::string>& classes,
                                                      const RequestLimits& limits);

// The parser's pieces, shared with the /v1 request (common/attributions.h):
// an img_data value (H x W x C or H x W integers 0..255) and a class given
// by name or index; `field` names the member in messages.
StatusOr<Image> ReadImageJson(const nlohmann::json& rows, const RequestLimits& limits);
StatusOr<int> ReadTargetJson(const nlohmann::json& target, const std::vector<std::string>& classes,
                             const std::string& field = "target_class");

// Checks n_steps and method together (Riemann rules need n_steps >= 2).
Status ValidateSteps(int n_steps, Method method, const RequestLimits& limits);

}  // namespace intgrads
