#include "exec/row_conv.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace occam::exec {
namespace {

// A plain convolution of one output row over kernel_h row-blocked input rows, written from the
// definition: what RowConv must compute.
std::vector<float> convolve_by_definition(const RowConvShape& s, const std::vector<float>& rows, const std::vector<float>& weights,
                                          const std::vector<float>& bias) {
  const auto at = [&](int64_t kh, int64_t c, int64_t x) { return rows[static_cast<size_t>(kh * s.in_c * s.in_w + (c / s.block) * s.in_w * s.block + x * s.block + c % s.block)]; };
  std::vector<float> out(static_cast<size_t>(s.out_c * s.out_w));
  for (int64_t o = 0; o < s.out_c; ++o) {
    for (int64_t x = 0; x < s.out_w; ++x) {
      double sum = bias.empty() ? 0.0 : bias[static_cast<size_t>(o)];
      for (int64_t c = 0; c < s.in_c; ++c) {
        for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
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
      out[static_cast<size_t>((o / s.block) * s.out_w * s.block + x * s.block + o % s.block)] = value;
    }
  }
  return out;
}

TEST(RowConv, EqualsTheDefinitionOnRandomShapes) {
  std::mt19937 rng(20261126);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  int checked = 0;
  for (int trial = 0; trial < 60; ++trial) {
    RowConvShape s;
    s.block = trial % 3 == 0 ? 16 : 8;
    s.in_c = s.block * std::uniform_int_distribution<int64_t>(1, 4)(rng);
    s.out_c = 16 * std::uniform_int_distribution<int64_t>(1, 3)(rng);
    s.kernel_h = std::uniform_int_distribution<int64_t>(1, 3)(rng);
    s.kernel_w = std::uniform_int_distribution<int64_t>(1, 5)(rng);
    s.in_w = std::uniform_int_distribution<int64_t>(1, 23)(rng);
    s.pad_left = std::uniform_int_distribution<int64_t>(0, s.kernel_w)(rng);
    const int64_t pad_right = std::uniform_int_distribution<int64_t>(0, s.kernel_w)(rng);
    s.out_w = s.in_w + s.pad_left + pad_right - s.kernel_w + 1;
    if (s.out_w < 1) continue;
    const int kind = trial % 4;
    s.activation = kind == 1 ? Activation::relu() : kind == 2 ? Activation::relu6() : kind == 3 ? Activation{ActKind::Clip, -0.5f, 0.25f} : Activation{};
    if (!row_conv_supported(s)) GTEST_SKIP() << "this CPU has no AVX2 with FMA";

    std::vector<float> rows(static_cast<size_t>(s.kernel_h * s.in_c * s.in_w)), weights(static_cast<size_t>(s.out_c * s.in_c * s.kernel_h * s.kernel_w));
    std::vector<float> bias(trial % 5 == 0 ? 0 : static_cast<size_t>(s.out_c));
    for (auto* values : {&rows, &weights, &bias}) std::generate(values->begin(), values->end(), [&] { return uniform(rng); });
    std::vector<float> packed(static_cast<size_t>(RowConv::packed_floats(s)));
    const RowConv conv(s, weights.data(), bias.empty() ? nullptr : bias.data(), packed.data());
    std::vector<float> out(static_cast<size_t>(s.out_c * s.out_w), std::nanf(""));
    conv.run(rows.data(), out.data());

    const std::vector<float> expected = convolve_by_definition(s, rows, weights, bias);
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_NEAR(out[i], expected[i], 1e-4f * (1.0f + std::fabs(expected[i])))
          << "trial " << trial << ": block " << s.block << ", " << s.in_c << " -> " << s.out_c << " channels, kernel " << s.kernel_h << "x"
          << s.kernel_w << ", width " << s.in_w << " -> " << s.out_w << ", pad left " << s.pad_left << ", element " << i;
    }
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

TEST(RowConv, SupportsOnlyWhatItsMicroKernelCovers) {
  RowConvShape s{64, 64, 512, 512, 3, 3, 1, 8, Activation::relu()};
  if (!row_conv_supported(s)) GTEST_SKIP() << "this CPU has no AVX2 with FMA";
  RowConvShape odd_outputs = s;
  odd_outputs.out_c = 24;
  EXPECT_FALSE(row_conv_supported(odd_outputs));
  RowConvShape partial_block = s;
  partial_block.in_c = 12;
  EXPECT_FALSE(row_conv_supported(partial_block));
  RowConvShape sigmoid = s;
  sigmoid.activation = {ActKind::Sigmoid};
  EXPECT_FALSE(row_conv_supported(sigmoid));
}

}  // namespace
}  // namespace occam::exec
