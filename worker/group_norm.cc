// GroupNormRelu (model.h): bfloat16 GroupNorm and ReLU in one pass over the
// data forward and one backward, on a CPU (group_norm_kernel.h).
#include <ATen/Parallel.h>

#include <algorithm>

#include "worker/group_norm_kernel.h"
#include "worker/model.h"

namespace intgrads {

namespace {

// Blocks of at least this many values per task of at::parallel_for.
constexpr int64_t kGrain = 1 << 14;

GroupNormBlocks Blocks(const torch::Tensor& x, int64_t groups) {
  return {groups, x.size(1) / groups, x.numel() / (x.size(0) * x.size(1))};
}

// A bfloat16 tensor's data, as its bits.
uint16_t* Bits(const torch::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<c10::BFloat16>()); }

// Forward: y = relu(group_norm(x)), saving x, y and the blocks' statistics;
// backward: dx from dy. The weights are constants: no gradient for them.
struct GroupNormReluFunction : public torch::autograd::Function<GroupNormReluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               const torch::Tensor& weight, const torch::Tensor& bias, int64_t groups, double eps) {
    const torch::Tensor x = input.detach().contiguous();
    const GroupNormBlocks shape = Blocks(x, groups);
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor mean = torch::empty({x.size(0) * groups}, x.options().dtype(torch::kFloat32));
    torch::Tensor rstd = torch::empty_like(mean);
    at::parallel_for(0, mean.numel(), std::max<int64_t>(1, kGrain / shape.size()), [&](int64_t begin, int64_t end) {
      GroupNormReluForward(Bits(x), weight.data_ptr<float>(), bias.data_ptr<float>(), shape, eps, begin, end, Bits(y),
                           mean.data_ptr<float>(), rstd.data_ptr<float>());
    });
    ctx->save_for_backward({x, y, weight, mean, rstd});
    ctx->saved_data["groups"] = groups;
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &y = saved[1], &weight = saved[2], &mean = saved[3], &rstd = saved[4];
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const torch::Tensor dy = grads[0].to(x.scalar_type()).contiguous();
    const GroupNormBlocks shape = Blocks(x, groups);
    torch::Tensor dx = torch::empty_like(x);
    at::parallel_for(0, mean.numel(), std::max<int64_t>(1, kGrain / shape.size()), [&](int64_t begin, int64_t end) {
      GroupNormReluBackward(Bits(dy), Bits(x), Bits(y), weight.data_ptr<float>(), mean.data_ptr<float>(),
                            rstd.data_ptr<float>(), shape, begin, end, Bits(dx));
    });
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor GroupNormRelu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                            const torch::Tensor& bias, double eps) {
  const bool fused = x.device().is_cpu() && x.dim() >= 2 && x.size(1) % groups == 0 &&
                     x.scalar_type() == torch::kBFloat16 && weight.scalar_type() == torch::kFloat32 &&
                     bias.scalar_type() == torch::kFloat32 && weight.is_contiguous() && bias.is_contiguous() &&
                     !weight.requires_grad() && !bias.requires_grad() && x.numel() > 0;
  if (fused) return GroupNormReluFunction::apply(x, weight, bias, groups, eps);
  if (x.scalar_type() == weight.scalar_type()) return torch::relu(torch::group_norm(x, groups, weight, bias, eps));
  return torch::relu(torch::group_norm(x.to(weight.scalar_type()), groups, weight, bias, eps)).to(x.scalar_type());
}

}  // namespace intgrads
