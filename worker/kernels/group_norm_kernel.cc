// GroupNormRelu's loops (group_norm_kernel.h), written with GCC's vector
// types, 16 floats at a time: bfloat16 widened and rounded on its bits,
// ReLU and its mask as bit masks, sums in four chains of vector additions
// finished in double. On x86-64 each entry point is built for AVX-512, AVX2
// and the baseline, and the loader picks one (target_clones).
#include "worker/kernels/group_norm_kernel.h"

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define INTGRADS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define INTGRADS_CLONES
#endif
#define INTGRADS_INLINE inline __attribute__((always_inline))

namespace intgrads {

namespace {

// 16 floats, and the same number of 32-bit and 16-bit integers: GCC's vector
// types, one AVX-512 register (two AVX2 ones, four SSE ones elsewhere).
constexpr int64_t kWidth = 16;
typedef float Floats __attribute__((vector_size(4 * kWidth)));
typedef uint32_t Words __attribute__((vector_size(4 * kWidth)));
typedef int32_t Mask __attribute__((vector_size(4 * kWidth)));
typedef uint16_t Halves __attribute__((vector_size(2 * kWidth)));

// One bfloat16 (as its bits) to float32 and back, for the values past the
// last 16: c10::BFloat16's conversions (exact; nearest even, NaN kept).
INTGRADS_INLINE float Widen(uint16_t v) { return static_cast<float>(c10::BFloat16(v, c10::BFloat16::from_bits())); }
INTGRADS_INLINE void Narrow(float v, uint16_t* out) { *out = c10::BFloat16(v).x; }
INTGRADS_INLINE float Widen(float v) { return v; }
INTGRADS_INLINE void Narrow(float v, float* out) { *out = v; }

// 16 values at a time, the same conversions on the bits (bfloat16 is the
// upper half of a float32), without branches; and float32 arrays (weights,
// scratch).
INTGRADS_INLINE Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
INTGRADS_INLINE Floats Load(const uint16_t* p) {
  Halves h;
  std::memcpy(&h, p, sizeof(h));
  return reinterpret_cast<Floats>(__builtin_convertvector(h, Words) << 16);
}
INTGRADS_INLINE void Store(Floats v, float* p) { std::memcpy(p, &v, sizeof(v)); }
INTGRADS_INLINE void Store(Floats v, uint16_t* p) {
  const Words bits = reinterpret_cast<Words>(v);
  const Words rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const Words nan = reinterpret_cast<Words>((bits & 0x7FFFFFFFu) > 0x7F800000u);
  const Halves h = __builtin_convertvector((rounded & ~nan) | (0x7FC0u & nan), Halves);
  std::memcpy(p, &h, sizeof(h));
}
INTGRADS_INLINE Floats Splat(float v) { return Floats{} + v; }
// As torch's relu and threshold_backward, NaN passes: v unless v <= 0 (then
// 0); dy unless y <= 0.
INTGRADS_INLINE Floats Relu(Floats v) { return reinterpret_cast<Floats>(reinterpret_cast<Mask>(v) & ~(v <= 0.0f)); }
INTGRADS_INLINE float Relu(float v) { return v <= 0.0f ? 0.0f : v; }
INTGRADS_INLINE Floats ReluGrad(Floats dy, Floats y) {
  return reinterpret_cast<Floats>(reinterpret_cast<Mask>(dy) & ~(y <= 0.0f));
}
INTGRADS_INLINE float ReluGrad(float dy, float y) { return y <= 0.0f ? 0.0f : dy; }

// The 16 lanes' sum: halves added as vectors down to 4 lanes (reading lanes
// one by one goes through memory), those in double.
typedef float Floats8 __attribute__((vector_size(4 * kWidth / 2)));
typedef float Floats4 __attribute__((vector_size(4 * kWidth / 4)));
INTGRADS_INLINE double Total(Floats v) {
  Floats8 halves[2];
  std::memcpy(halves, &v, sizeof(v));
  const Floats8 eight = halves[0] + halves[1];
  Floats4 quarters[2];
  std::memcpy(quarters, &eight, sizeof(eight));
  const Floats4 four = quarters[0] + quarters[1];
  return (static_cast<double>(four[0]) + four[2]) + (static_cast<double>(four[1]) + four[3]);
}

// The sum of f(i) for i = 0, 16, ..., whole - 16, in four chains of
// additions: one chain would wait on each addition's latency.
template <typename F>
INTGRADS_INLINE Floats Accumulate(int64_t whole, F f) {
  Floats s0{}, s1{}, s2{}, s3{};
  int64_t i = 0;
  for (; i + 4 * kWidth <= whole; i += 4 * kWidth) {
    s0 += f(i);
    s1 += f(i + kWidth);
    s2 += f(i + 2 * kWidth);
    s3 += f(i + 3 * kWidth);
  }
  for (; i < whole; i += kWidth) s0 += f(i);
  return (s0 + s1) + (s2 + s3);
}

// Per-thread scratch of `size` floats.
float* Scratch(int64_t size) {
  thread_local std::vector<float> scratch;
  if (static_cast<int64_t>(scratch.size()) < size) scratch.resize(static_cast<size_t>(size));
  return scratch.data();
}

// P: the pixels per channel when known at compile time (0: shape.pixels).
// Rows of a multiple of 16 pixels run 16 at a time; a 1 x 1 map runs 16
// channels at a time; other rows (2 x 2 maps) with each channel's scale and
// shift spelt out per value, then 16 values at a time.
template <int P, typename T>
INTGRADS_INLINE void Forward(const T* x, const float* weight, const float* bias, const GroupNormBlocks& shape,
                             double eps, int64_t begin, int64_t end, T* y, float* mean, float* rstd) {
  const int64_t pixels = P > 0 ? P : shape.pixels, size = shape.channels * pixels;
  const int64_t whole = size - size % kWidth;
  for (int64_t b = begin; b < end; ++b) {
    const T* xb = x + b * size;
    T* yb = y + b * size;
    const float* w = weight + (b % shape.groups) * shape.channels;
    const float* s = bias + (b % shape.groups) * shape.channels;
    // Two passes, the second about the mean: no cancellation where the mean
    // is large against the spread (BiT near the baseline).
    double total = Total(Accumulate(whole, [xb](int64_t i) { return Load(xb + i); }));
    for (int64_t i = whole; i < size; ++i) total += Widen(xb[i]);
    const auto mu = static_cast<float>(total / static_cast<double>(size));
    double var = Total(Accumulate(whole, [xb, mu](int64_t i) {
      const Floats d = Load(xb + i) - mu;
      return d * d;
    }));
    for (int64_t i = whole; i < size; ++i) var += (Widen(xb[i]) - mu) * (Widen(xb[i]) - mu);
    const auto r = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(size) + eps));
    mean[b] = mu;
    rstd[b] = r;
    if (pixels == 1) {
      int64_t c = 0;
      for (; c + kWidth <= shape.channels; c += kWidth) {
        Store(Relu(Load(w + c) * r * (Load(xb + c) - mu) + Load(s + c)), yb + c);
      }
      for (; c < shape.channels; ++c) Narrow(Relu(w[c] * r * (Widen(xb[c]) - mu) + s[c]), yb + c);
    } else if (pixels % kWidth == 0) {
      for (int64_t c = 0; c < shape.channels; ++c) {
        const Floats scale = Splat(w[c] * r), shift = Splat(s[c]);
        for (int64_t i = c * pixels; i < (c + 1) * pixels; i += kWidth) {
          Store(Relu(scale * (Load(xb + i) - mu) + shift), yb + i);
        }
      }
    } else {  // rows shorter than 16 (2 x 2 maps): the channels' scales and shifts spelt out per value
      float* scales = Scratch(2 * size);
      float* shifts = scales + size;
      for (int64_t c = 0; c < shape.channels; ++c) {
        for (int64_t i = c * pixels; i < (c + 1) * pixels; ++i) {
          scales[i] = w[c] * r;
          shifts[i] = s[c];
        }
      }
      for (int64_t i = 0; i < whole; i += kWidth) {
        Store(Relu(Load(scales + i) * (Load(xb + i) - mu) + Load(shifts + i)), yb + i);
      }
      for (int64_t i = whole; i < size; ++i) Narrow(Relu(scales[i] * (Widen(xb[i]) - mu) + shifts[i]), yb + i);
    }
  }
}

// With g = dy where y > 0 (else 0), t = weight g and xhat = (x - mean) rstd,
// GroupNorm's input gradient is rstd (t - mean(t) - xhat mean(t xhat)) over
// the block: dx = rstd t + q (x - mean) + s, with q and s per block.
template <int P, typename T>
INTGRADS_INLINE void Backward(const T* dy, const T* x, const T* y, const float* weight, const float* mean,
                              const float* rstd, const GroupNormBlocks& shape, int64_t begin, int64_t end, T* dx) {
  const int64_t pixels = P > 0 ? P : shape.pixels, size = shape.channels * pixels;
  const int64_t whole = size - size % kWidth;
  float* t = Scratch(size);
  for (int64_t b = begin; b < end; ++b) {
    const int64_t offset = b * size;
    const T *dyb = dy + offset, *xb = x + offset, *yb = y + offset;
    T* dxb = dx + offset;
    const float* w = weight + (b % shape.groups) * shape.channels;
    if (pixels == 1) {
      int64_t c = 0;
      for (; c + kWidth <= shape.channels; c += kWidth)
        Store(Load(w + c) * ReluGrad(Load(dyb + c), Load(yb + c)), t + c);
      for (; c < shape.channels; ++c) t[c] = w[c] * ReluGrad(Widen(dyb[c]), Widen(yb[c]));
    } else if (pixels % kWidth == 0) {
      for (int64_t c = 0; c < shape.channels; ++c) {
        const Floats wc = Splat(w[c]);
        for (int64_t i = c * pixels; i < (c + 1) * pixels; i += kWidth) {
          Store(wc * ReluGrad(Load(dyb + i), Load(yb + i)), t + i);
        }
      }
    } else {  // short rows: the weights spelt out per value
      for (int64_t c = 0; c < shape.channels; ++c) {
        for (int64_t i = c * pixels; i < (c + 1) * pixels; ++i) t[i] = w[c];
      }
      for (int64_t i = 0; i < whole; i += kWidth) Store(Load(t + i) * ReluGrad(Load(dyb + i), Load(yb + i)), t + i);
      for (int64_t i = whole; i < size; ++i) t[i] *= ReluGrad(Widen(dyb[i]), Widen(yb[i]));
    }
    const float mu = mean[b], r = rstd[b];
    double sum_t = Total(Accumulate(whole, [t](int64_t i) { return Load(t + i); }));
    double sum_tx = Total(Accumulate(whole, [t, xb, mu](int64_t i) { return Load(t + i) * (Load(xb + i) - mu); }));
    for (int64_t i = whole; i < size; ++i) {
      sum_t += t[i];
      sum_tx += t[i] * (Widen(xb[i]) - mu);
    }
    const auto q = static_cast<float>(-static_cast<double>(r) * r * r * sum_tx / static_cast<double>(size));
    const auto s = static_cast<float>(-r * sum_t / static_cast<double>(size));
    for (int64_t i = 0; i < whole; i += kWidth) Store(r * Load(t + i) + q * (Load(xb + i) - mu) + s, dxb + i);
    for (int64_t i = whole; i < size; ++i) Narrow(r * t[i] + q * (Widen(xb[i]) - mu) + s, dxb + i);
  }
}

// The map sizes of BiT's blocks at 32 x 32, 8 x 8 down to 1 x 1, compiled
// for; else P = 0. A switch in each entry point rather than a lambda, which
// would be compiled for the baseline only.
#define INTGRADS_FOR_PIXELS(pixels, call) \
  switch (pixels) {                       \
    case 1: call(1); break;               \
    case 4: call(4); break;               \
    case 16: call(16); break;             \
    case 64: call(64); break;             \
    default: call(0); break;              \
  }
#define INTGRADS_FORWARD(P) Forward<P>(x, weight, bias, shape, eps, begin, end, y, mean, rstd)
#define INTGRADS_BACKWARD(P) Backward<P>(dy, x, y, weight, mean, rstd, shape, begin, end, dx)

}  // namespace

// The clones are functions of their own, apart from the header's
// declarations, and not in the anonymous namespace: Clang 14 builds no clones
// of a function declared before without target_clones, and only two of three
// of a function with internal linkage.
INTGRADS_CLONES void GroupNormReluForwardClones(const uint16_t* x, const float* weight, const float* bias,
                                                const GroupNormBlocks& shape, double eps, int64_t begin, int64_t end,
                                                uint16_t* y, float* mean, float* rstd) {
  INTGRADS_FOR_PIXELS(shape.pixels, INTGRADS_FORWARD);
}

INTGRADS_CLONES void GroupNormReluBackwardClones(const uint16_t* dy, const uint16_t* x, const uint16_t* y,
                                                 const float* weight, const float* mean, const float* rstd,
                                                 const GroupNormBlocks& shape, int64_t begin, int64_t end,
                                                 uint16_t* dx) {
  INTGRADS_FOR_PIXELS(shape.pixels, INTGRADS_BACKWARD);
}

INTGRADS_CLONES void GroupNormReluBackwardClones(const float* dy, const float* x, const float* y, const float* weight,
                                                 const float* mean, const float* rstd, const GroupNormBlocks& shape,
                                                 int64_t begin, int64_t end, float* dx) {
  INTGRADS_FOR_PIXELS(shape.pixels, INTGRADS_BACKWARD);
}

void GroupNormReluForward(const uint16_t* x, const float* weight, const float* bias, const GroupNormBlocks& shape,
                          double eps, int64_t begin, int64_t end, uint16_t* y, float* mean, float* rstd) {
  GroupNormReluForwardClones(x, weight, bias, shape, eps, begin, end, y, mean, rstd);
}

void GroupNormReluBackward(const uint16_t* dy, const uint16_t* x, const uint16_t* y, const float* weight,
                           const float* mean, const float* rstd, const GroupNormBlocks& shape, int64_t begin,
                           int64_t end, uint16_t* dx) {
  GroupNormReluBackwardClones(dy, x, y, weight, mean, rstd, shape, begin, end, dx);
}

void GroupNormReluBackward(const float* dy, const float* x, const float* y, const float* weight, const float* mean,
                           const float* rstd, const GroupNormBlocks& shape, int64_t begin, int64_t end, float* dx) {
  GroupNormReluBackwardClones(dy, x, y, weight, mean, rstd, shape, begin, end, dx);
}

}  // namespace intgrads
