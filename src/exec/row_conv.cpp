#include "row_conv.hpp"

#include <algorithm>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
// Compiled for AVX2 whatever -march says, so that a portable build keeps the kernel; it runs only
// where row_conv_supported() found the instructions.
#define OCCAM_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace occam::exec {

namespace {

// Output channels per micro-kernel call: two 8-float registers (one for a last group of 8).
constexpr int64_t kGroup = 16;

float activated(float x, const Activation& a) {
  if (a.kind == ActKind::Relu) return std::max(x, 0.0f);
  if (a.kind == ActKind::Clip) return std::clamp(x, a.lo, a.hi);
  return x;
}

#if defined(__x86_64__)

// Output pixels per micro-kernel call: 5 x 2 accumulators, 2 weight registers and a broadcast fill
// 13 of the 16 registers. Measured on this Zen 3 (64 -> 64 channels, 3x3, 512 pixels, one thread):
// 5 and 6 pixels run at 97-99 GFLOP/s, 4 at 95-96, 3 pixels x 32 channels at 86.
constexpr int kTilePixels = 5;

struct Geometry {
  int64_t in_c, in_w, out_w, kernel_w, pad_left;
  int64_t in_block, out_block;
  Activation activation;
};

// Accumulates P output pixels [x, x + P) x 8Q channels over the kernel columns [kw0, kw1) of one
// input row: `first` starts from the bias, otherwise from what the output holds; `last` applies the
// activation. Weights: [kernel_w][in_c][8Q] of one kernel row and output channel group; out[q]:
// where the group's q-th 8 channels of output pixel 0 go.
template <int P, int Q>
OCCAM_AVX2 inline void micro_kernel(const Geometry& g, const float* in_row, const float* weights, const float* bias,
                                    float* const* out, int64_t x, int64_t kw0, int64_t kw1, bool first, bool last) {
  __m256 acc[P][Q];
  for (int p = 0; p < P; ++p) {
    for (int q = 0; q < Q; ++q) acc[p][q] = first ? _mm256_loadu_ps(bias + 8 * q) : _mm256_loadu_ps(out[q] + (x + p) * g.out_block);
  }
  for (int64_t kw = kw0; kw < kw1; ++kw) {
    const float* w = weights + kw * g.in_c * 8 * Q;
    const float* pixel = in_row + (x + kw - g.pad_left) * g.in_block;
    for (int64_t block = 0; block < g.in_c; block += g.in_block, pixel += g.in_block * g.in_w) {
      for (const float* src = pixel; src < pixel + g.in_block; src += 8, w += 8 * 8 * Q) {
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          __m256 wv[Q];
          for (int q = 0; q < Q; ++q) wv[q] = _mm256_loadu_ps(w + (i * Q + q) * 8);
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) {
            const __m256 value = _mm256_broadcast_ss(src + p * g.in_block + i);
            for (int q = 0; q < Q; ++q) acc[p][q] = _mm256_fmadd_ps(value, wv[q], acc[p][q]);
          }
        }
      }
    }
  }
  if (last && g.activation.kind != ActKind::None) {
    const bool clip = g.activation.kind == ActKind::Clip;
    const __m256 lo = _mm256_set1_ps(clip ? g.activation.lo : 0.0f), hi = _mm256_set1_ps(g.activation.hi);
    for (int p = 0; p < P; ++p) {
      for (int q = 0; q < Q; ++q) {
        acc[p][q] = _mm256_max_ps(acc[p][q], lo);
        if (clip) acc[p][q] = _mm256_min_ps(acc[p][q], hi);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    for (int q = 0; q < Q; ++q) _mm256_storeu_ps(out[q] + (x + p) * g.out_block, acc[p][q]);
  }
}

// One kernel row's contribution to one group of 8Q output channels across the output row: tiles of
// kTilePixels where the kernel lies inside the input, single pixels with the kernel clipped at the
// edges. The caller runs kernel rows outermost, so that one kernel row's weights stay in L1.
template <int Q>
OCCAM_AVX2 void output_group(const Geometry& g, const float* in_row, const float* weights, const float* bias, float* const* out,
                             bool first, bool last) {
  const int64_t inside_begin = std::min(g.pad_left, g.out_w);
  const int64_t inside_end = std::clamp(g.in_w + g.pad_left - g.kernel_w + 1, inside_begin, g.out_w);
  const auto clipped = [&](int64_t x) {
    const int64_t kw0 = std::max<int64_t>(0, g.pad_left - x), kw1 = std::min(g.kernel_w, g.in_w + g.pad_left - x);
    micro_kernel<1, Q>(g, in_row, weights, bias, out, x, kw0, std::max(kw0, kw1), first, last);
  };
  for (int64_t x = 0; x < inside_begin; ++x) clipped(x);
  int64_t x = inside_begin;
  for (; x + kTilePixels <= inside_end; x += kTilePixels) {
    micro_kernel<kTilePixels, Q>(g, in_row, weights, bias, out, x, 0, g.kernel_w, first, last);
  }
  for (; x < inside_end; ++x) micro_kernel<1, Q>(g, in_row, weights, bias, out, x, 0, g.kernel_w, first, last);
  for (x = inside_end; x < g.out_w; ++x) clipped(x);
}

OCCAM_AVX2 void run_rows(const RowConvShape& s, const float* packed, const float* rows, float* out, int64_t kernel_row_begin,
                         int64_t kernel_row_end) {
  const Geometry g{s.in_c, s.in_w, s.out_w, s.kernel_w, s.pad_left, s.in_block, s.out_block, s.activation};
  const int64_t row_floats = s.in_c * s.in_w, taps = s.kernel_h * s.kernel_w * s.in_c;
  const float* bias = packed + s.out_c * taps;
  const auto channel = [&](int64_t c) { return out + (c / s.out_block) * s.out_block * s.out_w + c % s.out_block; };
  for (int64_t group = 0; group * kGroup < s.out_c; ++group) {
    const int64_t first_channel = group * kGroup, width = std::min(kGroup, s.out_c - first_channel);
    float* const group_out[2] = {channel(first_channel), width > 8 ? channel(first_channel + 8) : nullptr};
    const float* group_weights = packed + first_channel * taps;
    for (int64_t kh = kernel_row_begin; kh < kernel_row_end; ++kh) {
      const float* in_row = rows + (kh - kernel_row_begin) * row_floats;
      const float* weights = group_weights + kh * s.kernel_w * s.in_c * width;
      const bool first = kh == kernel_row_begin, last = kh == kernel_row_end - 1;
      if (width == kGroup) {
        output_group<2>(g, in_row, weights, bias + first_channel, group_out, first, last);
      } else {
        output_group<1>(g, in_row, weights, bias + first_channel, group_out, first, last);
      }
    }
  }
}

#endif

}  // namespace

bool row_conv_supported(const RowConvShape& s) {
#if defined(__x86_64__)
  const bool cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool cpu = false;
#endif
  const auto blocks = [](int64_t channels, int64_t block) { return channels > 0 && block > 0 && block % 8 == 0 && channels % block == 0; };
  const ActKind act = s.activation.kind;
  return cpu && blocks(s.in_c, s.in_block) && blocks(s.out_c, s.out_block) && s.in_w > 0 && s.out_w > 0 && s.kernel_h > 0 &&
         s.kernel_w > 0 && s.pad_left >= 0 && (act == ActKind::None || act == ActKind::Relu || act == ActKind::Clip);
}

int64_t RowConv::packed_floats(const RowConvShape& s) { return s.out_c * s.kernel_h * s.kernel_w * s.in_c + s.out_c; }

RowConv::RowConv(const RowConvShape& shape, const float* weights, const float* bias, float* packed)
    : shape_(shape), packed_(packed) {
  const RowConvShape& s = shape_;
  const int64_t taps = s.kernel_h * s.kernel_w * s.in_c;
  for (int64_t o = 0; o < s.out_c; ++o) {
    const int64_t first_channel = o / kGroup * kGroup, width = std::min(kGroup, s.out_c - first_channel);
    float* group = packed + first_channel * taps;
    for (int64_t c = 0; c < s.in_c; ++c) {
      for (int64_t y = 0; y < s.kernel_h; ++y) {
        for (int64_t x = 0; x < s.kernel_w; ++x) {
          group[((y * s.kernel_w + x) * s.in_c + c) * width + o - first_channel] = weights[((o * s.in_c + c) * s.kernel_h + y) * s.kernel_w + x];
        }
      }
    }
  }
  float* packed_bias = packed + s.out_c * taps;
  for (int64_t o = 0; o < s.out_c; ++o) packed_bias[o] = bias != nullptr ? bias[o] : 0.0f;
}

void RowConv::run(const float* rows, float* out, int64_t kernel_row_begin, int64_t kernel_row_end) const {
  const RowConvShape& s = shape_;
  if (kernel_row_begin >= kernel_row_end) {  // the window lies on padding: the bias alone
    const float* bias = packed_ + s.out_c * s.kernel_h * s.kernel_w * s.in_c;
    for (int64_t c = 0; c < s.out_c; ++c) {
      for (int64_t x = 0; x < s.out_w; ++x) out[(c / s.out_block) * s.out_block * s.out_w + x * s.out_block + c % s.out_block] = activated(bias[c], s.activation);
    }
    return;
  }
#if defined(__x86_64__)
  run_rows(s, packed_, rows, out, kernel_row_begin, kernel_row_end);
#else
  (void)rows;
  std::abort();  // row_conv_supported() is false on this architecture: never constructed
#endif
}

}  // namespace occam::exec
