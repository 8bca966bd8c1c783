#include "worker/models/model.h"

#include <torch/autograd.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/request.h"

extern "C" const char intgrads_default_model_begin[];
extern "C" const char intgrads_default_model_end[];

namespace intgrads {

const std::vector<FamilySpec>& ModelFamilies() {
  static const std::vector<FamilySpec> families = {
      {ModelFamily::kBit, "bit", {"--bit-path", "-bp"}, {{0.5F, 0.5F, 0.5F}, {0.5F, 0.5F, 0.5F}}, LoadBit, nullptr},
      {ModelFamily::kLanet,
       "lanet",
       {"--lanet-path", "-lp", "-lb"},
       {{0.49139968F, 0.48215827F, 0.44653124F}, {0.24703233F, 0.24348505F, 0.26158768F}},
       LoadLanet,
       nullptr},
      {ModelFamily::kTorchScript,
       "torchscript",
       {"--model"},
       {{0.0F, 0.0F, 0.0F}, {1.0F, 1.0F, 1.0F}},
       nullptr,
       LoadTorchScript},
  };
  return families;
}

const FamilySpec& FamilyOf(ModelFamily family) {
  const auto& families = ModelFamilies();
  return *std::find_if(families.begin(), families.end(), [family](const FamilySpec& f) { return f.family == family; });
}

const FamilySpec* FindFamily(std::string_view name) {
  for (const FamilySpec& f : ModelFamilies()) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

const char* FamilyName(ModelFamily family) { return FamilyOf(family).name; }

Normalization FamilyNormalization(ModelFamily family) { return FamilyOf(family).normalization; }

std::vector<std::string> DefaultClassNames(int num_classes) {
  if (num_classes == static_cast<int>(Cifar10Classes().size())) return Cifar10Classes();
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(std::max(0, num_classes)));
  for (int i = 0; i < num_classes; ++i) names.push_back("class_" + std::to_string(i));
  return names;
}

StatusOr<int> CheckpointDimension(int64_t value, int64_t most, const std::string& what) {
  if (value < 1 || value > most) {
    return InvalidError(what + ": " + std::to_string(value) + " is outside 1.." + std::to_string(most));
  }
  return static_cast<int>(value);
}

namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// "a, b, c and 12 more"
std::string Summarize(const std::vector<std::string>& names) {
  constexpr size_t kShown = 5;
  std::string s;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > kShown) s += " and " + std::to_string(names.size() - kShown) + " more";
  return s;
}

}  // namespace

torch::Tensor ChannelsLastOnCpu(const torch::Tensor& x) {
  return x.device().is_cpu() && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

namespace {

// A stride-1 convolution with a packed weight (PackWeights). On a 1 x 1 map
// (a 1 x 1 kernel, no padding) the batch is laid out as the width of one
// image: [N, C, 1, 1] as [1, C, N, 1]. oneDNN's 1 x 1 kernels block over the
// pixels of an image: with one pixel an image BiT's last units ran at 110-120
// GFLOP/s on the build machine, laid out this way at about 180.
torch::Tensor PackedConvolution(const torch::Tensor& x, const torch::Tensor& packed, int64_t padding) {
  if (padding == 0 && x.dim() == 4 && x.size(2) == 1 && x.size(3) == 1 && x.size(0) > 1) {
    const int64_t n = x.size(0), c = x.size(1);
    const torch::Tensor wide = x.reshape({n, c}).t().contiguous().view({1, c, n, 1});
    const torch::Tensor y = at::mkldnn_convolution(wide, packed, {}, {0, 0}, {1, 1}, {1, 1}, 1);
    const int64_t k = y.size(1);
    return y.view({k, n}).t().contiguous().view({n, k, 1, 1});
  }
  return at::mkldnn_convolution(x.contiguous(), packed, {}, {padding, padding}, {1, 1}, {1, 1}, 1);
}

// y = conv(x, forward) with the padding given; the input gradient is
// conv(dy, backward) with the padding that undoes it. Both weights packed.
struct PackedConvFunction : public torch::autograd::Function<PackedConvFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& forward, const torch::Tensor& backward, int64_t padding,
                               int64_t back_padding) {
    ctx->saved_data["backward"] = backward;
    ctx->saved_data["padding"] = back_padding;
    return PackedConvolution(x.detach(), forward, padding);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor backward = ctx->saved_data["backward"].toTensor();
    const int64_t padding = ctx->saved_data["padding"].toInt();
    return {PackedConvolution(grads[0], backward, padding), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// oneDNN's blocked copy of stride-1 convolution weights, for `padding`.
torch::Tensor PackWeights(const torch::Tensor& weight, int64_t padding) {
  return at::mkldnn_reorder_conv2d_weight(weight.contiguous().to_mkldnn(), {padding, padding}, {1, 1}, {1, 1}, 1);
}

// The packed weight of a stride-1 convolution's input gradient: the kernel
// transposed and flipped, for the padding kh - 1 - padding that undoes the
// forward pass's.
torch::Tensor PackInputGradient(const torch::Tensor& weight, int64_t padding) {
  return PackWeights(weight.transpose(0, 1).flip({2, 3}), weight.size(2) - 1 - padding);
}

// The kernel of a stride-s convolution for the space-to-depth layout, where
// each s x s block of pixels is one pixel of s * s * C channels, ordered (row
// in the block, column, channel): zero-padded to a multiple of s and
// rearranged likewise. The strided convolution is the stride-1 convolution of
// the rearranged input (padded) with it.
torch::Tensor SpaceToDepthKernel(const torch::Tensor& weight, int64_t stride) {
  const int64_t out = weight.size(0), in = weight.size(1), k = weight.size(2);
  const int64_t blocks = (k + stride - 1) / stride;
  const torch::Tensor padded = torch::constant_pad_nd(weight, {0, blocks * stride - k, 0, blocks * stride - k});
  return padded.view({out, in, blocks, stride, blocks, stride})
      .permute({0, 3, 5, 1, 2, 4})
      .reshape({out, stride * stride * in, blocks, blocks});
}

// y = conv(x, weight) with stride s > 1, plainly; its input gradient through
// the space-to-depth layout, as a stride-1 convolution of dy with `backward`
// (PackInputGradient of SpaceToDepthKernel's kernel, padding blocks - 1),
// rearranged back into pixels and cropped to x. oneDNN's own
// input gradient of a strided kernel over few channels is slow (BiT's root,
// 7 x 7 of stride 2 over 3 channels). The forward pass stays oneDNN's, so its rounding is unchanged:
// BiT's first GroupNorm, at the path's small scales, amplifies it.
struct SpaceToDepthGradFunction : public torch::autograd::Function<SpaceToDepthGradFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& backward, int64_t stride,
                               int64_t padding) {
    ctx->saved_data["backward"] = backward;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["height"] = x.size(2);
    ctx->saved_data["width"] = x.size(3);
    return torch::conv2d(x.detach(), weight, {}, stride, padding);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor backward = ctx->saved_data["backward"].toTensor();
    const int64_t stride = ctx->saved_data["stride"].toInt(), padding = ctx->saved_data["padding"].toInt();
    const int64_t height = ctx->saved_data["height"].toInt(), width = ctx->saved_data["width"].toInt();
    const torch::Tensor blocks = PackedConvolution(grads[0], backward, backward.size(2) - 1);
    const int64_t n = blocks.size(0), c = blocks.size(1) / (stride * stride), h = blocks.size(2), w = blocks.size(3);
    const torch::Tensor pixels =
        blocks.view({n, stride, stride, c, h, w}).permute({0, 3, 4, 1, 5, 2}).reshape({n, c, h * stride, w * stride});
    // Crop the padding; rows past the last one any output read get no gradient (zeros).
    const torch::Tensor dx = torch::constant_pad_nd(
        pixels, {-padding, width + padding - w * stride, -padding, height + padding - h * stride});
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

PackedConv::Pair PackedConv::Pair::Of(const torch::Tensor& weight, int64_t padding) {
  return {PackWeights(weight, padding), PackInputGradient(weight, padding), padding, weight.size(2) - 1 - padding};
}

torch::Tensor PackedConv::Pair::operator()(const torch::Tensor& x) const {
  return PackedConvFunction::apply(x, forward, backward, padding, back_padding);
}

PackedConv::PackedConv(const torch::Tensor& weight, int64_t stride, int64_t padding)
    : weight_(weight), stride_(stride), padding_(padding), kernel_(weight.size(2)) {
  Pack(weight);
}

void PackedConv::Pack(const torch::Tensor& weight) {
  const bool square = weight.dim() == 4 && weight.size(2) == weight.size(3);
  const bool dtype = weight.scalar_type() == torch::kFloat32 || weight.scalar_type() == torch::kBFloat16;
  if (!at::hasMKLDNN() || !square || !weight.device().is_cpu() || !dtype) return;
  if (stride_ == 1 || (kernel_ == 1 && padding_ == 0)) {
    // Stride 1; or a strided 1 x 1, which reads the input's strided slice.
    if (2 * padding_ > kernel_ - 1) return;
    whole_ = Pair::Of(weight, padding_);
    if (stride_ == 1 && kernel_ == 3 && padding_ == 1) centre_ = Pair::Of(weight.slice(2, 1, 2).slice(3, 1, 2), 0);
    weight_ = torch::Tensor();  // kept packed only: To unpacks
  } else if (stride_ == 2 && kernel_ == 3 && padding_ == 1) {
    // On a 2 x 2 map the one output reads taps (1..2, 1..2) of the four
    // pixels: a 1 x 1 convolution of the pixels' channels side by side.
    const int64_t out = weight.size(0), in = weight.size(1);
    corner_ = Pair::Of(weight.slice(2, 1, 3).slice(3, 1, 3).permute({0, 2, 3, 1}).reshape({out, 4 * in, 1, 1}), 0);
  } else if (stride_ > 1 && kernel_ >= 5) {
    space_ = PackInputGradient(SpaceToDepthKernel(weight, stride_), 0);
  }
}

torch::Tensor PackedConv::operator()(const torch::Tensor& x) const {
  const torch::Tensor& pack = packed() ? whole_.forward : corner_.defined() ? corner_.forward : space_;
  if (!pack.defined() || !x.device().is_cpu() || x.scalar_type() != pack.scalar_type() || x.is_mkldnn()) {
    return torch::conv2d(x, weight_.defined() ? weight_ : whole_.forward.to_dense(), {}, stride_, padding_);
  }
  if (centre_.defined() && x.size(2) == 1 && x.size(3) == 1) return centre_(x);
  if (packed()) return whole_(stride_ == 1 ? x : x.slice(2, 0, x.size(2), stride_).slice(3, 0, x.size(3), stride_));
  if (corner_.defined() && x.size(2) == 2 && x.size(3) == 2)
    return corner_(x.permute({0, 2, 3, 1}).reshape({x.size(0), 4 * x.size(1), 1, 1}));
  if (space_.defined()) return SpaceToDepthGradFunction::apply(x, weight_, space_, stride_, padding_);
  return torch::conv2d(x, weight_, {}, stride_, padding_);
}

void PackedConv::To(const torch::TensorOptions& options) {
  torch::Tensor weight = weight_.defined() ? weight_ : packed() ? whole_.forward.to_dense() : torch::Tensor();
  if (!weight.defined()) return;
  weight = weight.to(options);
  weight_ = weight;
  whole_ = centre_ = corner_ = Pair();
  space_ = torch::Tensor();
  Pack(weight);
}

Status CheckKeys(const KeyShapes& expected, const StateDict& weights, const std::string& what) {
  std::map<std::string, c10::IntArrayRef> found;
  for (const auto& [key, tensor] : weights) found.emplace(key, tensor.sizes());
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> known;
  for (const auto& [key, shape] : expected) {
    known.insert(key);
    auto it = found.find(key);
    if (it == found.end()) {
      missing.push_back(key);
    } else if (it->second != c10::IntArrayRef(shape)) {
      mismatched.push_back(key + " (expected " + ShapeString(shape) + ", found " + ShapeString(it->second) + ")");
    }
  }
  for (const auto& [key, tensor] : weights) {
    if (!known.count(key)) unexpected.push_back(key);
  }
  if (missing.empty() && mismatched.empty() && unexpected.empty()) return Status::Ok();
  std::string message = "checkpoint does not fit " + what + ":";
  if (!missing.empty()) message += " " + std::to_string(missing.size()) + " missing keys (" + Summarize(missing) + ");";
  if (!unexpected.empty()) {
    message += " " + std::to_string(unexpected.size()) + " unexpected keys (" + Summarize(unexpected) + ");";
  }
  if (!mismatched.empty()) {
    message += " " + std::to_string(mismatched.size()) + " shape mismatches (" + Summarize(mismatched) + ");";
  }
  message.pop_back();
  return InvalidError(message);
}

StatusOr<std::unique_ptr<Classifier>> LoadModel(ModelFamily family, const StateDict& weights) {
  const FamilySpec& spec = FamilyOf(family);
  if (spec.load_weights == nullptr) {
    return InvalidError(std::string("a ") + spec.name + " model is a file, not a state dict");
  }
  return spec.load_weights(weights);
}

namespace {

// A parsed torch.save file -> the family's classifier; errors name `source`.
StatusOr<std::unique_ptr<Classifier>> LoadParsed(ModelFamily family, const StatusOr<PickleValuePtr>& root,
                                                 const std::string& source) {
  if (!root.ok()) return root.status();
  ASSIGN_OR_RETURN(StateDict weights, ExtractStateDict(*root.value(), source));
  auto model = LoadModel(family, weights);
  if (!model.ok()) return Status(model.status().code(), source + ": " + model.status().message());
  return model;
}

}  // namespace

StatusOr<std::unique_ptr<Classifier>> LoadModelFile(ModelFamily family, const std::string& path) {
  const FamilySpec& spec = FamilyOf(family);
  if (spec.load_file != nullptr) return spec.load_file(path);
  return LoadParsed(family, LoadTorchFile(path), path);
}

std::string_view DefaultModelBytes() {
  return {intgrads_default_model_begin, static_cast<size_t>(intgrads_default_model_end - intgrads_default_model_begin)};
}

StatusOr<std::unique_ptr<Classifier>> LoadDefaultModel() {
  const std::string source = "the embedded default model";
  return LoadParsed(ModelFamily::kLanet, ParseTorchFile(DefaultModelBytes(), source), source);
}

}  // namespace intgrads
