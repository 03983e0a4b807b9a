// The fused executor's convolution kernels on one thread, side by side: occam's own micro-kernel
// (RowConv) against oneDNN on the same rows, for a dense KxK convolution of C -> C channels over
// H output rows of width W (dncnn's layers by default: 64 channels, 3x3, 512 pixels).
//
//   row_conv_bench [--channels C] [--width W] [--rows H] [--kernel K] [--runs N]
//
// Row-blocked rows (each row oneDNN's nChw8c, or nChw16c with AVX-512, at height 1), as the fused
// executor streams dense convolution chains:
//   own, row-blocked        RowConv, one call per output row over its K input rows
//   oneDNN 1xK stacked      what oneDNN offers there: a 1xK convolution over K x C stacked channels
//   oneDNN KxK whole        the reference's kernel: the KxK convolution on the whole nChw8c tensor
// NHWC rows, as the executor streams everything else:
//   own, NHWC band          RowConv over an NHWC band of H rows
//   oneDNN NHWC band        oneDNN's KxK convolution on the same band
// Rows of zeros above and below stand for the padding, as in the executor. Rounds interleave the
// variants; printed per variant: min and median ms, GFLOP/s at the minimum, and the whole-tensor
// kernel's time over this one's (above 1: faster than the reference's kernel). Outputs are
// compared with the whole-tensor kernel's.
#include "exec/onednn.hpp"
#include "exec/row_conv.hpp"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using namespace occam::exec;

struct AlignedFloats {
  explicit AlignedFloats(int64_t count)
      : data(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((count * 4 + 63) / 64 * 64))), &std::free), size(count) {
    std::fill(data.get(), data.get() + size, 0.0f);
  }
  float* get() const { return data.get(); }
  std::unique_ptr<float, decltype(&std::free)> data;
  int64_t size;
};

struct Variant {
  std::string name;
  std::function<void()> run;
  std::function<float(int64_t c, int64_t y, int64_t x)> output;  // channel, row, pixel
  std::vector<double> ms;
};

dnnl::convolution_forward convolution(const memory::desc& src, const memory::desc& dst, int64_t out_c, int64_t in_c, int64_t kh,
                                      int64_t kw, int64_t pad_w, memory::desc* weights_md) {
  const memory::desc weights({out_c, in_c, kh, kw}, DataType::f32, Tag::any);
  const memory::desc bias({out_c}, DataType::f32, Tag::x);
  dnnl::post_ops ops;
  ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  const dnnl::convolution_forward::primitive_desc pd(
      {kInference, algorithm::convolution_direct, src, weights, bias, dst, {1, 1}, {0, pad_w}, {0, pad_w}}, attr, cpu_engine());
  if (!std::string_view(pd.impl_info_str()).starts_with("jit")) fmt::print("note: oneDNN runs {} on {}\n", kh == 1 ? "1xK" : "KxK", pd.impl_info_str());
  *weights_md = pd.weights_desc();
  return dnnl::convolution_forward(pd);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t channels = 64, width = 512, rows = 32, kernel = 3;
  int runs = 10;
  CLI::App app("occam's own convolution row kernel against oneDNN's, one thread");
  app.add_option("--channels", channels, "input and output channels (a multiple of 16)")->capture_default_str();
  app.add_option("--width", width, "pixels per row")->capture_default_str();
  app.add_option("--rows", rows, "output rows")->capture_default_str();
  app.add_option("--kernel", kernel, "K of the KxK kernel (odd)")->capture_default_str();
  app.add_option("--runs", runs, "interleaved rounds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  set_threads(1);
  const int64_t block = channel_block(), pad = kernel / 2, in_rows = rows + kernel - 1, row_floats = channels * width;
  const RowConvShape blocked_shape{channels, channels, width, width, kernel, kernel, pad, block, block, occam::Activation::relu()};
  RowConvShape nhwc_shape = blocked_shape;
  nhwc_shape.in_block = nhwc_shape.out_block = channels;
  if (!row_conv_supported(blocked_shape)) {
    fmt::print(stderr, "row_conv_bench: the own kernel does not cover this CPU or shape (AVX2 with FMA, channels a multiple of {})\n", block);
    return 1;
  }

  // The same random image and weights for all: rows of zeros above and below, row-major rows.
  std::mt19937 rng(20261126);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> image(static_cast<size_t>(rows * row_floats)), filters(static_cast<size_t>(channels * channels * kernel * kernel));
  std::vector<float> bias(static_cast<size_t>(channels));
  for (float& v : image) v = uniform(rng);
  for (float& v : filters) v = uniform(rng) / static_cast<float>(channels * kernel);
  for (float& v : bias) v = uniform(rng);
  // value(c, y, x) of input row y (0..rows-1 are the image; the rest zeros) in either layout
  AlignedFloats blocked_in(in_rows * row_floats), nhwc_in(in_rows * row_floats), planar_in(in_rows * row_floats);
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t x = 0; x < width; ++x) {
        const float v = image[static_cast<size_t>((y * channels + c) * width + x)];
        const int64_t r = y + pad;
        blocked_in.get()[r * row_floats + (c / block) * width * block + x * block + c % block] = v;
        nhwc_in.get()[r * row_floats + x * channels + c] = v;
        planar_in.get()[((c / block) * in_rows + r) * width * block + x * block + c % block] = v;  // whole nChw8c tensor
      }
    }
  }

  std::vector<Variant> variants;
  // own, row-blocked and NHWC
  AlignedFloats packed(RowConv::packed_floats(blocked_shape)), packed_nhwc(RowConv::packed_floats(nhwc_shape));
  const auto own_blocked = std::make_shared<RowConv>(blocked_shape, filters.data(), bias.data(), packed.get());
  const auto own_nhwc = std::make_shared<RowConv>(nhwc_shape, filters.data(), bias.data(), packed_nhwc.get());
  auto own_blocked_out = std::make_shared<AlignedFloats>(rows * row_floats), own_nhwc_out = std::make_shared<AlignedFloats>(rows * row_floats);
  const auto blocked_at = [=](const AlignedFloats& out) {
    return [&out, block, width, row_floats](int64_t c, int64_t y, int64_t x) { return out.get()[y * row_floats + (c / block) * width * block + x * block + c % block]; };
  };
  variants.push_back({"own, row-blocked", [&, own_blocked, own_blocked_out] {
                        for (int64_t y = 0; y < rows; ++y) own_blocked->run(blocked_in.get() + y * row_floats, own_blocked_out->get() + y * row_floats);
                      },
                      blocked_at(*own_blocked_out), {}});

  // oneDNN 1xK over K stacked rows, one call per output row
  memory::desc stacked_weights_md;
  const memory::desc stacked_src({1, kernel * channels, 1, width}, DataType::f32, blocked_tag());
  const memory::desc row_dst({1, channels, 1, width}, DataType::f32, blocked_tag());
  const auto stacked = convolution(stacked_src, row_dst, channels, kernel * channels, 1, kernel, pad, &stacked_weights_md);
  std::vector<float> stacked_filters(static_cast<size_t>(channels * kernel * channels * kernel));
  for (int64_t o = 0; o < channels; ++o) {
    for (int64_t j = 0; j < kernel; ++j) {
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t x = 0; x < kernel; ++x) {
          stacked_filters[static_cast<size_t>(((o * kernel + j) * channels + c) * kernel + x)] = filters[static_cast<size_t>(((o * channels + c) * kernel + j) * kernel + x)];
        }
      }
    }
  }
  dnnl::stream stream(cpu_engine());
  const auto reordered = [&](const memory::desc& md, const float* data, const memory::dims& dims) {
    memory to(md, cpu_engine());
    memory from({dims, DataType::f32, Tag::oihw}, cpu_engine(), const_cast<float*>(data));
    dnnl::reorder(from, to).execute(stream, from, to);
    stream.wait();
    return to;
  };
  const memory stacked_weights = reordered(stacked_weights_md, stacked_filters.data(), {channels, kernel * channels, 1, kernel});
  const memory bias_memory({{channels}, DataType::f32, Tag::x}, cpu_engine(), bias.data());
  auto stacked_out = std::make_shared<AlignedFloats>(rows * row_floats);
  variants.push_back({"oneDNN 1xK stacked", [&, stacked, stacked_out] {
                        memory src(stacked_src, cpu_engine(), DNNL_MEMORY_NONE), dst(row_dst, cpu_engine(), DNNL_MEMORY_NONE);
                        for (int64_t y = 0; y < rows; ++y) {
                          src.set_data_handle(blocked_in.get() + y * row_floats);
                          dst.set_data_handle(stacked_out->get() + y * row_floats);
                          stacked.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, stacked_weights}, {DNNL_ARG_BIAS, bias_memory}, {DNNL_ARG_DST, dst}});
                        }
                        stream.wait();
                      },
                      blocked_at(*stacked_out), {}});

  // oneDNN's KxK convolution in one call over all rows of an input held in `tag` (rows of zeros as
  // its padding rows), into an output in the same layout read back by `at`.
  const auto one_call = [&](const std::string& name, Tag tag, const AlignedFloats& input,
                            const std::function<std::function<float(int64_t, int64_t, int64_t)>(const AlignedFloats&)>& at) {
    const memory::desc src({1, channels, in_rows, width}, DataType::f32, tag), dst({1, channels, rows, width}, DataType::f32, tag);
    memory::desc weights_md;
    const auto primitive = convolution(src, dst, channels, channels, kernel, kernel, pad, &weights_md);
    auto out = std::make_shared<AlignedFloats>(rows * row_floats);
    const auto args = std::make_shared<std::unordered_map<int, memory>>(std::unordered_map<int, memory>{
        {DNNL_ARG_SRC, memory(src, cpu_engine(), input.get())},
        {DNNL_ARG_WEIGHTS, reordered(weights_md, filters.data(), {channels, channels, kernel, kernel})},
        {DNNL_ARG_BIAS, bias_memory},
        {DNNL_ARG_DST, memory(dst, cpu_engine(), out->get())}});
    variants.push_back({name, [&stream, primitive, args, out] {
                          primitive.execute(stream, *args);
                          stream.wait();
                        },
                        at(*out), {}});
  };
  one_call("oneDNN KxK whole", blocked_tag(), planar_in, [=](const AlignedFloats& out) {
    return [&out, block, width, rows](int64_t c, int64_t y, int64_t x) { return out.get()[((c / block) * rows + y) * width * block + x * block + c % block]; };
  });

  // NHWC bands: the own kernel per output row, oneDNN on the whole band
  const auto nhwc_at = [=](const AlignedFloats& out) {
    return [&out, channels, row_floats](int64_t c, int64_t y, int64_t x) { return out.get()[y * row_floats + x * channels + c]; };
  };
  variants.push_back({"own, NHWC band", [&, own_nhwc, own_nhwc_out] {
                        for (int64_t y = 0; y < rows; ++y) own_nhwc->run(nhwc_in.get() + y * row_floats, own_nhwc_out->get() + y * row_floats);
                      },
                      nhwc_at(*own_nhwc_out), {}});
  one_call("oneDNN NHWC band", Tag::nhwc, nhwc_in, nhwc_at);

  for (Variant& v : variants) v.run();  // first touches, and the outputs to compare
  const Variant& reference = variants[2];
  for (int round = 0; round < runs; ++round) {
    for (size_t k = 0; k < variants.size(); ++k) {
      Variant& v = variants[(k + static_cast<size_t>(round)) % variants.size()];
      const auto start = std::chrono::steady_clock::now();
      v.run();
      v.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
  }
  const double gflop = 2.0 * static_cast<double>(rows * width * channels * channels * kernel * kernel) * 1e-9;
  fmt::print("{}x{} convolution, {} -> {} channels, {} rows of {} pixels, ReLU, one thread, {} rounds, {:.2f} GFLOP per run, {}-channel blocks\n",
             kernel, kernel, channels, channels, rows, width, runs, gflop, block);
  std::sort(variants[2].ms.begin(), variants[2].ms.end());
  const double reference_min = variants[2].ms.front(), reference_median = variants[2].ms[variants[2].ms.size() / 2];
  for (Variant& v : variants) {
    std::sort(v.ms.begin(), v.ms.end());
    const double min = v.ms.front(), median = v.ms[v.ms.size() / 2];
    double worst = 0, largest = 0;
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = 0; y < rows; ++y) {
        for (int64_t x = 0; x < width; ++x) {
          worst = std::max(worst, static_cast<double>(std::fabs(v.output(c, y, x) - reference.output(c, y, x))));
          largest = std::max(largest, static_cast<double>(std::fabs(reference.output(c, y, x))));
        }
      }
    }
    fmt::print("  {:<20} min {:8.3f} ms  median {:8.3f} ms  {:6.1f} GFLOP/s  whole/this {:.3f} (min) {:.3f} (median)  max error {:.1e}\n", v.name,
               min, median, gflop / min * 1e3, reference_min / min, reference_median / median, worst / std::max(largest, 1e-30));
  }
  return 0;
}
