// GroupNormRelu (model.h) on a CPU: bfloat16 GroupNorm and ReLU in one pass
// over the data forward and one backward; float32's backward pass in one
// (group_norm_kernel.h).
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>

#include "worker/kernels/group_norm_kernel.h"
#include "worker/models/model.h"

namespace intgrads {

namespace {

GroupNormBlocks Blocks(const torch::Tensor& x, int64_t groups) {
  return {groups, x.size(1) / groups, x.numel() / (x.size(0) * x.size(1))};
}

// A tensor's data as the kernel reads it: bfloat16 as its bits, float32 as is.
template <typename T>
T* Data(const torch::Tensor& t);
template <>
uint16_t* Data<uint16_t>(const torch::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<c10::BFloat16>());
}
template <>
float* Data<float>(const torch::Tensor& t) {
  return t.data_ptr<float>();
}

// What the backward pass reads: x, y = relu(group_norm(x)), the weight, the
// blocks' mean and rstd, and the number of groups. Backward reads it back.
void Save(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& y,
          const torch::Tensor& weight, const torch::Tensor& mean, const torch::Tensor& rstd, int64_t groups) {
  ctx->save_for_backward({x, y, weight, mean, rstd});
  ctx->saved_data["groups"] = groups;
}

// dx from dy, given what Save kept, by the fused loop.
template <typename T>
torch::autograd::variable_list Backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad) {
  const auto saved = ctx->get_saved_variables();
  const torch::Tensor &x = saved[0], &y = saved[1], &weight = saved[2], &mean = saved[3], &rstd = saved[4];
  const int64_t groups = ctx->saved_data["groups"].toInt();
  const torch::Tensor dy = grad.to(x.scalar_type()).contiguous();
  const GroupNormBlocks shape = Blocks(x, groups);
  torch::Tensor dx = torch::empty_like(x);
  at::parallel_for(0, mean.numel(), ParallelGrain(shape.size()), [&](int64_t begin, int64_t end) {
    GroupNormReluBackward(Data<T>(dy), Data<T>(x), Data<T>(y), weight.data_ptr<float>(), mean.data_ptr<float>(),
                          rstd.data_ptr<float>(), shape, begin, end, Data<T>(dx));
  });
  return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
}

// bfloat16: y = relu(group_norm(x)) by the fused loop, saving x, y and the
// blocks' statistics; backward: dx from dy. The weights are constants: no
// gradient for them.
struct GroupNormReluFunction : public torch::autograd::Function<GroupNormReluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, int64_t groups, double eps) {
    const torch::Tensor x = input.detach().contiguous();
    const GroupNormBlocks shape = Blocks(x, groups);
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor mean = torch::empty({x.size(0) * groups}, x.options().dtype(torch::kFloat32));
    torch::Tensor rstd = torch::empty_like(mean);
    at::parallel_for(0, mean.numel(), ParallelGrain(shape.size()), [&](int64_t begin, int64_t end) {
      GroupNormReluForward(Data<uint16_t>(x), weight.data_ptr<float>(), bias.data_ptr<float>(), shape, eps, begin, end,
                           Data<uint16_t>(y), mean.data_ptr<float>(), rstd.data_ptr<float>());
    });
    Save(ctx, x, y, weight, mean, rstd, groups);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return Backward<uint16_t>(ctx, grads[0]);
  }
};

// float32: the forward pass is torch's GroupNorm, so y has Captum's rounding
// to the bit (the rounding of the forward pass is what BiT's GroupNorms
// amplify near the baseline), then ReLU in place; the backward pass is the
// fused loop, from torch's statistics: one pass over dy, x and y instead of
// ReLU's and GroupNorm's backward passes, with no mask or gradient of y in
// between.
struct GroupNormReluGradFunction : public torch::autograd::Function<GroupNormReluGradFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, int64_t groups, double eps) {
    const torch::Tensor x = input.detach().contiguous();
    const int64_t n = x.size(0), c = x.size(1);
    auto [y, mean, rstd] = at::native_group_norm(x, weight, bias, n, c, x.numel() / (n * c), groups, eps);
    y.relu_();
    Save(ctx, x, y, weight, mean, rstd, groups);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return Backward<float>(ctx, grads[0]);
  }
};

}  // namespace

torch::Tensor GroupNormRelu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                            const torch::Tensor& bias, double eps) {
  const bool own_loops = x.device().is_cpu() && x.dim() >= 2 && x.size(1) % groups == 0 &&
                         weight.scalar_type() == torch::kFloat32 && bias.scalar_type() == torch::kFloat32 &&
                         weight.is_contiguous() && bias.is_contiguous() && !weight.requires_grad() &&
                         !bias.requires_grad() && x.numel() > 0;
  if (own_loops && x.scalar_type() == torch::kBFloat16)
    return GroupNormReluFunction::apply(x, weight, bias, groups, eps);
  if (own_loops && x.scalar_type() == torch::kFloat32 && x.requires_grad()) {
    return GroupNormReluGradFunction::apply(x, weight, bias, groups, eps);
  }
  if (x.scalar_type() == weight.scalar_type()) return torch::relu(torch::group_norm(x, groups, weight, bias, eps));
  return torch::relu(torch::group_norm(x.to(weight.scalar_type()), groups, weight, bias, eps)).to(x.scalar_type());
}

}  // namespace intgrads
