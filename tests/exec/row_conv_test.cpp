#include "exec/row_conv.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace occam::exec {
namespace {

// A plain convolution of one output row over the kernel rows [begin, end), whose input rows start at
// `rows`, written from the definition: what RowConv must compute.
std::vector<float> convolve_by_definition(const RowConvShape& s, const std::vector<float>& rows, const std::vector<float>& weights,
                                          const std::vector<float>& bias, int64_t begin, int64_t end) {
  const auto at = [&](int64_t kh, int64_t c, int64_t x) {
    return rows[static_cast<size_t>((kh - begin) * s.in_c * s.in_w + (c / s.in_block) * s.in_w * s.in_block + x * s.in_block + c % s.in_block)];
  };
  std::vector<float> out(static_cast<size_t>(s.out_c * s.out_w));
  for (int64_t o = 0; o < s.out_c; ++o) {
    for (int64_t x = 0; x < s.out_w; ++x) {
      double sum = bias.empty() ? 0.0 : bias[static_cast<size_t>(o)];
      for (int64_t c = 0; c < s.in_c; ++c) {
        for (int64_t kh = begin; kh < end; ++kh) {
          for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
            const int64_t ix = x + kw - s.pad_left;
            if (ix < 0 || ix >= s.in_w) continue;
            sum += static_cast<double>(weights[static_cast<size_t>(((o * s.in_c + c) * s.kernel_h + kh) * s.kernel_w + kw)]) * at(kh, c, ix);
          }
        }
      }
      auto value = static_cast<float>(sum);
      if (s.activation.kind == ActKind::Relu) value = std::max(value, 0.0f);
      if (s.activation.kind == ActKind::Clip) value = std::clamp(value, s.activation.lo, s.activation.hi);
      out[static_cast<size_t>((o / s.out_block) * s.out_w * s.out_block + x * s.out_block + o % s.out_block)] = value;
    }
  }
  return out;
}

TEST(RowConv, EqualsTheDefinitionOnRandomShapes) {
  std::mt19937 rng(20261126);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  int checked = 0;
  for (int trial = 0; trial < 90; ++trial) {
    // Blocks of 8 or 16 channels (oneDNN's blocked rows) or all of them (NHWC rows); output channels
    // a multiple of 8, so that some end in a group of 8 rather than 16.
    RowConvShape s;
    const auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    s.in_c = 16 * pick(1, 3) - (trial % 2 ? 8 : 0);
    s.out_c = 8 * pick(1, 5);
    const auto block = [&](int64_t channels) {
      const int64_t choice = pick(0, 2);
      return choice == 0 ? channels : choice == 1 || channels % 16 != 0 ? 8 : 16;
    };
    s.in_block = block(s.in_c);
    s.out_block = block(s.out_c);
    s.kernel_h = pick(1, 3);
    s.kernel_w = pick(1, 5);
    s.in_w = pick(1, 23);
    s.pad_left = pick(0, s.kernel_w);
    const int64_t pad_right = pick(0, s.kernel_w);
    // The kernel rows the image has (the others on padding), sometimes none.
    const int64_t begin = pick(0, s.kernel_h - 1), end = trial % 7 == 0 ? begin : pick(begin + 1, s.kernel_h);
    s.out_w = s.in_w + s.pad_left + pad_right - s.kernel_w + 1;
    if (s.out_w < 1) continue;
    const int kind = trial % 4;
    s.activation = kind == 1 ? Activation::relu() : kind == 2 ? Activation::relu6() : kind == 3 ? Activation{ActKind::Clip, -0.5f, 0.25f} : Activation{};
    if (!row_conv_supported(s)) GTEST_SKIP() << "this CPU has no AVX2 with FMA";

    std::vector<float> rows(static_cast<size_t>((end - begin) * s.in_c * s.in_w)), weights(static_cast<size_t>(s.out_c * s.in_c * s.kernel_h * s.kernel_w));
    std::vector<float> bias(trial % 5 == 0 ? 0 : static_cast<size_t>(s.out_c));
    for (auto* values : {&rows, &weights, &bias}) std::generate(values->begin(), values->end(), [&] { return uniform(rng); });
    std::vector<float> packed(static_cast<size_t>(RowConv::packed_floats(s)));
    const RowConv conv(s, weights.data(), bias.empty() ? nullptr : bias.data(), packed.data());
    std::vector<float> out(static_cast<size_t>(s.out_c * s.out_w), std::nanf(""));
    conv.run(rows.data(), out.data(), begin, end);

    const std::vector<float> expected = convolve_by_definition(s, rows, weights, bias, begin, end);
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_NEAR(out[i], expected[i], 1e-4f * (1.0f + std::fabs(expected[i])))
          << "trial " << trial << ": " << s.in_c << " -> " << s.out_c << " channels in blocks of " << s.in_block << " -> " << s.out_block
          << ", kernel " << s.kernel_h << "x" << s.kernel_w << " (rows " << begin << ".." << end << "), width " << s.in_w << " -> "
          << s.out_w << ", pad left " << s.pad_left << ", element " << i;
    }
    ++checked;
  }
  EXPECT_GT(checked, 60);
}

TEST(RowConv, SupportsOnlyWhatItsMicroKernelCovers) {
  const RowConvShape dense{64, 64, 512, 512, 3, 3, 1, 8, 8, Activation::relu()};
  if (!row_conv_supported(dense)) GTEST_SKIP() << "this CPU has no AVX2 with FMA";
  const auto supported_with = [&](const auto& change) {
    RowConvShape s = dense;
    change(s);
    return row_conv_supported(s);
  };
  EXPECT_TRUE(supported_with([](RowConvShape& s) { s.in_block = s.out_block = 64; }));  // NHWC rows
  EXPECT_FALSE(supported_with([](RowConvShape& s) { s.out_c = s.out_block = 20; }));   // not a multiple of 8 channels
  EXPECT_FALSE(supported_with([](RowConvShape& s) { s.in_c = 12; }));                   // a partial block
  EXPECT_FALSE(supported_with([](RowConvShape& s) { s.in_c = 24, s.in_block = 16; }));  // blocks that do not divide the channels
  EXPECT_FALSE(supported_with([](RowConvShape& s) { s.activation = {ActKind::Sigmoid}; }));
}

}  // namespace
}  // namespace occam::exec
