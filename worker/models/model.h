// The image classifiers a worker serves. A Classifier is immutable once
// loaded: Forward never changes it, so requests cannot disturb each other
// (the original left LaNet in training mode; compat.md, Fix).
//
//   ASSIGN_OR_RETURN(auto model, LoadModelFile(ModelFamily::kBit, "bit.pth"));
//   torch::Tensor logits = model->Forward(batch);  // N x 3 x 32 x 32 -> N x classes
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/image.h"
#include "common/status.h"
#include "common/torchio/torch_file.h"

namespace intgrads {

enum class ModelFamily { kBit, kLanet, kTorchScript };

class Classifier;

// A model family's entry in the registry: what the flags, $INTGRADS_MODEL,
// the ready message and the loaders read. Adding a family is a row here and
// its own file (worker/models/bit.cc, lanet.cc, torchscript.cc).
struct FamilySpec {
  ModelFamily family;
  const char* name;                // "bit": $INTGRADS_MODEL's FAMILY, the ready message
  std::vector<const char*> flags;  // the flags naming its file, the long one first ("--bit-path", "-bp")
  Normalization normalization;     // what its checkpoints were trained with (TorchScript: its sidecar's)
  // A torch.save state dict to the model; nullptr for a family whose file is
  // no state dict (TorchScript), which `load_file` reads instead.
  StatusOr<std::unique_ptr<Classifier>> (*load_weights)(const StateDict& weights);
  StatusOr<std::unique_ptr<Classifier>> (*load_file)(const std::string& path);
};
const std::vector<FamilySpec>& ModelFamilies();
const FamilySpec& FamilyOf(ModelFamily family);
const FamilySpec* FindFamily(std::string_view name);  // by name; nullptr for none

const char* FamilyName(ModelFamily family);
Normalization FamilyNormalization(ModelFamily family);
// CIFAR-10's names for 10 classes, else "class_0", "class_1", ...
std::vector<std::string> DefaultClassNames(int num_classes);

// The most classes a model may have (ImageNet-21k has 21,843): the count is
// read off a checkpoint's shapes, and sizes the class names, every answer's
// probabilities and the ready message.
constexpr int64_t kMaxClasses = 100000;
// A size read off a checkpoint's tensor (classes, channels), checked to lie
// in 1..most before it sizes anything.
StatusOr<int> CheckpointDimension(int64_t value, int64_t most, const std::string& what);

struct ModelInfo {
  ModelFamily family = ModelFamily::kBit;
  std::string variant;  // "R50x1", "C16-L8-aux", ...
  std::vector<std::string> classes;
  Normalization normalization;
  int input_size = 32;
  int64_t num_parameters = 0;
};

class Classifier {
 public:
  virtual ~Classifier() = default;
  // x: N x 3 x S x S, normalized. Returns N x num_classes logits (eval mode).
  virtual torch::Tensor Forward(const torch::Tensor& x) const = 0;
  // Moves the weights to the device and/or dtype that `options` set (a
  // torch::Device converts to options); what `options` leaves unset stays.
  virtual void To(const torch::TensorOptions& options) = 0;
  const ModelInfo& info() const { return info_; }
  // The dtype of the weights, and so of the passes (the engine casts path
  // points to it): float32 unless To set another.
  torch::ScalarType dtype() const { return dtype_; }

 protected:
  // For To: records the dtype `options` sets, if any.
  void NoteDtype(const torch::TensorOptions& options) {
    if (options.has_dtype()) dtype_ = options.dtype().toScalarType();
  }
  ModelInfo info_;
  torch::ScalarType dtype_ = torch::kFloat32;
};

// A 4-D CPU tensor in channels-last (a copy unless it is already); any
// other tensor as it is.
torch::Tensor ChannelsLastOnCpu(const torch::Tensor& x);

// The grain of at::parallel_for for this directory's own loops, which hand
// it items of `values` values each (a pixel's channels, an output row, a
// GroupNorm group): tasks of at least 16 Ki values.
inline int64_t ParallelGrain(int64_t values) {
  constexpr int64_t kValuesPerTask = int64_t{1} << 14;
  return std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(1, values));
}

// torch::max_pool2d(x, kernel, stride, padding), plus `plus` where defined
// (a sum after the pool, as LaNet's cells take it), faster on a CPU. A 3 x 3
// window on float32 runs through loops of our own (max_pool.cc), the sum
// fused: they keep a byte an output for the backward pass where torch keeps
// an int64 index and scatters into a zeroed map, and LibTorch 1.13's NCHW
// kernel is scalar. Other pools run through torch's channels-last kernel,
// several times faster than its NCHW one.
// Values, picks (the first maximum in the window, ties and NaN included) and
// so gradients are torch's to the bit (engine_test.cc). The result keeps the
// input's memory format.
torch::Tensor MaxPool2d(const torch::Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                        const torch::Tensor& plus = {});

// relu(torch::cat(parts, 1)) without the concatenation (LaNet's cell outputs,
// which only the next cells' ReLUs read). On float32 CPU tensors of one shape
// but their channels (worker/kernels/concat_relu.cc): one pass forward, writing the
// ReLU channels-last, and one backward, writing each part's gradient as a
// tensor of its own: torch's backward pass would hand each part a channel
// slice of one gradient, strided in channels-last, which the convolutions'
// backward passes then copy. The same values and gradients as torch's, NaN
// included. Anywhere else, torch's two operations.
torch::Tensor ConcatRelu(const std::vector<torch::Tensor>& parts);

// relu(group_norm(x, groups, weight, bias, eps)), with the statistics and the
// normalization in float32 whatever x's dtype (bfloat16 under --bf16: BiT's
// GroupNorm parameters stay float32, as torch.autocast runs group_norm). On a
// CPU, with constant float32 parameters (worker/kernels/group_norm.cc): x in bfloat16,
// one pass over the data forward and one backward, with no casts around it and
// no separate ReLU; x in float32 and requiring a gradient, torch's GroupNorm
// forward (Captum's rounding to the bit, which BiT's GroupNorms amplify on the
// reference: docs/PERFORMANCE.md), ReLU in place, and one pass backward.
// Anywhere else, torch's GroupNorm in the parameters' dtype, then ReLU.
torch::Tensor GroupNormRelu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                            const torch::Tensor& bias, double eps);

// A convolution without bias, given its weights (K x C x kh x kw), stride and
// padding. On a CPU in float32 or bfloat16, oneDNN's blocked copies of the
// weights are made once, here, where torch::conv2d makes one on every call:
// one for the forward pass, and one for the input gradient, which for stride
// 1 is the convolution of the output gradient with the weights transposed and
// flipped, padding kh - 1 - padding. Exact rewrites put more of BiT's
// convolutions on small maps on that path:
// - a 1 x 1 convolution of stride s is the stride-1 one of the input's
//   strided slice;
// - a 3 x 3 with padding 1 on a 1 x 1 map reads only its centre tap: the
//   1 x 1 convolution of that tap (BiT's last units at 32 x 32);
// - a 3 x 3 of stride 2 and padding 1 on a 2 x 2 map has one output, which
//   reads taps (1..2, 1..2) of the four pixels: a 1 x 1 convolution of the
//   pixels' channels side by side (BiT's last block's first unit);
// - a strided kernel of 5 or more (BiT's root, 7 x 7 of stride 2) keeps
//   oneDNN's forward pass and takes its input gradient through the
//   space-to-depth layout, as a stride-1 convolution (worker/models/model.cc);
// - and any of these that ends on a 1 x 1 map, forward or backward, runs
//   with the batch laid out as one image's width ([N, C, 1, 1] as
//   [1, C, N, 1]), where oneDNN's 1 x 1 kernel has pixels to block over.
// Only input gradients flow: the weights are constants. Anywhere else (a
// 3 x 3 of stride 2 on a larger map, another dtype or device after To, a
// LibTorch without oneDNN) it is torch::conv2d. Measured in
// docs/PERFORMANCE.md; the same values to float32 rounding
// (Models.PackedConvIsTheConvolution).
class PackedConv {
 public:
  PackedConv() = default;
  PackedConv(const torch::Tensor& weight, int64_t stride, int64_t padding);
  torch::Tensor operator()(const torch::Tensor& x) const;
  void To(const torch::TensorOptions& options);
  bool defined() const { return weight_.defined() || packed(); }
  bool packed() const { return whole_.defined(); }

 private:
  // A stride-1 convolution's two packed weights: the forward one, and the
  // input gradient's (transposed and flipped, padding kh - 1 - padding).
  struct Pair {
    static Pair Of(const torch::Tensor& weight, int64_t padding);
    torch::Tensor operator()(const torch::Tensor& x) const;
    bool defined() const { return forward.defined(); }
    torch::Tensor forward, backward;
    int64_t padding = 0, back_padding = 0;
  };
  void Pack(const torch::Tensor& weight);
  torch::Tensor weight_;  // unpacked
  Pair whole_;            // the whole kernel
  Pair centre_;           // its centre tap, for a 1 x 1 map
  Pair corner_;           // stride 2 on a 2 x 2 map: the four pixels' taps
  torch::Tensor space_;   // a large strided kernel's input gradient, packed (SpaceToDepthGradFunction)
  int64_t stride_ = 1, padding_ = 0, kernel_ = 1;
};

// The keys and shapes a family's state dict must have.
using KeyShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Named weights, looked up by state-dict key.
using Weights = std::unordered_map<std::string, torch::Tensor>;

// Checks `weights` against `expected`: every key present with its shape and
// nothing else. The error lists missing, unexpected and mismatched keys.
Status CheckKeys(const KeyShapes& expected, const StateDict& weights, const std::string& what);

StatusOr<std::unique_ptr<Classifier>> LoadBit(const StateDict& weights);
StatusOr<std::unique_ptr<Classifier>> LoadLanet(const StateDict& weights);
StatusOr<std::unique_ptr<Classifier>> LoadModel(ModelFamily family, const StateDict& weights);
// A torch.save checkpoint of BiT or LaNet, or a TorchScript file (LoadTorchScript).
StatusOr<std::unique_ptr<Classifier>> LoadModelFile(ModelFamily family, const std::string& path);

// Bring your own model: a TorchScript file (torch::jit::load) that maps
// N x 3 x S x S normalized images to N x classes logits, and its sidecar
// (model.pt -> model.json, else model.pt.json):
//   {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
//    "classes": ["tench", "goldfish", ...], "name": "resnet18"}
// mean and std (per channel, on pixels scaled to [0, 1]) default to 0 and 1;
// name, to "torchscript". A forward pass on a blank image at load checks the
// number of logits against the classes. The file is code: load only files you
// trust (docs/PROGRAMS.md).
constexpr int kMaxModelInputSize = 1024;
StatusOr<ModelInfo> ParseModelSidecar(const std::string& text, const std::string& source);
StatusOr<std::unique_ptr<Classifier>> LoadTorchScript(const std::string& path);

// The project's own CIFAR-10 LaNet (models/README.md), trained by
// `intgrads-images train` and compiled into the programs: what a worker
// serves when no model flag is given. DefaultModelBytes() is the torch.save
// file, read by the same reader as users' checkpoints.
std::string_view DefaultModelBytes();
StatusOr<std::unique_ptr<Classifier>> LoadDefaultModel();

struct BitConfig {
  std::array<int, 4> units{3, 4, 6, 3};
  int width = 1;
  int num_classes = 10;
};
KeyShapes BitKeys(const BitConfig& config);

struct LanetConfig {
  int channels = 128;  // C
  int layers = 24;
  bool auxiliary = true;
  int num_classes = 10;
};
KeyShapes LanetKeys(const LanetConfig& config);

// A LaNet being trained (intgrads-images train): the served network's code in
// training mode. BatchNorm uses batch statistics and updates its running ones;
// the 1x1 weights are standardized in every pass, so gradients reach the raw
// weights. State() is a state dict that LoadLanet serves.
class TrainableLanet {
 public:
  virtual ~TrainableLanet() = default;
  virtual torch::Tensor Forward(const torch::Tensor& x) = 0;
  virtual std::vector<torch::Tensor> Parameters() const = 0;
  virtual StateDict State() const = 0;
};

// Initialized from torch's global generator (seed it first for repeatable runs).
std::unique_ptr<TrainableLanet> NewTrainableLanet(const LanetConfig& config);

}  // namespace intgrads
