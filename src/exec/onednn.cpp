#include "exec/onednn.hpp"

#include "occam/error.hpp"

#include <omp.h>
#include <sched.h>

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

bool is_reference_impl(const dnnl::primitive_desc_base& pd) {
  return std::string_view(pd.impl_info_str()).starts_with("ref");
}

}  // namespace occam::exec
