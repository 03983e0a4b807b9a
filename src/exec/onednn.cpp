#include "exec/onednn.hpp"

#include "exec/windows.hpp"
#include "occam/error.hpp"

#include <fmt/core.h>

#include <omp.h>
#include <sched.h>

#include <algorithm>

namespace occam::exec {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

int available_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

void set_threads(int threads) {
  // Debian's libdnnl runs on GNU OpenMP; its thread count is a per-thread OpenMP setting, so it is
  // set on every call, from the calling thread.
  omp_set_num_threads(threads > 0 ? threads : available_threads());
}

int64_t channel_block() {
  static const int64_t block = [] {
    const auto isa = static_cast<int>(dnnl::get_effective_cpu_isa());
    return (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 16 : 8;
  }();
  return block;
}

dnnl::memory::format_tag blocked_tag() {
  return channel_block() == 16 ? dnnl::memory::format_tag::nChw16c : dnnl::memory::format_tag::nChw8c;
}

dnnl::memory::dims dims_of(const Shape& shape) { return {shape.n, shape.c, shape.h, shape.w}; }

dnnl::memory::dims pad_end_dims(const Window& win, const Shape& in, const Shape& out) {
  return {effective_pad_end(in.h, win.pad_top, win.pad_bottom, win.extent_h(), win.stride_h, out.h),
          effective_pad_end(in.w, win.pad_left, win.pad_right, win.extent_w(), win.stride_w, out.w)};
}

dnnl::memory::desc plain_md(const Shape& shape) {
  return {dims_of(shape), dnnl::memory::data_type::f32, dnnl::memory::format_tag::nchw};
}

dnnl::memory::desc any_md(const Shape& shape) {
  return {dims_of(shape), dnnl::memory::data_type::f32, dnnl::memory::format_tag::any};
}

std::vector<Eltwise> eltwise_ops(const Activation& activation) {
  using dnnl::algorithm;
  switch (activation.kind) {
    case ActKind::None: return {};
    case ActKind::Relu: return {{algorithm::eltwise_relu, 0.0f, 0.0f}};
    case ActKind::LeakyRelu: return {{algorithm::eltwise_relu, activation.lo, 0.0f}};
    case ActKind::Clip: return {{algorithm::eltwise_clip, activation.lo, activation.hi}};
    case ActKind::Sigmoid: return {{algorithm::eltwise_logistic, 0.0f, 0.0f}};
    case ActKind::Swish: return {{algorithm::eltwise_swish, 1.0f, 0.0f}};
    case ActKind::Tanh: return {{algorithm::eltwise_tanh, 0.0f, 0.0f}};
    // oneDNN 2.6 has no hard sigmoid: clip(alpha * x + beta, 0, 1).
    case ActKind::HardSigmoid:
      return {{algorithm::eltwise_linear, activation.lo, activation.hi}, {algorithm::eltwise_clip, 0.0f, 1.0f}};
    case ActKind::HardSwish: return {{algorithm::eltwise_hardswish, 0.0f, 0.0f}};
  }
  fail("activation {} has no oneDNN equivalent", to_string(activation.kind));
}

void append_activation(dnnl::post_ops& ops, const Activation& activation) {
  for (const Eltwise& e : eltwise_ops(activation)) ops.append_eltwise(1.0f, e.algorithm, e.alpha, e.beta);
}

dnnl::primitive_attr user_scratchpad(const dnnl::post_ops& ops) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(ops);
  return attr;
}

namespace {

// Whether oneDNN has a JIT convolution kernel for `op` on NHWC tensors with `groups` groups.
bool jit_convolution(const Op& op, const Shape& in, const Shape& out, int64_t groups) {
  const Window& win = op.window;
  const memory::desc src({1, in.c, in.h, in.w}, DataType::f32, Tag::nhwc);
  const memory::desc dst({1, out.c, out.h, out.w}, DataType::f32, Tag::nhwc);
  const memory::desc weights(conv_weight_dims({groups, 1}, in.c, out.c, win.kernel_h, win.kernel_w), DataType::f32, Tag::any);
  const dnnl::convolution_forward::desc desc(kInference, algorithm::convolution_direct, src, weights, dst,
                                             {win.stride_h, win.stride_w}, {win.dilation_h - 1, win.dilation_w - 1},
                                             {win.pad_top, win.pad_left}, pad_end_dims(win, in, out));
  const dnnl::convolution_forward::primitive_desc pd(desc, cpu_engine(), true);
  return pd && std::string_view(pd.impl_info_str()).starts_with("jit");  // not "x64:gemm:jit", a GEMM per group
}

}  // namespace

ConvGroups onednn_groups(const Op& op, const Shape& in, const Shape& out) {
  const int64_t groups = op.groups, in_per = in.c / groups, out_per = out.c / groups, block = channel_block();
  if (groups == 1 || (in_per == 1 && out_per == 1)) return {groups, 1};  // dense, or depthwise (its own JIT kernels)
  const auto factor = [&](int64_t per) { return per % block == 0 ? 1 : block % per == 0 ? block / per : 0; };
  const int64_t merged = std::max(factor(in_per), factor(out_per));
  if (merged <= 1 || factor(in_per) == 0 || factor(out_per) == 0 || groups % merged != 0) return {groups, 1};
  if (jit_convolution(op, in, out, groups) || !jit_convolution(op, in, out, groups / merged)) return {groups, 1};
  return {groups / merged, merged};
}

dnnl::memory::dims conv_weight_dims(const ConvGroups& groups, int64_t in_c, int64_t out_c, int64_t kernel_h, int64_t kernel_w) {
  const int64_t g = groups.groups;
  return g > 1 ? memory::dims{g, out_c / g, in_c / g, kernel_h, kernel_w} : memory::dims{out_c, in_c, kernel_h, kernel_w};
}

std::vector<float> merged_group_weights(const Op& op, const ConvGroups& groups, int64_t in_c, int64_t out_c) {
  if (groups.merged == 1) return {};
  const int64_t in_per = in_c / op.groups, out_per = out_c / op.groups;
  const int64_t merged_in = in_per * groups.merged, kernel = op.window.kernel_h * op.window.kernel_w;
  const float* w = op.weight->data();
  std::vector<float> merged(static_cast<size_t>(out_c * merged_in * kernel), 0.0f);
  for (int64_t o = 0; o < out_c; ++o) {
    // Output channel o lies in graph group o / out_per, which is member (o / out_per) % merged of its merged group.
    const int64_t member = (o / out_per) % groups.merged;
    std::copy_n(w + o * in_per * kernel, in_per * kernel, merged.begin() + (o * merged_in + member * in_per) * kernel);
  }
  return merged;
}

std::string merged_groups_summary(int64_t convolutions) {
  if (convolutions == 0) return {};
  return fmt::format(", {} grouped convolution{} merged into whole channel blocks", convolutions, convolutions == 1 ? "" : "s");
}

bool is_reference_impl(const dnnl::primitive_desc_base& pd) {
  return std::string_view(pd.impl_info_str()).starts_with("ref");
}

}  // namespace occam::exec
