// ConcatRelu (model.h): relu(cat(parts, 1)) in one pass forward and one
// backward on float32 CPU tensors, as an autograd function; torch's
// operations anywhere else.
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <vector>

#include "worker/models/model.h"

namespace intgrads {

namespace {

// The pixels of t: its items for at::parallel_for, each all the channels of
// one (n, h, w), contiguous in channels-last.
int64_t Pixels(const torch::Tensor& t) { return t.size(0) * t.size(2) * t.size(3); }

// clamp_min's rule: NaN stays NaN.
inline void Relu(const float* __restrict x, int64_t n, float* __restrict y) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) y[k] = x[k] < 0.0F ? 0.0F : x[k];
}

// threshold_backward's rule: no gradient where the output y is <= 0 (a NaN
// output passes it). dy is read whatever y is, so that the compiler makes a
// select of it, not a branch (a branch on the sign of each value ran four
// times slower than torch's kernel).
inline void ReluGrad(const float* __restrict y, const float* __restrict dy, int64_t n, float* __restrict dx) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const float g = dy[k];
    dx[k] = y[k] <= 0.0F ? 0.0F : g;
  }
}

struct ConcatReluFunction : public torch::autograd::Function<ConcatReluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs) {
    std::vector<torch::Tensor> parts;
    std::vector<const float*> in;
    std::vector<int64_t> channels;
    int64_t total = 0;
    for (const torch::Tensor& part : inputs) {
      parts.push_back(part.detach().contiguous(at::MemoryFormat::ChannelsLast));
      in.push_back(parts.back().data_ptr<float>());
      channels.push_back(part.size(1));
      total += part.size(1);
    }
    const torch::Tensor& first = parts.front();
    torch::Tensor r = torch::empty({first.size(0), total, first.size(2), first.size(3)},
                                   first.options().memory_format(at::MemoryFormat::ChannelsLast));
    float* out = r.data_ptr<float>();
    at::parallel_for(0, Pixels(first), ParallelGrain(total), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        float* o = out + p * total;
        for (size_t i = 0; i < in.size(); ++i) {
          const int64_t c = channels[i];
          Relu(in[i] + p * c, c, o);
          o += c;
        }
      }
    });
    ctx->save_for_backward({r});
    ctx->saved_data["channels"] = channels;
    return r;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor r = ctx->get_saved_variables()[0];
    const std::vector<int64_t> channels = ctx->saved_data["channels"].toIntVector();
    const torch::Tensor dr = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    const int64_t total = r.size(1);
    torch::autograd::variable_list dx(channels.size());
    std::vector<float*> out(channels.size(), nullptr);
    for (size_t i = 0; i < channels.size(); ++i) {
      if (!ctx->needs_input_grad(i)) continue;
      dx[i] = torch::empty({r.size(0), channels[i], r.size(2), r.size(3)},
                           r.options().memory_format(at::MemoryFormat::ChannelsLast));
      out[i] = dx[i].data_ptr<float>();
    }
    const float* y = r.data_ptr<float>();
    const float* g = dr.data_ptr<float>();
    at::parallel_for(0, Pixels(r), ParallelGrain(total), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        int64_t offset = p * total;
        for (size_t i = 0; i < channels.size(); ++i) {
          const int64_t c = channels[i];
          if (out[i] != nullptr) ReluGrad(y + offset, g + offset, c, out[i] + p * c);
          offset += c;
        }
      }
    });
    return dx;
  }
};

bool OwnLoops(const std::vector<torch::Tensor>& parts) {
  if (parts.empty()) return false;
  const torch::Tensor& first = parts.front();
  for (const torch::Tensor& part : parts) {
    if (!part.device().is_cpu() || part.scalar_type() != torch::kFloat32 || part.dim() != 4 ||
        part.size(0) != first.size(0) || part.size(2) != first.size(2) || part.size(3) != first.size(3)) {
      return false;
    }
  }
  return true;
}

}  // namespace

torch::Tensor ConcatRelu(const std::vector<torch::Tensor>& parts) {
  if (!OwnLoops(parts)) return torch::relu(torch::cat(parts, 1));
  return ConcatReluFunction::apply(at::TensorList(parts));
}

}  // namespace intgrads
