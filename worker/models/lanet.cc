// LaNet (Wang, Fonseca, Tian: LaNAS), the DARTS-style NetworkCIFAR with the
// cell found by the LaNAS search, as the original server built it. Key names
// follow the public LaMCTS code (compat.md). Served in eval mode: BatchNorm
// uses its running statistics and drop-path is off, and the 1x1 convolutions
// of ReLUConvBN and SepConv, which are weight-standardized, are standardized
// once at load; every BatchNorm, then an affine map per channel, is folded
// into the convolution before it (a scaled weight and a bias), which saves
// its forward and backward passes (a fifth of LaNet's time). A TrainableLanet (for `intgrads-images train`) runs the
// same code in training mode: batch statistics, and standardization in every pass so that gradients reach the raw
// weights.
#include <torch/autograd.h>
#include <torch/nn/init.h>

#include <map>
#include <set>

#include "worker/models/model.h"

namespace intgrads {

namespace {

enum class OpType { kSepConv3, kMaxPool3, kSkip, kSepConv5 };

// The original server's architecture list: for node i, operations
// (arch[2i], arch[2i+1]) read inputs (arch[14+2i], arch[15+2i]); operations
// indexed in sep_conv_3x3, max_pool_3x3, skip_connect, sep_conv_5x5. The
// same cell serves as normal and reduction cell.
constexpr int kNodes = 7;
constexpr int kArch[4 * kNodes] = {2, 2, 0, 2, 1, 2, 0, 2, 2, 3, 2, 1, 2, 0, 0, 1, 1, 1, 2, 1, 1, 0, 3, 4, 3, 0, 3, 1};
constexpr double kBatchNormEps = 1e-5;

OpType OpAt(int i) { return static_cast<OpType>(kArch[i]); }

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
int InputOf(int i) { return kArch[2 * kNodes + i]; }

// States no node reads: the cell's output is their concatenation ([5, 6, 7, 8]).
std::vector<int> ConcatStates() {
  std::set<int> used;
  for (int i = 0; i < 2 * kNodes; ++i) used.insert(InputOf(i));
  std::vector<int> concat;
  for (int s = 2; s < kNodes + 2; ++s) {
    if (!used.count(s)) concat.push_back(s);
  }
  return concat;
}

constexpr double kBatchNormMomentum = 0.1;

// Training mode uses the batch's statistics and updates the running ones in place.
struct BatchNorm {
  torch::Tensor weight, bias, mean, var;
  torch::Tensor operator()(const torch::Tensor& x, bool train) const {
    return torch::batch_norm(x, weight, bias, mean, var, train, kBatchNormMomentum, kBatchNormEps, false);
  }
  // In eval mode BatchNorm is y = s x + (bias - mean s), s = weight / sqrt(var + eps), per channel: a
  // convolution w that feeds it is folded into w s and that bias. Channels [first, first + count) of the
  // BatchNorm (FactorizedReduce's two convolutions share one). Returns the bias; scales *w in place.
  torch::Tensor Fold(torch::Tensor* w, int64_t first, int64_t count) const {
    torch::NoGradGuard no_grad;
    const torch::Tensor scale = (weight / torch::sqrt(var + kBatchNormEps)).slice(0, first, first + count);
    *w = (*w * scale.view({-1, 1, 1, 1})).contiguous();
    return (bias.slice(0, first, first + count) - mean.slice(0, first, first + count) * scale).contiguous();
  }
};

// LaNet's Conv2d: w - mean over (in, kh, kw), divided by the unbiased std of
// the flattened weight plus 1e-5; the means are taken one dimension at a
// time, as the original code does, to give the same float32 numbers.
torch::Tensor StandardizeLanet(const torch::Tensor& w) {
  torch::Tensor mean = w.mean(1, true).mean(2, true).mean(3, true);
  torch::Tensor centered = w - mean;
  torch::Tensor std = centered.view({centered.size(0), -1}).std(1).view({-1, 1, 1, 1}) + 1e-5;
  return (centered / std.expand_as(centered)).contiguous();
}

// x (N, C, H, W), H and W even: (N, 2C, H / 2, W / 2) in channels-last, the
// channels of pixel (2i, 2j) then those of (2i + 1, 2j + 1) at (i, j). One
// strided view of x (pixel (2i + d, 2j + d) lies d (stride_h + stride_w) past
// pixel (2i, 2j)) made contiguous; its gradient is one strided copy into a
// zeroed map.
torch::Tensor DiagonalPairs(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2) / 2, w = x.size(3) / 2;
  const torch::Tensor pairs = x.as_strided({n, h, w, 2, c}, {x.stride(0), 2 * x.stride(2), 2 * x.stride(3),
                                                             x.stride(2) + x.stride(3), x.stride(1)})
                                  .contiguous();
  return pairs.view({n, h, w, 2 * c}).permute({0, 3, 1, 2});
}

// What the operations that read one state share, made by the first that
// needs it, kept for the backward pass and differentiated once: relu(state)
// (in a normal cell three SepConvs read state 1; a reduction cell's
// FactorizedReduces read it too), and DiagonalPairs of that ReLU (a reduction
// cell's three FactorizedReduces of state 1, and two of state 0).
struct Shared {
  torch::Tensor relu, pairs;
};

// One operation: SepConv, FactorizedReduce, ReLUConvBN, max-pool or identity.
struct Op {
  enum class Kind { kIdentity, kMaxPool, kSepConv, kFactorizedReduce, kReluConvBn } kind = Kind::kIdentity;
  int stride = 1;
  int padding = 0;
  // SepConv; pw1 also ReLUConvBN's conv, dw1/dw2 FactorizedReduce's conv_1/conv_2.
  // pw1 and pw2 are standardized already, except in training, where they are raw.
  torch::Tensor dw1, pw1, dw2, pw2;
  BatchNorm bn1, bn2;
  // Eval mode (FoldBatchNorms): the BatchNorms folded into the convolutions
  // before them, whose biases these are (b1, b2: of bn1, bn2; FactorizedReduce:
  // b1 for conv_1, b2 for conv_2).
  bool folded = false;
  torch::Tensor b1, b2;
  // Eval mode, FactorizedReduce: its two 1 x 1 stride-2 convolutions, of the
  // even pixels (2i, 2j) and of the odd ones (2i + 1, 2j + 1), as one 1 x 1
  // convolution in two groups (conv_1's weight, then conv_2's, and both
  // biases) over both pixels' channels side by side, gathered by one strided
  // view (DiagonalPairs): the same sums, without the concatenation or a
  // zero-filled map per slice in the backward pass. (A 2 x 2 stride-2 kernel
  // with zeros off the diagonal, as this was before, computed four times the
  // products: a tenth of LaNet-128/24's time.)
  torch::Tensor reduce_w, reduce_b;

  bool StartsWithRelu() const { return kind != Kind::kIdentity && kind != Kind::kMaxPool; }

  // `*shared`: what the readers of x share, its parts made here where undefined.
  torch::Tensor operator()(const torch::Tensor& x, Shared* shared, bool train) const {
    auto pw = [train](const torch::Tensor& w) { return train ? StandardizeLanet(w) : w; };
    auto norm = [&](const BatchNorm& bn, const torch::Tensor& y) { return folded ? y : bn(y, train); };
    // A cell's preprocess operations may get an undefined x with its ReLU made (Forward); nothing else may.
    TORCH_CHECK(x.defined() || (StartsWithRelu() && shared->relu.defined()), "LaNet: an operation without its input");
    if (StartsWithRelu() && !shared->relu.defined()) shared->relu = torch::relu(x);
    const torch::Tensor& r = shared->relu;
    switch (kind) {
      case Kind::kIdentity: return x;
      case Kind::kMaxPool: return MaxPool2d(x, 3, stride, 1);
      case Kind::kReluConvBn: return norm(bn1, torch::conv2d(r, pw(pw1), b1));
      case Kind::kFactorizedReduce: {
        if (reduce_w.defined() && r.size(2) % 2 == 0 && r.size(3) % 2 == 0) {
          const int64_t no_padding = 0;  // a literal 0 would also match the string-padding overload
          if (!shared->pairs.defined()) shared->pairs = DiagonalPairs(r);
          return torch::conv2d(shared->pairs, reduce_w, reduce_b, 1, no_padding, 1, /*groups=*/2);
        }
        using torch::indexing::None;
        using torch::indexing::Slice;
        torch::Tensor shifted = r.index({Slice(), Slice(), Slice(1, None), Slice(1, None)});
        return norm(bn1, torch::cat({torch::conv2d(r, dw1, b1, 2), torch::conv2d(shifted, dw2, b2, 2)}, 1));
      }
      case Kind::kSepConv: {
        const int64_t c = x.size(1);
        torch::Tensor y = torch::conv2d(r, dw1, {}, stride, padding, 1, c);
        y = norm(bn1, torch::conv2d(y, pw(pw1), b1));
        y = torch::conv2d(torch::relu(y), dw2, {}, 1, padding, 1, c);
        return norm(bn2, torch::conv2d(y, pw(pw2), b2));
      }
    }
    return x;
  }

  // Eval mode: every BatchNorm of this op into the convolution before it.
  void FoldBatchNorms() {
    switch (kind) {
      case Kind::kIdentity:
      case Kind::kMaxPool: return;
      case Kind::kReluConvBn: b1 = bn1.Fold(&pw1, 0, pw1.size(0)); break;
      case Kind::kFactorizedReduce: {
        b1 = bn1.Fold(&dw1, 0, dw1.size(0));
        b2 = bn1.Fold(&dw2, dw1.size(0), dw2.size(0));
        torch::NoGradGuard no_grad;
        reduce_w = torch::cat({dw1, dw2});
        reduce_b = torch::cat({b1, b2});
        break;
      }
      case Kind::kSepConv:
        b1 = bn1.Fold(&pw1, 0, pw1.size(0));
        b2 = bn2.Fold(&pw2, 0, pw2.size(0));
        break;
    }
    folded = true;
  }

  std::vector<torch::Tensor*> Tensors() {
    return {&dw1,        &pw1,      &dw2,      &pw2,     &bn1.weight, &bn1.bias, &bn1.mean, &bn1.var,
            &bn2.weight, &bn2.bias, &bn2.mean, &bn2.var, &b1,         &b2,       &reduce_w, &reduce_b};
  }
};

struct Cell {
  Op preprocess0, preprocess1;
  std::vector<Op> ops;
};

// The module tree's own order of registration, as key prefixes and shapes.
void AddBatchNormKeys(KeyShapes& keys, const std::string& p, int64_t c) {
  keys.push_back({p + "weight", {c}});
  keys.push_back({p + "bias", {c}});
  keys.push_back({p + "running_mean", {c}});
  keys.push_back({p + "running_var", {c}});
  keys.push_back({p + "num_batches_tracked", {}});
}

void AddOpKeys(KeyShapes& keys, const std::string& p, OpType type, int64_t c, int stride) {
  if (type == OpType::kSkip && stride == 2) {
    keys.push_back({p + "conv_1.weight", {c / 2, c, 1, 1}});
    keys.push_back({p + "conv_2.weight", {c / 2, c, 1, 1}});
    AddBatchNormKeys(keys, p + "bn.", c);
  } else if (type == OpType::kSepConv3 || type == OpType::kSepConv5) {
    const int64_t k = type == OpType::kSepConv3 ? 3 : 5;
    keys.push_back({p + "op.1.weight", {c, 1, k, k}});
    keys.push_back({p + "op.2.weight", {c, c, 1, 1}});
    AddBatchNormKeys(keys, p + "op.3.", c);
    keys.push_back({p + "op.5.weight", {c, 1, k, k}});
    keys.push_back({p + "op.6.weight", {c, c, 1, 1}});
    AddBatchNormKeys(keys, p + "op.7.", c);
  }
}

// Walks the network's cells in order: (index, C_prev_prev, C_prev, C, reduction, reduction_prev).
template <typename Visit>
int64_t ForEachCell(const LanetConfig& config, Visit visit, int64_t* c_auxiliary) {
  int64_t c_curr = 3 * static_cast<int64_t>(config.channels);
  int64_t c_prev_prev = c_curr, c_prev = c_curr;
  c_curr = config.channels;
  bool reduction_prev = false;
  for (int i = 0; i < config.layers; ++i) {
    const bool reduction = i == config.layers / 3 || i == 2 * config.layers / 3;
    if (reduction) c_curr *= 2;
    visit(i, c_prev_prev, c_prev, c_curr, reduction, reduction_prev);
    reduction_prev = reduction;
    c_prev_prev = c_prev;
    c_prev = static_cast<int64_t>(ConcatStates().size()) * c_curr;
    if (i == 2 * config.layers / 3 && c_auxiliary != nullptr) *c_auxiliary = c_prev;
  }
  return c_prev;
}

class Lanet final : public Classifier {
 public:
  // train: keep the 1x1 weights raw and run every pass in training mode.
  Lanet(const LanetConfig& config, const Weights& w, bool train) : train_(train) {
    auto standardized = [train](const torch::Tensor& raw) { return train ? raw : StandardizeLanet(raw); };
    auto bn = [&w](const std::string& p) {
      return BatchNorm{w.at(p + "weight"), w.at(p + "bias"), w.at(p + "running_mean"), w.at(p + "running_var")};
    };
    auto relu_conv_bn = [&](const std::string& p) {
      Op op;
      op.kind = Op::Kind::kReluConvBn;
      op.pw1 = standardized(w.at(p + "op.1.weight"));
      op.bn1 = bn(p + "op.2.");
      return op;
    };
    auto factorized_reduce = [&](const std::string& p) {
      Op op;
      op.kind = Op::Kind::kFactorizedReduce;
      op.dw1 = w.at(p + "conv_1.weight");
      op.dw2 = w.at(p + "conv_2.weight");
      op.bn1 = bn(p + "bn.");
      return op;
    };
    stem_conv_ = w.at("stem.0.weight");
    stem_bn_ = bn("stem.1.");
    if (!train) stem_bias_ = stem_bn_.Fold(&stem_conv_, 0, stem_conv_.size(0));
    ForEachCell(
        config,
        [&](int i, int64_t, int64_t, int64_t, bool reduction, bool reduction_prev) {
          const std::string p = "cells." + std::to_string(i) + ".";
          Cell cell;
          cell.preprocess0 = reduction_prev ? factorized_reduce(p + "preprocess0.") : relu_conv_bn(p + "preprocess0.");
          cell.preprocess1 = relu_conv_bn(p + "preprocess1.");
          for (int k = 0; k < 2 * kNodes; ++k) {
            const std::string q = p + "_ops." + std::to_string(k) + ".";
            const int stride = reduction && InputOf(k) < 2 ? 2 : 1;
            Op op;
            op.stride = stride;
            switch (OpAt(k)) {
              case OpType::kSkip:
                if (stride == 2) op = factorized_reduce(q);
                break;
              case OpType::kMaxPool3: op.kind = Op::Kind::kMaxPool; break;
              case OpType::kSepConv3:
              case OpType::kSepConv5:
                op.kind = Op::Kind::kSepConv;
                op.padding = OpAt(k) == OpType::kSepConv3 ? 1 : 2;
                op.dw1 = w.at(q + "op.1.weight");
                op.pw1 = standardized(w.at(q + "op.2.weight"));
                op.bn1 = bn(q + "op.3.");
                op.dw2 = w.at(q + "op.5.weight");
                op.pw2 = standardized(w.at(q + "op.6.weight"));
                op.bn2 = bn(q + "op.7.");
                break;
            }
            cell.ops.push_back(std::move(op));
          }
          if (!train) {  // eval mode: BatchNorm is an affine map, folded into the convolutions
            cell.preprocess0.FoldBatchNorms();
            cell.preprocess1.FoldBatchNorms();
            for (Op& op : cell.ops) op.FoldBatchNorms();
          }
          cells_.push_back(std::move(cell));
        },
        nullptr);
    classifier_w_ = w.at("classifier.weight");
    classifier_b_ = w.at("classifier.bias");
    concat_ = ConcatStates();
    info_.family = ModelFamily::kLanet;
    info_.variant =
        "C" + std::to_string(config.channels) + "-L" + std::to_string(config.layers) + (config.auxiliary ? "-aux" : "");
    info_.normalization = FamilyNormalization(ModelFamily::kLanet);
    info_.classes = DefaultClassNames(config.num_classes);
    for (const auto& [key, t] : w) info_.num_parameters += t.numel();
  }

  torch::Tensor Forward(const torch::Tensor& x) const override {
    // Channels-last on a CPU: its depthwise and small 1 x 1 convolutions,
    // concatenations and max-pools need no layout copies there. BiT stays
    // NCHW: its GroupNorms are slower in channels-last (docs/PERFORMANCE.md,
    // "What was tried").
    torch::Tensor s0 = torch::conv2d(ChannelsLastOnCpu(x), stem_conv_, stem_bias_, 1, 1);
    if (train_) s0 = stem_bn_(s0, train_);
    torch::Tensor s1 = s0;
    // What the readers of s0 and s1 share: relu(s0), relu(s1), once made. The
    // cells' preprocess operations read their inputs only through these, so a
    // cell's output is made as its ReLU alone (ConcatRelu), but for the last
    // cell's, which the classifier reads.
    Shared r0, r1;
    std::vector<torch::Tensor> states;
    std::vector<Shared> shared;
    for (size_t c = 0; c < cells_.size(); ++c) {
      const Cell& cell = cells_[c];
      states.clear();
      shared.assign(2 + kNodes, Shared());
      states.push_back(cell.preprocess0(s0, &r0, train_));
      if (c == 0) r1 = r0;  // both inputs of the first cell are the stem's output
      states.push_back(cell.preprocess1(s1, &r1, train_));
      auto apply = [&](int k) {
        const auto input = static_cast<size_t>(InputOf(k));
        return cell.ops[static_cast<size_t>(k)](states[input], &shared[input], train_);
      };
      // A node sums its two operations; a max-pool takes the other's output
      // as the sum to fuse into its loop (model.h).
      auto node = [&](int i) {
        for (const int k : {2 * i, 2 * i + 1}) {
          const Op& pool = cell.ops[static_cast<size_t>(k)];
          if (pool.kind != Op::Kind::kMaxPool) continue;
          const torch::Tensor other = apply(k == 2 * i ? k + 1 : k - 1);
          return MaxPool2d(states[static_cast<size_t>(InputOf(k))], 3, pool.stride, 1, other);
        }
        return apply(2 * i) + apply(2 * i + 1);
      };
      for (int i = 0; i < static_cast<int>(kNodes); ++i) states.push_back(node(i));
      std::vector<torch::Tensor> outputs;
      for (int s : concat_) outputs.push_back(states[s]);
      s0 = s1;
      r0 = r1;  // the next cell's preprocess0 reads this cell's input s1
      if (c + 1 == cells_.size()) {
        s1 = torch::cat(outputs, 1);
      } else {
        s1 = torch::Tensor();
        r1 = Shared{ConcatRelu(outputs), {}};
      }
    }
    torch::Tensor pooled = torch::adaptive_avg_pool2d(s1, {1, 1}).flatten(1);
    return torch::linear(pooled, classifier_w_, classifier_b_);
  }

  void To(const torch::TensorOptions& options) override {
    NoteDtype(options);
    auto move = [&options](torch::Tensor* t) {
      if (t->defined()) *t = t->to(options);
    };
    for (torch::Tensor* t : {&stem_conv_, &stem_bias_, &stem_bn_.weight, &stem_bn_.bias, &stem_bn_.mean, &stem_bn_.var,
                             &classifier_w_, &classifier_b_}) {
      move(t);
    }
    for (Cell& cell : cells_) {
      for (torch::Tensor* t : cell.preprocess0.Tensors()) move(t);
      for (torch::Tensor* t : cell.preprocess1.Tensors()) move(t);
      for (Op& op : cell.ops) {
        for (torch::Tensor* t : op.Tensors()) move(t);
      }
    }
  }

 private:
  bool train_;
  torch::Tensor stem_conv_, stem_bias_;  // eval mode: stem_bn_ folded into the convolution
  BatchNorm stem_bn_;
  std::vector<Cell> cells_;
  std::vector<int> concat_;
  torch::Tensor classifier_w_, classifier_b_;
};

}  // namespace

KeyShapes LanetKeys(const LanetConfig& config) {
  KeyShapes keys;
  const int64_t stem = 3 * static_cast<int64_t>(config.channels);
  keys.push_back({"stem.0.weight", {stem, 3, 3, 3}});
  AddBatchNormKeys(keys, "stem.1.", stem);
  int64_t c_auxiliary = 0;
  const int64_t c_last = ForEachCell(
      config,
      [&keys](int i, int64_t c_pp, int64_t c_p, int64_t c, bool reduction, bool reduction_prev) {
        const std::string p = "cells." + std::to_string(i) + ".";
        if (reduction_prev) {
          keys.push_back({p + "preprocess0.conv_1.weight", {c / 2, c_pp, 1, 1}});
          keys.push_back({p + "preprocess0.conv_2.weight", {c / 2, c_pp, 1, 1}});
          AddBatchNormKeys(keys, p + "preprocess0.bn.", c);
        } else {
          keys.push_back({p + "preprocess0.op.1.weight", {c, c_pp, 1, 1}});
          AddBatchNormKeys(keys, p + "preprocess0.op.2.", c);
        }
        keys.push_back({p + "preprocess1.op.1.weight", {c, c_p, 1, 1}});
        AddBatchNormKeys(keys, p + "preprocess1.op.2.", c);
        for (int k = 0; k < 2 * kNodes; ++k) {
          AddOpKeys(keys, p + "_ops." + std::to_string(k) + ".", OpAt(k), c, reduction && InputOf(k) < 2 ? 2 : 1);
        }
      },
      &c_auxiliary);
  if (config.auxiliary) {
    keys.push_back({"auxiliary_head.features.2.weight", {128, c_auxiliary, 1, 1}});
    AddBatchNormKeys(keys, "auxiliary_head.features.3.", 128);
    keys.push_back({"auxiliary_head.features.5.weight", {768, 128, 2, 2}});
    AddBatchNormKeys(keys, "auxiliary_head.features.6.", 768);
    keys.push_back({"auxiliary_head.classifier.weight", {config.num_classes, 768}});
    keys.push_back({"auxiliary_head.classifier.bias", {config.num_classes}});
  }
  keys.push_back({"classifier.weight", {config.num_classes, c_last}});
  keys.push_back({"classifier.bias", {config.num_classes}});
  return keys;
}

StatusOr<std::unique_ptr<Classifier>> LoadLanet(const StateDict& weights) {
  Weights w(weights.begin(), weights.end());
  auto stem = w.find("stem.0.weight");
  auto pre = w.find("cells.0.preprocess1.op.1.weight");
  auto classifier = w.find("classifier.weight");
  if (stem == w.end() || pre == w.end() || classifier == w.end() || pre->second.dim() != 4 ||
      classifier->second.dim() != 2) {
    return InvalidError(
        "not a LaNet checkpoint: expected keys stem.0.weight, cells.0.preprocess1.op.1.weight and "
        "classifier.weight, found " +
        std::to_string(weights.size()) + " keys starting with '" +
        (weights.empty() ? std::string() : weights.front().first) + "'");
  }
  LanetConfig config;
  ASSIGN_OR_RETURN(config.channels, CheckpointDimension(pre->second.size(0), 1 << 16,
                                                        "LaNet C (cells.0.preprocess1.op.1.weight's first size)"));
  ASSIGN_OR_RETURN(config.num_classes, CheckpointDimension(classifier->second.size(0), kMaxClasses,
                                                           "classes (classifier.weight's first size)"));
  config.auxiliary = w.count("auxiliary_head.classifier.weight") > 0;
  config.layers = 0;
  while (w.count("cells." + std::to_string(config.layers) + ".preprocess1.op.1.weight")) ++config.layers;
  RETURN_IF_ERROR(CheckKeys(LanetKeys(config), weights,
                            "LaNet (C=" + std::to_string(config.channels) + ", " + std::to_string(config.layers) +
                                " layers" + (config.auxiliary ? ", auxiliary head" : "") + ")"));
  for (auto& [key, t] : w) {
    if (EndsWith(key, "num_batches_tracked")) continue;
    if (!t.is_floating_point()) return InvalidError("LaNet weight " + key + " is not floating point");
    t = t.to(torch::kFloat32).contiguous();
  }
  return std::unique_ptr<Classifier>(std::make_unique<Lanet>(config, w, false));
}

namespace {

class TrainableLanetImpl final : public TrainableLanet {
 public:
  explicit TrainableLanetImpl(const LanetConfig& config) : keys_(LanetKeys(config)) {
    Weights w;
    torch::NoGradGuard no_grad;
    for (const auto& [key, shape] : keys_) {
      torch::Tensor t;
      if (EndsWith(key, "num_batches_tracked")) {
        t = torch::zeros({}, torch::kInt64);
      } else if (EndsWith(key, "running_mean") || EndsWith(key, "bias")) {
        t = torch::zeros(shape);
      } else if (shape.size() == 1) {  // BatchNorm's scale and running variance
        t = torch::ones(shape);
      } else {  // convolutions and the classifier: He initialization over the fan-in
        t = torch::empty(shape);
        torch::nn::init::kaiming_normal_(t, 0.0, torch::kFanIn, torch::kReLU);
        if (shape.size() == 2) t.mul_(0.1);
      }
      if (IsParameter(key)) t.set_requires_grad(true);
      w.emplace(key, t);
    }
    weights_ = w;
    net_ = std::make_unique<Lanet>(config, weights_, true);
  }

  torch::Tensor Forward(const torch::Tensor& x) override {
    ++batches_;
    return net_->Forward(x);
  }

  std::vector<torch::Tensor> Parameters() const override {
    std::vector<torch::Tensor> parameters;
    for (const auto& [key, shape] : keys_) {
      if (IsParameter(key)) parameters.push_back(weights_.at(key));
    }
    return parameters;
  }

  StateDict State() const override {
    StateDict state;
    for (const auto& [key, shape] : keys_) {
      torch::Tensor t = weights_.at(key).detach().clone();
      if (EndsWith(key, "num_batches_tracked")) t.fill_(batches_);
      state.emplace_back(key, t);
    }
    return state;
  }

 private:
  static bool IsParameter(const std::string& key) {
    return !EndsWith(key, "running_mean") && !EndsWith(key, "running_var") && !EndsWith(key, "num_batches_tracked");
  }

  KeyShapes keys_;
  Weights weights_;
  std::unique_ptr<Lanet> net_;
  int64_t batches_ = 0;
};

}  // namespace

std::unique_ptr<TrainableLanet> NewTrainableLanet(const LanetConfig& config) {
  return std::make_unique<TrainableLanetImpl>(config);
}

}  // namespace intgrads
