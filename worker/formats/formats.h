// An attribution written in the formats a client may ask for
// (common/protocol.h, PayloadFormats):
//
//   gzip  the original's gzip'd torch.save dict (EncodeAttribution)
//   npz   numpy's archive: one .npy per key of that dict, plus input (the
//         normalized image the model saw), probabilities and
//         convergence_delta (numpy.load reads it)
//   json  the same arrays as nested lists of numbers, plus the class names,
//         the predicted class and the method (about 10 bytes per number,
//         several times the gzip's size; docs/API.md)
//   png   the IG heatmap over the input at the model's input size, with a
//         colour scale and a caption naming the class and the delta, in our
//         colours or Captum's; with regions, the top regions by IDG instead
//         (EncodeRegionsPng)
// Off the original path (OnOriginalPath), gzip, npz and json also carry
// path_inputs and path_baselines.
#pragma once

#include <string>
#include <vector>

#include "common/image.h"
#include "common/status.h"
#include "worker/engine/engine.h"
#include "worker/engine/regions.h"

namespace intgrads {

struct Explanation {
  const Attribution* attribution = nullptr;
  const torch::Tensor* input = nullptr;  // 1 x 3 x S x S, normalized: x of the path
  const std::vector<std::string>* classes = nullptr;
  std::vector<double> probabilities;  // softmax of attribution->logits
  Method method = Method::kGaussLegendre;
  int n_steps = 0;
  const Regions* regions = nullptr;  // IDG for regions, when asked: json carries it, png draws it
};

// softmax(logits[0]) in double precision, and the most probable class.
std::vector<double> Probabilities(const torch::Tensor& logits);
int Predicted(const std::vector<double>& probabilities);

// A prediction (JobRequest::predict) in JSON: predicted_class,
// predicted_name, probabilities, classes and output (the logits, 1 x classes).
std::string EncodePrediction(const torch::Tensor& logits, const std::vector<double>& probabilities,
                             const std::vector<std::string>& classes);

std::string EncodeNpz(const Explanation& explanation);
std::string EncodeJson(const Explanation& explanation);
// How the heatmap draws (common/request.h, ValidateHeatmap): ours, `heatmap`
// signed (red positive, blue negative) or absolute (|IG|, black to yellow);
// or, with `sign`, Captum's (worker/formats/heatmap.h).
struct HeatmapStyle {
  Heatmap heatmap = Heatmap::kSigned;
  Sign sign = Sign::kNone;
  double outlier_perc = 2.0;
};
// `input` is the RGB image the model saw (input_size x input_size).
StatusOr<std::string> EncodeHeatmapPng(const Explanation& explanation, const Image& input,
                                       const HeatmapStyle& style = {});

// The `top` regions with the largest IDG dividends over the input (RGB, the
// model's input size), outlined and numbered by rank, green where IDG is
// positive and magenta where negative, with a caption.
StatusOr<std::string> EncodeRegionsPng(const Explanation& explanation, const Image& input, int top);

// What an encoder reads besides the explanation.
struct EncodeOptions {
  const Image* seen = nullptr;         // png: the RGB image the model saw (input_size x input_size)
  HeatmapStyle style;                  // png: the heatmap's look
  int top_regions = 5;                 // png with regions: the regions drawn
  int gzip_level = 0;                  // gzip: zlib's level (0: stored, the fastest)
  double* compress_seconds = nullptr;  // gzip: set to the seconds spent compressing
};
// Writes one attribution in one format. The registry has one per Format, in
// its order (common/vocabulary.h, PayloadFormats, names the formats):
//   gzip  the original's torch.save dict (EncodeAttribution), gzip'd
//   npz   EncodeNpz;  json  EncodeJson
//   png   EncodeRegionsPng with regions, else EncodeHeatmapPng
using Encoder = StatusOr<std::string> (*)(const Explanation& explanation, const EncodeOptions& options);
Encoder EncoderOf(Format format);

// Writes `text` into `canvas` (RGB) at (x, y) in a 5 x 7 bitmap font scaled
// by `scale`; letters are drawn upper case, unknown characters as '?'.
void DrawText(Image& canvas, int x, int y, const std::string& text, int scale, const uint8_t colour[3]);

}  // namespace intgrads
