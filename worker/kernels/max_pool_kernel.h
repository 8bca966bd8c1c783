// The loops of MaxPool2d's 3 x 3 window on a CPU with AVX-512 (model.h,
// max_pool.cc), on raw float32 arrays in channels-last order (N x H x W x
// C): each output keeps which of the nine positions held its maximum as one
// byte (torch keeps an int64 index), and the backward pass gathers each
// input's gradient from the outputs that picked it, in the order torch's
// scatter adds them, so the values, the picks (ties and NaN included) and the
// gradients are torch's to the bit.
#pragma once

#include <cstdint>

namespace intgrads {

struct PoolShape {
  int64_t height = 0, width = 0, channels = 0;  // the input's map
  int64_t out_height = 0, out_width = 0;
  int64_t stride = 1, padding = 0;  // padding takes no part in the maximum
};

// Whether this CPU runs the loops below (AVX-512 F, BW and VL); where it
// does not, MaxPool2d uses torch's kernel.
bool MaxPool3x3Supported();

// Output rows [begin, end), row r = n * out_height + oh: y = the maximum of
// the window, plus z where z is not null (a sum after the pool, fused), and
// pick = its position in the window, 3 kh + kw: torch's choice, the first
// largest value in row-major order, and the last NaN where there is one.
void MaxPool3x3Forward(const float* x, const float* z, const PoolShape& shape, int64_t begin, int64_t end, float* y,
                       uint8_t* pick);

// Input rows [begin, end), row r = n * height + ih: dx = the sum of dy over
// the outputs that picked that input.
void MaxPool3x3Backward(const float* dy, const uint8_t* pick, const PoolShape& shape, int64_t begin, int64_t end,
                        float* dx);

}  // namespace intgrads
