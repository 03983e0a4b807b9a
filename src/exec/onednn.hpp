// oneDNN plumbing shared by the executors: the CPU engine, thread control, IR -> oneDNN
// translations of shapes and activations.
#pragma once

#include "occam/model.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
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
// The bottom and right padding of window `win` from `in` to `out` as oneDNN wants it
// (effective_pad_end: PyTorch's ceil_mode may add a window past the padding).
dnnl::memory::dims pad_end_dims(const Window& win, const Shape& in, const Shape& out);
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

// A convolution's groups as oneDNN runs them. Its JIT kernels take groups of whole channel blocks;
// with fewer channels per group (resnext50_32x4d: 4) oneDNN 2.6 runs a GEMM per group instead,
// several times slower (on AVX2, a 56-pixel row of resnext's first grouped 3x3: 91 us, against 24
// us for the same row as 16 groups of 8 channels on the JIT kernel, twice the multiply-adds).
// Merging `merged` neighbouring groups into one whose weights are block diagonal (zeros between the
// merged groups) keeps every output; chosen where the merged convolution gets a JIT kernel and the
// graph's does not, else merged = 1.
struct ConvGroups {
  int64_t groups = 1;  // as oneDNN runs them
  int64_t merged = 1;  // graph groups per oneDNN group
};
ConvGroups onednn_groups(const Op& op, const Shape& in, const Shape& out);
// The weights' dims for oneDNN (goihw with groups, else oihw), `kernel_h` rows of the kernel.
dnnl::memory::dims conv_weight_dims(const ConvGroups& groups, int64_t in_c, int64_t out_c, int64_t kernel_h, int64_t kernel_w);
// The graph's weights (out_c x in_c/groups x kernel) laid out for the merged groups: each merged
// group's block diagonal of its graph groups' filters, zeros elsewhere. Empty where nothing merges.
std::vector<float> merged_group_weights(const Op& op, const ConvGroups& groups, int64_t in_c, int64_t out_c);

// ", N grouped convolutions merged into whole channel blocks" for executors' descriptions; empty for 0.
std::string merged_groups_summary(int64_t convolutions);

// oneDNN's portable C fallbacks ("ref:..."): correct but an order of magnitude slower than its JIT
// kernels, so compilation tries other layouts before settling for one.
bool is_reference_impl(const dnnl::primitive_desc_base& pd);

}  // namespace occam::exec
