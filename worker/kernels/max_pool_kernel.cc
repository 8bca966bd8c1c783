// MaxPool2d's loops (max_pool_kernel.h): 16 channels at a time in AVX-512
// (the rest one at a time), built for AVX-512 whatever the compiler's
// target and run only where the CPU has it. Written with intrinsics: GCC
// 12's vector types inside target_clones (group_norm_kernel.cc) turn a
// comparison whose mask is used twice into one comparison a lane, and its
// vectorizer leaves a loop over 16 channels scalar; both were 10-20 times
// slower here.
#include "worker/kernels/max_pool_kernel.h"

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define INTGRADS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif

namespace intgrads {

#ifdef INTGRADS_AVX512

namespace {

// torch's rule: a value replaces the maximum when it is larger or NaN.
INTGRADS_AVX512 inline bool Takes(float v, float best) { return v > best || v != v; }

INTGRADS_AVX512 void Forward(const float* x, const float* z, const PoolShape& s, int64_t begin, int64_t end, float* y,
                             uint8_t* pick) {
  const int64_t channels = s.channels, whole = channels - channels % 16;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.out_height, top = r % s.out_height * s.stride - s.padding;
    const int64_t h_first = std::max<int64_t>(0, -top), h_end = std::min<int64_t>(3, s.height - top);
    for (int64_t ow = 0; ow < s.out_width; ++ow) {
      const int64_t left = ow * s.stride - s.padding;
      const int64_t w_first = std::max<int64_t>(0, -left), w_end = std::min<int64_t>(3, s.width - left);
      const int64_t out = (r * s.out_width + ow) * channels;
      // The window's values on the map, in row-major order, and their
      // positions in it.
      const float* at[9];
      uint8_t position[9];
      int count = 0;
      for (int64_t kh = h_first; kh < h_end; ++kh) {
        for (int64_t kw = w_first; kw < w_end; ++kw) {
          at[count] = x + ((n * s.height + top + kh) * s.width + left + kw) * channels;
          position[count++] = static_cast<uint8_t>(3 * kh + kw);
        }
      }
      // The first value starts the maximum (torch starts from -inf at that
      // position, which the first value replaces unless it is -inf).
      int64_t c = 0;
      for (; c < whole; c += 16) {
        __m512 best = _mm512_loadu_ps(at[0] + c);
        __m128i where = _mm_set1_epi8(static_cast<char>(position[0]));
        for (int i = 1; i < count; ++i) {
          const __m512 v = _mm512_loadu_ps(at[i] + c);
          const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          best = _mm512_mask_mov_ps(best, take, v);
          where = _mm_mask_mov_epi8(where, take, _mm_set1_epi8(static_cast<char>(position[i])));
        }
        if (z != nullptr) best = _mm512_add_ps(best, _mm512_loadu_ps(z + out + c));
        _mm512_storeu_ps(y + out + c, best);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(pick + out + c), where);
      }
      for (; c < channels; ++c) {
        float best = at[0][c];
        uint8_t where = position[0];
        for (int i = 1; i < count; ++i) {
          if (Takes(at[i][c], best)) {
            best = at[i][c];
            where = position[i];
          }
        }
        y[out + c] = z != nullptr ? best + z[out + c] : best;
        pick[out + c] = where;
      }
    }
  }
}

INTGRADS_AVX512 void Backward(const float* dy, const uint8_t* pick, const PoolShape& s, int64_t begin, int64_t end,
                              float* dx) {
  const int64_t channels = s.channels, whole = channels - channels % 16;
  // The window positions k (kh or kw) from which input i is output o of a
  // row or column, o = (i + padding - k) / stride, in ascending o (k from
  // 2 down): at most three.
  struct Along {
    int64_t output[3];
    int64_t k[3];
    int count = 0;
  };
  auto along = [&s](int64_t i, int64_t outputs) {
    Along a;
    for (int64_t k = 2; k >= 0; --k) {
      const int64_t t = i + s.padding - k;
      if (t < 0 || t % s.stride != 0 || t / s.stride >= outputs) continue;
      a.output[a.count] = t / s.stride;
      a.k[a.count++] = k;
    }
    return a;
  };
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / s.height;
    const Along rows = along(r % s.height, s.out_height);
    for (int64_t iw = 0; iw < s.width; ++iw) {
      const Along columns = along(iw, s.out_width);
      // The outputs whose window holds (ih, iw), in the order of torch's
      // scatter (row-major over the outputs), and the position it has in each.
      int64_t from[9];
      uint8_t position[9];
      int count = 0;
      for (int i = 0; i < rows.count; ++i) {
        for (int j = 0; j < columns.count; ++j) {
          from[count] = ((n * s.out_height + rows.output[i]) * s.out_width + columns.output[j]) * channels;
          position[count++] = static_cast<uint8_t>(3 * rows.k[i] + columns.k[j]);
        }
      }
      float* out = dx + (r * s.width + iw) * channels;
      int64_t c = 0;
      for (; c < whole; c += 16) {
        __m512 sum = _mm512_setzero_ps();
        for (int i = 0; i < count; ++i) {
          const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pick + from[i] + c));
          const __mmask16 mine = _mm_cmpeq_epi8_mask(p, _mm_set1_epi8(static_cast<char>(position[i])));
          sum = _mm512_mask_add_ps(sum, mine, sum, _mm512_loadu_ps(dy + from[i] + c));
        }
        _mm512_storeu_ps(out + c, sum);
      }
      for (; c < channels; ++c) {
        float sum = 0.0f;
        for (int i = 0; i < count; ++i) {
          if (pick[from[i] + c] == position[i]) sum += dy[from[i] + c];
        }
        out[c] = sum;
      }
    }
  }
}

}  // namespace

bool MaxPool3x3Supported() {
  static const bool supported =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return supported;
}

void MaxPool3x3Forward(const float* x, const float* z, const PoolShape& shape, int64_t begin, int64_t end, float* y,
                       uint8_t* pick) {
  Forward(x, z, shape, begin, end, y, pick);
}

void MaxPool3x3Backward(const float* dy, const uint8_t* pick, const PoolShape& shape, int64_t begin, int64_t end,
                        float* dx) {
  Backward(dy, pick, shape, begin, end, dx);
}

#else  // not x86-64 with GCC or Clang: torch's kernel

bool MaxPool3x3Supported() { return false; }
void MaxPool3x3Forward(const float*, const float*, const PoolShape&, int64_t, int64_t, float*, uint8_t*) {}
void MaxPool3x3Backward(const float*, const uint8_t*, const PoolShape&, int64_t, int64_t, float*) {}

#endif

}  // namespace intgrads
