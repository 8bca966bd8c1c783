// The loops of GroupNormRelu (model.h, group_norm.cc), on raw arrays: each
// entry point is built for several instruction sets (AVX-512, AVX2, the
// baseline) and the best one that the CPU has is chosen when the program
// loads; group_norm.cc holds the tensors and autograd around them.
//
// x, y, dy, dx: N x C x H x W contiguous bfloat16, as its 16 bits (or
// float32, for the backward pass of float32's GroupNormRelu), in
// `groups` groups per sample of `channels` channels of `pixels` values: one
// contiguous block of channels * pixels values per (sample, group), block
// b = n * groups + g. weight, bias: C float32. mean, rstd: a float32 per
// block. Each call works on blocks [begin, end). Everything is computed in
// float32 (sums in double); bfloat16's results are rounded to it at the end.
#pragma once

#include <cstdint>

namespace intgrads {

struct GroupNormBlocks {
  int64_t groups = 1, channels = 1, pixels = 1;
  int64_t size() const { return channels * pixels; }
};

// y = relu(weight (x - mean) rstd + bias), with the block's mean and biased
// variance (rstd = 1 / sqrt(var + eps)) written out.
void GroupNormReluForward(const uint16_t* x, const float* weight, const float* bias, const GroupNormBlocks& shape,
                          double eps, int64_t begin, int64_t end, uint16_t* y, float* mean, float* rstd);

// dx of the same, given dy (the gradient of y), x, y and the statistics.
void GroupNormReluBackward(const uint16_t* dy, const uint16_t* x, const uint16_t* y, const float* weight,
                           const float* mean, const float* rstd, const GroupNormBlocks& shape, int64_t begin,
                           int64_t end, uint16_t* dx);
// The same in float32 (the statistics may be torch's GroupNorm's: the same
// mean and rstd).
void GroupNormReluBackward(const float* dy, const float* x, const float* y, const float* weight, const float* mean,
                           const float* rstd, const GroupNormBlocks& shape, int64_t begin, int64_t end, float* dx);

}  // namespace intgrads
