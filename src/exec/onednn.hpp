// oneDNN plumbing shared by the executors: the CPU engine, thread control, IR -> oneDNN
// translations of shapes and activations.
#pragma once

#include "occam/model.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <string_view>
#include <vector>

namespace occam::exec {

// The names both executors spell their primitives with.
using dnnl::algorithm;
using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;
constexpr auto kInference = dnnl::prop_kind::forward_inference;

dnnl::engine& cpu_engine();

// Threads the calling thread's oneDNN primitives will use (0: every hardware thread we may run on).
void set_threads(int threads);
int available_threads();

// Channels per block of the ISA's native blocked layout: 16 with AVX-512 (nChw16c), else 8 (nChw8c).
int64_t channel_block();
dnnl::memory::format_tag blocked_tag();

dnnl::memory::dims dims_of(const Shape& shape);
dnnl::memory::desc plain_md(const Shape& shape);  // dense NCHW, as HostTensor holds it
dnnl::memory::desc any_md(const Shape& shape);

// One oneDNN elementwise operation; an IR activation is one or two of them.
struct Eltwise {
  dnnl::algorithm algorithm;
  float alpha = 0, beta = 0;
};
std::vector<Eltwise> eltwise_ops(const Activation& activation);
void append_activation(dnnl::post_ops& ops, const Activation& activation);

// Attributes with the scratchpad supplied by the caller (executors share one accounted scratchpad).
dnnl::primitive_attr user_scratchpad(const dnnl::post_ops& ops = {});

// oneDNN's portable C fallbacks ("ref:..."): correct but an order of magnitude slower than its JIT
// kernels, so compilation tries other layouts before settling for one.
bool is_reference_impl(const dnnl::primitive_desc_base& pd);

}  // namespace occam::exec
