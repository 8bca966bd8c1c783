// BiT (Kolesnikov et al. 2019): a pre-activation ResNet v2 with
// weight-standardized convolutions and GroupNorm. Key names follow the
// public BiT PyTorch code (compat.md). Weight standardization depends only
// on the weights, so it is done once at load instead of in every forward.
#include <cstdio>

#include "worker/models/model.h"

namespace intgrads {

namespace {

constexpr int kGroups = 32;
constexpr double kGroupNormEps = 1e-5;

std::string UnitPrefix(int block, int unit) {
  char name[64];
  std::snprintf(name, sizeof(name), "body.block%d.unit%02d.", block, unit);
  return name;
}

// w <- (w - mean) / sqrt(var + 1e-10), over (in, kh, kw), biased variance.
torch::Tensor StandardizeBit(const torch::Tensor& w) {
  auto [var, mean] = torch::var_mean(w, {1, 2, 3}, /*unbiased=*/false, /*keepdim=*/true);
  return ((w - mean) / torch::sqrt(var + 1e-10)).contiguous();
}

// GroupNorm, then ReLU, in float32 when the model runs in bfloat16 (To), as
// torch.autocast runs group_norm (GroupNormRelu).
torch::Tensor NormRelu(const torch::Tensor& y, const torch::Tensor& weight, const torch::Tensor& bias) {
  return GroupNormRelu(y, kGroups, weight, bias, kGroupNormEps);
}

struct Unit {
  torch::Tensor gn1_w, gn1_b, gn2_w, gn2_b, gn3_w, gn3_b;
  PackedConv conv1, conv2, conv3, downsample;
};

class Bit final : public Classifier {
 public:
  Bit(const BitConfig& config, const Weights& w) : config_(config) {
    root_ = PackedConv(StandardizeBit(w.at("root.conv.weight")), 2, 3);
    for (int b = 0; b < 4; ++b) {
      for (int u = 1; u <= config.units[b]; ++u) {
        const std::string p = UnitPrefix(b + 1, u);
        Unit unit;
        const int stride = (b > 0 && u == 1) ? 2 : 1;
        unit.gn1_w = w.at(p + "gn1.weight");
        unit.gn1_b = w.at(p + "gn1.bias");
        unit.conv1 = PackedConv(StandardizeBit(w.at(p + "conv1.weight")), 1, 0);
        unit.gn2_w = w.at(p + "gn2.weight");
        unit.gn2_b = w.at(p + "gn2.bias");
        unit.conv2 = PackedConv(StandardizeBit(w.at(p + "conv2.weight")), stride, 1);
        unit.gn3_w = w.at(p + "gn3.weight");
        unit.gn3_b = w.at(p + "gn3.bias");
        unit.conv3 = PackedConv(StandardizeBit(w.at(p + "conv3.weight")), 1, 0);
        if (w.count(p + "downsample.weight")) {
          unit.downsample = PackedConv(StandardizeBit(w.at(p + "downsample.weight")), stride, 0);
        }
        units_.push_back(std::move(unit));
      }
    }
    head_gn_w_ = w.at("head.gn.weight");
    head_gn_b_ = w.at("head.gn.bias");
    head_conv_w_ = w.at("head.conv.weight");
    head_conv_b_ = w.at("head.conv.bias");
    const int depth = config.units[2] == 6 ? 50 : config.units[2] == 23 ? 101 : config.units[2] == 36 ? 152 : 0;
    info_.family = ModelFamily::kBit;
    info_.variant = (depth ? "R" + std::to_string(depth) : "R?") + "x" + std::to_string(config.width);
    info_.normalization = FamilyNormalization(ModelFamily::kBit);
    info_.classes = DefaultClassNames(config.num_classes);
    for (const auto& [key, t] : w) info_.num_parameters += t.numel();
  }

  torch::Tensor Forward(const torch::Tensor& x) const override {
    torch::Tensor y = root_(x);
    y = torch::constant_pad_nd(y, {1, 1, 1, 1}, 0);
    y = MaxPool2d(y, 3, 2, 0);
    for (const Unit& u : units_) {
      torch::Tensor a = NormRelu(y, u.gn1_w, u.gn1_b);
      torch::Tensor shortcut = u.downsample.defined() ? u.downsample(a) : y;
      torch::Tensor h = u.conv1(a);
      h = NormRelu(h, u.gn2_w, u.gn2_b);
      h = u.conv2(h);
      h = NormRelu(h, u.gn3_w, u.gn3_b);
      y = u.conv3(h) + shortcut;
    }
    y = NormRelu(y, head_gn_w_, head_gn_b_);
    y = torch::mean(y, {2, 3}, /*keepdim=*/true);
    y = torch::conv2d(y, head_conv_w_, head_conv_b_);
    return y.flatten(1);
  }

  void To(const torch::TensorOptions& options) override {
    NoteDtype(options);
    auto move = [](torch::Tensor& t, const torch::TensorOptions& to) {
      if (t.defined()) t = t.to(to);
    };
    // GroupNorm's parameters stay float32 under bfloat16 (NormRelu).
    const bool reduced = options.has_dtype() && options.dtype() == torch::kBFloat16;
    const torch::TensorOptions norm = reduced ? options.dtype(torch::kFloat32) : options;
    root_.To(options);
    for (Unit& u : units_) {
      for (torch::Tensor* t : {&u.gn1_w, &u.gn1_b, &u.gn2_w, &u.gn2_b, &u.gn3_w, &u.gn3_b}) move(*t, norm);
      for (PackedConv* c : {&u.conv1, &u.conv2, &u.conv3, &u.downsample}) c->To(options);
    }
    for (torch::Tensor* t : {&head_gn_w_, &head_gn_b_}) move(*t, norm);
    for (torch::Tensor* t : {&head_conv_w_, &head_conv_b_}) move(*t, options);
  }

 private:
  BitConfig config_;
  PackedConv root_;
  std::vector<Unit> units_;
  torch::Tensor head_gn_w_, head_gn_b_, head_conv_w_, head_conv_b_;
};

}  // namespace

KeyShapes BitKeys(const BitConfig& c) {
  const int64_t wf = c.width;
  KeyShapes keys;
  keys.push_back({"root.conv.weight", {64 * wf, 3, 7, 7}});
  int64_t cin = 64 * wf;
  for (int b = 0; b < 4; ++b) {
    const int64_t cout = 256 * wf << b;
    const int64_t cmid = 64 * wf << b;
    for (int u = 1; u <= c.units[b]; ++u) {
      const std::string p = UnitPrefix(b + 1, u);
      const int stride = (b > 0 && u == 1) ? 2 : 1;
      keys.push_back({p + "gn1.weight", {cin}});
      keys.push_back({p + "gn1.bias", {cin}});
      keys.push_back({p + "conv1.weight", {cmid, cin, 1, 1}});
      keys.push_back({p + "gn2.weight", {cmid}});
      keys.push_back({p + "gn2.bias", {cmid}});
      keys.push_back({p + "conv2.weight", {cmid, cmid, 3, 3}});
      keys.push_back({p + "gn3.weight", {cmid}});
      keys.push_back({p + "gn3.bias", {cmid}});
      keys.push_back({p + "conv3.weight", {cout, cmid, 1, 1}});
      if (stride != 1 || cin != cout) keys.push_back({p + "downsample.weight", {cout, cin, 1, 1}});
      cin = cout;
    }
  }
  keys.push_back({"head.gn.weight", {2048 * wf}});
  keys.push_back({"head.gn.bias", {2048 * wf}});
  keys.push_back({"head.conv.weight", {c.num_classes, 2048 * wf, 1, 1}});
  keys.push_back({"head.conv.bias", {c.num_classes}});
  return keys;
}

StatusOr<std::unique_ptr<Classifier>> LoadBit(const StateDict& weights) {
  Weights w(weights.begin(), weights.end());
  auto root = w.find("root.conv.weight");
  auto head = w.find("head.conv.weight");
  if (root == w.end() || head == w.end() || root->second.dim() != 4 || head->second.dim() != 4) {
    return InvalidError(
        "not a BiT checkpoint: expected keys root.conv.weight and head.conv.weight "
        "(with or without 'module.'), found " +
        std::to_string(weights.size()) + " keys starting with '" +
        (weights.empty() ? std::string() : weights.front().first) + "'");
  }
  BitConfig config;
  if (root->second.size(0) < 64)
    return InvalidError("not a BiT checkpoint: root.conv.weight has fewer than 64 channels");
  ASSIGN_OR_RETURN(config.width, CheckpointDimension(root->second.size(0) / 64, 1 << 10,
                                                     "BiT width (root.conv.weight's channels / 64)"));
  ASSIGN_OR_RETURN(config.num_classes,
                   CheckpointDimension(head->second.size(0), kMaxClasses, "classes (head.conv.weight's first size)"));
  for (int b = 0; b < 4; ++b) {
    int u = 0;
    while (w.count(UnitPrefix(b + 1, u + 1) + "conv1.weight")) ++u;
    config.units[b] = u;
  }
  RETURN_IF_ERROR(CheckKeys(BitKeys(config), weights,
                            "BiT (width " + std::to_string(config.width) + ", units " +
                                std::to_string(config.units[0]) + "/" + std::to_string(config.units[1]) + "/" +
                                std::to_string(config.units[2]) + "/" + std::to_string(config.units[3]) + ")"));
  for (auto& [key, t] : w) {
    if (!t.is_floating_point()) return InvalidError("BiT weight " + key + " is not floating point");
    t = t.to(torch::kFloat32).contiguous();
  }
  auto model = std::make_unique<Bit>(config, w);
  return std::unique_ptr<Classifier>(std::move(model));
}

}  // namespace intgrads
