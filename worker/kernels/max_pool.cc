// MaxPool2d (model.h): a 3 x 3 window on a float32 CPU tensor through the
// loops of max_pool_kernel.h (where the CPU has AVX-512), as an autograd
// function; any other pool through torch's channels-last kernel.
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>

#include "worker/kernels/max_pool_kernel.h"
#include "worker/models/model.h"

namespace intgrads {

namespace {

PoolShape ShapeOf(const torch::Tensor& x, int64_t stride, int64_t padding) {
  PoolShape s;
  s.height = x.size(2);
  s.width = x.size(3);
  s.channels = x.size(1);
  s.stride = stride;
  s.padding = padding;
  s.out_height = (s.height + 2 * padding - 3) / stride + 1;
  s.out_width = (s.width + 2 * padding - 3) / stride + 1;
  return s;
}

// y = max_pool2d(x, 3, stride, padding) (+ plus, when defined),
// channels-last; keeps the picks (a byte an output value) for Backward.
torch::Tensor Forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& plus,
                      int64_t stride, int64_t padding) {
  const torch::Tensor x = input.detach().contiguous(at::MemoryFormat::ChannelsLast);
  const PoolShape s = ShapeOf(x, stride, padding);
  const int64_t n = x.size(0);
  torch::Tensor y = torch::empty({n, s.channels, s.out_height, s.out_width},
                                 x.options().memory_format(at::MemoryFormat::ChannelsLast));
  torch::Tensor picks = torch::empty({n, s.out_height, s.out_width, s.channels}, x.options().dtype(torch::kUInt8));
  const torch::Tensor z = plus.defined() ? plus.detach().contiguous(at::MemoryFormat::ChannelsLast) : plus;
  const int64_t row = s.out_width * s.channels;
  at::parallel_for(0, n * s.out_height, ParallelGrain(row), [&](int64_t begin, int64_t end) {
    MaxPool3x3Forward(x.data_ptr<float>(), z.defined() ? z.data_ptr<float>() : nullptr, s, begin, end,
                      y.data_ptr<float>(), picks.data_ptr<uint8_t>());
  });
  ctx->save_for_backward({picks});
  ctx->saved_data["height"] = s.height;
  ctx->saved_data["width"] = s.width;
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  return y;
}

// dx, gathered from dy by the picks.
torch::Tensor Backward(torch::autograd::AutogradContext* ctx, const torch::Tensor& dy) {
  const torch::Tensor picks = ctx->get_saved_variables()[0];
  PoolShape s;
  s.height = ctx->saved_data["height"].toInt();
  s.width = ctx->saved_data["width"].toInt();
  s.channels = dy.size(1);
  s.out_height = dy.size(2);
  s.out_width = dy.size(3);
  s.stride = ctx->saved_data["stride"].toInt();
  s.padding = ctx->saved_data["padding"].toInt();
  const int64_t n = dy.size(0);
  torch::Tensor dx =
      torch::empty({n, s.channels, s.height, s.width}, dy.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t row = s.width * s.channels;
  at::parallel_for(0, n * s.height, ParallelGrain(row), [&](int64_t begin, int64_t end) {
    MaxPool3x3Backward(dy.data_ptr<float>(), picks.data_ptr<uint8_t>(), s, begin, end, dx.data_ptr<float>());
  });
  return dx;
}

struct MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t stride,
                               int64_t padding) {
    return Forward(ctx, x, torch::Tensor(), stride, padding);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {Backward(ctx, grads[0].contiguous(at::MemoryFormat::ChannelsLast)), torch::Tensor(), torch::Tensor()};
  }
};

// The same with a sum after the pool, whose gradient is dy itself.
struct MaxPoolPlusFunction : public torch::autograd::Function<MaxPoolPlusFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& plus,
                               int64_t stride, int64_t padding) {
    return Forward(ctx, x, plus, stride, padding);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    return {Backward(ctx, dy), dy, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor MaxPool2d(const torch::Tensor& x, int64_t kernel, int64_t stride, int64_t padding,
                        const torch::Tensor& plus) {
  const bool own_loops = MaxPool3x3Supported() && x.device().is_cpu() && x.dim() == 4 &&
                         x.scalar_type() == torch::kFloat32 && kernel == 3 && stride >= 1 && padding >= 0 &&
                         padding <= 1 && x.size(2) + 2 * padding >= 3 && x.size(3) + 2 * padding >= 3 && x.numel() > 0;
  torch::Tensor y;
  bool fused = false;
  if (own_loops) {
    const PoolShape s = ShapeOf(x, stride, padding);
    fused = plus.defined() && plus.device().is_cpu() && plus.scalar_type() == torch::kFloat32 &&
            plus.sizes() == c10::IntArrayRef({x.size(0), s.channels, s.out_height, s.out_width});
    y = fused ? MaxPoolPlusFunction::apply(x, plus, stride, padding) : MaxPoolFunction::apply(x, stride, padding);
  } else {
    y = torch::max_pool2d(ChannelsLastOnCpu(x), kernel, stride, padding);
  }
  if (plus.defined() && !fused) y = y + plus;
  return y.contiguous(x.suggest_memory_format());
}

}  // namespace intgrads
