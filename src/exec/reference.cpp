// The layer-by-layer reference executor on oneDNN.
//
// Compilation walks the graph in topological order and turns each op into one oneDNN primitive (a
// few ops need a second one or a small host kernel), choosing layouts as it goes: every tensor has a
// primary placement (a buffer and a memory descriptor); a consumer that wants another layout gets a
// reorder into a cached copy. Buffers are "values": a value lives from the first step that touches
// it to the last, and all values share one arena planned from those lifetimes. In-place tricks
// (a residual Add as a `sum` post-op into the other operand's buffer, binary ops into a dead first
// operand) make several tensors share one value in turn.
#include "exec/arena.hpp"
#include "exec/onednn.hpp"
#include "exec/tensors.hpp"
#include "exec/windows.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <unordered_map>

namespace occam {
namespace exec {
namespace {

struct Value {
  int64_t bytes = 0;
  int first = INT_MAX;
  int last = -1;
  int external_input = -1;   // index of the graph input whose caller memory this is
  int external_output = -1;  // index of the graph output whose caller memory this is
  int64_t offset = 0;        // in the arena
};

struct Placement {
  int value = -1;
  memory::desc md;
};

// A primitive argument (or host kernel operand) that lives in a value.
struct ValueArg {
  int arg = 0;
  int value = -1;
  memory::desc md;
};

// A host kernel gets the addresses of its value arguments, in order.
using HostKernel = std::function<void(std::span<float* const>)>;

struct Step {
  std::string op;  // the op it implements, for messages
  std::optional<dnnl::primitive> primitive;
  HostKernel host;
  std::vector<ValueArg> args;
  std::unordered_map<int, memory> fixed;  // weights and biases, bound at compile time
  memory::desc scratchpad;                // the shared scratchpad as this primitive sees it
  // After the arena is allocated: the memory objects (kept alive here) and the C argument list
  // handed to oneDNN, built once so that a run allocates nothing.
  std::vector<memory> bound;
  std::vector<dnnl_exec_arg_t> exec_args;
  std::vector<float*> host_args;
};

HostKernel window_average(const Shape& in, AxisWindows rows, AxisWindows cols) {
  return [in, rows = std::move(rows), cols = std::move(cols)](std::span<float* const> p) {
    const float* src = p[0];
    float* dst = p[1];
    const int64_t planes = in.n * in.c;
    const size_t out_h = rows.taps.size(), out_w = cols.taps.size();
    for (int64_t plane = 0; plane < planes; ++plane) {
      const float* s = src + plane * in.h * in.w;
      float* d = dst + static_cast<size_t>(plane) * out_h * out_w;
      for (size_t oy = 0; oy < out_h; ++oy) {
        for (size_t ox = 0; ox < out_w; ++ox) {
          float sum = 0;
          for (int64_t y : rows.taps[oy]) {
            for (int64_t x : cols.taps[ox]) sum += s[y * in.w + x];
          }
          d[oy * out_w + ox] = sum / (rows.divisor[oy] * cols.divisor[ox]);
        }
      }
    }
  };
}

// One compiled variant: its steps, values, arena and weights.
class Program {
public:
  Program(const Graph& graph, const ReferenceOptions& options, ActivationLayout layout);

  void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs);
  const MemoryAccount& memory_account() const { return account_; }
  int fused_adds() const { return fused_adds_; }
  int convolutions() const { return convolutions_; }
  int winograd_convolutions() const { return winograd_convolutions_; }
  // Steps oneDNN runs with its reference (non-JIT) code: tens of times slower than its kernels.
  int reference_code_steps() const { return reference_code_steps_; }
  int merged_group_convolutions() const { return merged_group_convolutions_; }
  int steps() const { return static_cast<int>(steps_.size()); }
  std::span<const Shape> input_shapes() const { return input_shapes_; }
  std::span<const Shape> output_shapes() const { return output_shapes_; }
  // What distinguishes two compilations: the layout of every value and the kernel of every step.
  std::vector<std::string> signature() const;

private:
  // --- compilation
  std::string where(const Op& op) const;
  [[noreturn]] void fail_op(const Op& op, const std::string& what) const;
  int new_value(const memory::desc& md);
  int add_step(Step step);
  Placement need(TensorId tensor, const memory::desc& md);
  bool writable(TensorId tensor, OpId op, const Placement& placement) const;
  memory::desc policy_md(const Shape& shape) const;
  memory weight_memory(const memory::desc& user_md, const float* data, const memory::desc& md, const std::string& what);
  void add_primitive_step(std::string name, const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
                          std::vector<ValueArg> args, std::unordered_map<int, memory> fixed = {});
  void add_eltwise_steps(const Op& op, Placement src, const Placement& dst, const Activation& activation);

  void compile_op(OpId id);
  void compile_conv(OpId id);
  void compile_gemm(const Op& op);
  void compile_binary(OpId id);
  void compile_batchnorm(OpId id);
  void compile_pool(const Op& op);
  void compile_window_average(const Op& op, AxisWindows rows, AxisWindows cols);
  void compile_concat(const Op& op);
  void compile_slice(const Op& op);
  void compile_shuffle(const Op& op);
  void compile_activation(OpId id);
  void compile_softmax(OpId id);
  void compile_copy(const Op& op, const Shape& view);
  void compile_outputs();
  void allocate_and_bind();

  const Graph& graph_;  // read during compilation only
  std::string source_;  // the graph's, for messages at run time
  ReferenceOptions options_;
  ActivationLayout layout_;
  dnnl::stream stream_;
  MemoryAccount account_;
  std::vector<Value> values_;
  std::vector<std::optional<Placement>> placement_;  // per tensor: its primary copy
  std::vector<std::vector<Placement>> copies_;       // per tensor: reordered copies
  std::vector<bool> absorbed_;                       // per op: fused into an earlier step
  std::vector<Step> steps_;
  std::vector<Allocation> weights_;
  Allocation arena_;
  Allocation scratchpad_;
  int64_t scratchpad_bytes_ = 0;
  int reference_code_steps_ = 0;
  std::vector<Shape> input_shapes_, output_shapes_;
  // Caller memory bound per run: (memory object, graph input or output index).
  std::vector<std::pair<memory, int>> input_bindings_, output_bindings_;
  int fused_adds_ = 0;
  int convolutions_ = 0;
  int winograd_convolutions_ = 0;
  int merged_group_convolutions_ = 0;
};

Program::Program(const Graph& graph, const ReferenceOptions& options, ActivationLayout layout)
    : graph_(graph), source_(graph.source), options_(options), layout_(layout), stream_(cpu_engine()) {
  if (!graph.has_weights()) {
    fail("{}: the graph has no weights to execute (zoo models need ModelOptions::with_weights = true)",
         graph.source);
  }
  set_threads(options.threads);
  placement_.resize(graph.tensors.size());
  copies_.resize(graph.tensors.size());
  absorbed_.assign(graph.ops.size(), false);
  for (size_t k = 0; k < graph.inputs.size(); ++k) {
    const Tensor& t = graph.tensor(graph.inputs[k]);
    const int v = new_value(plain_md(t.shape));
    values_[static_cast<size_t>(v)].external_input = static_cast<int>(k);
    placement_[static_cast<size_t>(graph.inputs[k])] = Placement{v, plain_md(t.shape)};
    input_shapes_.push_back(t.shape);
  }
  for (OpId id = 0; id < static_cast<OpId>(graph.ops.size()); ++id) {
    if (!absorbed_[static_cast<size_t>(id)]) compile_op(id);
  }
  compile_outputs();
  allocate_and_bind();
}

std::string Program::where(const Op& op) const {
  return fmt::format("{}: node \"{}\" ({})", graph_.source, op.name, to_string(op.kind));
}

void Program::fail_op(const Op& op, const std::string& what) const { fail("{}: {}", where(op), what); }

int Program::new_value(const memory::desc& md) {
  Value value;
  value.bytes = static_cast<int64_t>(md.get_size());
  values_.push_back(value);
  return static_cast<int>(values_.size() - 1);
}

int Program::add_step(Step step) {
  const int index = static_cast<int>(steps_.size());
  for (const ValueArg& a : step.args) {
    Value& v = values_[static_cast<size_t>(a.value)];
    v.first = std::min(v.first, index);
    v.last = std::max(v.last, index);
    v.bytes = std::max(v.bytes, static_cast<int64_t>(a.md.get_size()));
  }
  steps_.push_back(std::move(step));
  return index;
}

Placement Program::need(TensorId tensor, const memory::desc& md) {
  const auto& primary = placement_[static_cast<size_t>(tensor)];
  if (!primary) fail("{}: tensor \"{}\" is read before it is produced", graph_.source, graph_.tensor(tensor).name);
  if (primary->md == md) return *primary;
  for (const Placement& copy : copies_[static_cast<size_t>(tensor)]) {
    if (copy.md == md) return copy;
  }
  const Placement copy{new_value(md), md};
  const dnnl::reorder::primitive_desc pd(cpu_engine(), primary->md, cpu_engine(), md, user_scratchpad());
  add_primitive_step("reorder of " + graph_.tensor(tensor).name, dnnl::reorder(pd), pd,
                     {{DNNL_ARG_SRC, primary->value, primary->md}, {DNNL_ARG_DST, copy.value, md}});
  copies_[static_cast<size_t>(tensor)].push_back(copy);
  return copy;
}

// True when `op` may overwrite `placement` of `tensor` with its result: nothing after `op` reads the
// tensor and the buffer is not the caller's input.
bool Program::writable(TensorId tensor, OpId op, const Placement& placement) const {
  const Tensor& t = graph_.tensor(tensor);
  if (graph_.is_output(tensor) || values_[static_cast<size_t>(placement.value)].external_input >= 0) return false;
  return std::all_of(t.consumers.begin(), t.consumers.end(), [&](OpId c) { return c <= op; });
}

memory::desc Program::policy_md(const Shape& shape) const {
  // Fewer channels than a block would be padded to a whole block (16x the bytes and work for DnCNN's
  // one-channel output); those stay with the primitive's own choice.
  if (layout_ == ActivationLayout::Blocked && shape.c >= channel_block()) {
    return {dims_of(shape), DataType::f32, blocked_tag()};
  }
  return any_md(shape);
}

// Copies parameters from the graph into an accounted buffer in the primitive's preferred layout.
memory Program::weight_memory(const memory::desc& user_md, const float* data, const memory::desc& md,
                              const std::string& what) {
  Allocation storage = account_.allocate(static_cast<int64_t>(md.get_size()), MemoryUse::Weights, what);
  memory dst(md, cpu_engine(), storage.data());
  // oneDNN takes a mutable handle; a reorder only reads its source.
  memory src(user_md, cpu_engine(), const_cast<float*>(data));
  dnnl::reorder(src, dst).execute(stream_, src, dst);
  stream_.wait();
  weights_.push_back(std::move(storage));
  return dst;
}

void Program::add_primitive_step(std::string name, const dnnl::primitive& primitive,
                                 const dnnl::primitive_desc_base& pd, std::vector<ValueArg> args,
                                 std::unordered_map<int, memory> fixed) {
  Step step;
  step.op = std::move(name);
  step.scratchpad = pd.scratchpad_desc();
  step.primitive = primitive;
  step.args = std::move(args);
  step.fixed = std::move(fixed);
  scratchpad_bytes_ = std::max(scratchpad_bytes_, static_cast<int64_t>(pd.scratchpad_desc().get_size()));
  reference_code_steps_ += is_reference_impl(pd);
  add_step(std::move(step));
}

// Standalone activations: the first operation from src to dst, the rest in place on dst.
void Program::add_eltwise_steps(const Op& op, Placement src, const Placement& dst, const Activation& activation) {
  for (const Eltwise& e : eltwise_ops(activation)) {
    const dnnl::eltwise_forward::primitive_desc pd({kInference, e.algorithm, src.md, e.alpha, e.beta},
                                                   user_scratchpad(), cpu_engine());
    add_primitive_step(op.name, dnnl::eltwise_forward(pd), pd,
                       {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}});
    src = dst;
  }
}

void Program::compile_op(OpId id) {
  const Op& op = graph_.op(id);
  try {
    switch (op.kind) {
      case OpKind::Conv: compile_conv(id); return;
      case OpKind::Gemm: compile_gemm(op); return;
      case OpKind::Add:
      case OpKind::Sub:
      case OpKind::Mul: compile_binary(id); return;
      case OpKind::BatchNorm: compile_batchnorm(id); return;
      case OpKind::MaxPool:
      case OpKind::AvgPool:
      case OpKind::GlobalAvgPool:
      case OpKind::AdaptiveAvgPool: compile_pool(op); break;
      case OpKind::Concat: compile_concat(op); break;
      case OpKind::Slice: compile_slice(op); break;
      case OpKind::ChannelShuffle: compile_shuffle(op); break;
      case OpKind::Activation: compile_activation(id); return;
      case OpKind::Softmax: compile_softmax(id); break;
      case OpKind::Flatten: compile_copy(op, graph_.output_of(op).shape); break;
      case OpKind::Identity: compile_copy(op, graph_.input_of(op).shape); break;
    }
    // Ops oneDNN cannot fuse an activation into apply it in place afterwards.
    const Placement out = *placement_[static_cast<size_t>(op.output)];
    add_eltwise_steps(op, out, out, op.activation);
  } catch (const dnnl::error& e) {
    fail_op(op, fmt::format("oneDNN cannot run it ({})", e.what()));
  }
}

void Program::compile_conv(OpId id) {
  const Op& op = graph_.op(id);
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const Window& win = op.window;
  const memory::dims strides = {win.stride_h, win.stride_w};
  const memory::dims dilates = {win.dilation_h - 1, win.dilation_w - 1};
  const memory::dims pad_l = {win.pad_top, win.pad_left};
  const memory::dims pad_r = pad_end_dims(win, in, out);
  const ConvGroups groups = onednn_groups(op, in, out);
  const int64_t g = groups.groups;
  const memory::dims weight_dims = conv_weight_dims(groups, in.c, out.c, win.kernel_h, win.kernel_w);
  const memory::desc weight_user(weight_dims, DataType::f32, g > 1 ? Tag::goihw : Tag::oihw);
  const std::vector<float> merged_weights = merged_group_weights(op, groups, in.c, out.c);
  const memory::desc weight_any(weight_dims, DataType::f32, Tag::any);
  const memory::desc bias_md({out.c}, DataType::f32, Tag::x);

  // A residual Add can be computed as a `sum` post-op into the other operand's buffer when this
  // conv's result feeds only the Add and the other operand is not read after it (nor by this conv).
  struct Absorb {
    OpId op;
    TensorId other;
  };
  std::optional<Absorb> absorb;
  const Tensor& result = graph_.output_of(op);
  if (result.consumers.size() == 1 && !graph_.is_output(op.output)) {
    const OpId add_id = result.consumers[0];
    const Op& add = graph_.op(add_id);
    if (add.kind == OpKind::Add && add.inputs.size() == 2 && add.inputs[0] != add.inputs[1]) {
      const TensorId other = add.inputs[0] == op.output ? add.inputs[1] : add.inputs[0];
      const Tensor& o = graph_.tensor(other);
      const auto& placed = placement_[static_cast<size_t>(other)];
      const bool earlier_uses_only = std::all_of(o.consumers.begin(), o.consumers.end(),
                                                 [&](OpId c) { return c == add_id || c < id; });
      if (o.shape == out && graph_.output_of(add).shape == out && placed && o.producer >= 0 &&
          !graph_.is_output(other) && earlier_uses_only) {
        absorb = Absorb{add_id, other};
      }
    }
  }

  const bool winograd_shape = win.kernel_h == 3 && win.kernel_w == 3 && win.stride_h == 1 && win.stride_w == 1 &&
                              win.dilation_h == 1 && win.dilation_w == 1 && g == 1;
  std::vector<algorithm> algorithms;
  if (options_.algorithm == ConvAlgorithm::Winograd && winograd_shape) algorithms.push_back(algorithm::convolution_winograd);
  algorithms.push_back(algorithm::convolution_direct);

  // Candidates in order of preference; the first one a JIT kernel implements wins.
  struct Candidate {
    algorithm alg;
    bool with_add;
    memory::desc dst;
  };
  std::vector<Candidate> candidates;
  const memory::desc preferred = policy_md(out);
  for (const algorithm alg : algorithms) {
    if (absorb) candidates.push_back({alg, true, placement_[static_cast<size_t>(absorb->other)]->md});
    candidates.push_back({alg, false, preferred});
    if (preferred != any_md(out)) candidates.push_back({alg, false, any_md(out)});
  }
  std::optional<dnnl::convolution_forward::primitive_desc> chosen;
  bool chosen_absorbs = false;
  algorithm chosen_algorithm = algorithm::convolution_direct;
  for (const auto& [alg, with_add, dst] : candidates) {
    dnnl::post_ops ops;
    append_activation(ops, op.activation);
    if (with_add) {
      ops.append_sum(1.0f);
      append_activation(ops, graph_.op(absorb->op).activation);
    }
    const dnnl::convolution_forward::desc desc =
        op.bias ? dnnl::convolution_forward::desc(kInference, alg, any_md(in), weight_any, bias_md, dst, strides,
                                                  dilates, pad_l, pad_r)
                : dnnl::convolution_forward::desc(kInference, alg, any_md(in), weight_any, dst, strides, dilates,
                                                  pad_l, pad_r);
    const dnnl::convolution_forward::primitive_desc pd(desc, user_scratchpad(ops), cpu_engine(), true);
    if (!pd) continue;
    if (!chosen || (is_reference_impl(*chosen) && !is_reference_impl(pd))) {
      chosen = pd;
      chosen_absorbs = with_add;
      chosen_algorithm = alg;
    }
    if (!is_reference_impl(*chosen)) break;
  }
  if (!chosen) fail_op(op, "no oneDNN convolution implements it");
  const dnnl::convolution_forward::primitive_desc& pd = *chosen;
  ++convolutions_;
  winograd_convolutions_ += chosen_algorithm == algorithm::convolution_winograd;
  merged_group_convolutions_ += groups.merged > 1;

  const Placement src = need(op.inputs[0], pd.src_desc());
  std::unordered_map<int, memory> fixed;
  fixed[DNNL_ARG_WEIGHTS] = weight_memory(weight_user, merged_weights.empty() ? op.weight->data() : merged_weights.data(),
                                          pd.weights_desc(), op.name + " weights");
  if (op.bias) fixed[DNNL_ARG_BIAS] = weight_memory(bias_md, op.bias->data(), pd.bias_desc(), op.name + " bias");
  Placement dst;
  if (chosen_absorbs) {
    dst = *placement_[static_cast<size_t>(absorb->other)];
    absorbed_[static_cast<size_t>(absorb->op)] = true;
    placement_[static_cast<size_t>(graph_.op(absorb->op).output)] = dst;
    ++fused_adds_;
  } else {
    dst = Placement{new_value(pd.dst_desc()), pd.dst_desc()};
    placement_[static_cast<size_t>(op.output)] = dst;
  }
  add_primitive_step(op.name, dnnl::convolution_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}}, std::move(fixed));
}

void Program::compile_gemm(const Op& op) {
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const memory::dims weight_dims = {out.c, in.c, in.h, in.w};
  const memory::desc weight_user(weight_dims, DataType::f32, Tag::oihw);
  const memory::desc bias_md({out.c}, DataType::f32, Tag::x);
  const memory::desc dst_md({out.n, out.c}, DataType::f32, Tag::nc);
  dnnl::post_ops ops;
  append_activation(ops, op.activation);
  // The producer's layout if the inner product takes it natively, else its own choice.
  const memory::desc produced = placement_[static_cast<size_t>(op.inputs[0])]->md;
  std::optional<dnnl::inner_product_forward::primitive_desc> chosen;
  for (const memory::desc& src : {produced, any_md(in)}) {
    const memory::desc weight_any(weight_dims, DataType::f32, Tag::any);
    const auto desc = op.bias ? dnnl::inner_product_forward::desc(kInference, src, weight_any, bias_md, dst_md)
                              : dnnl::inner_product_forward::desc(kInference, src, weight_any, dst_md);
    dnnl::inner_product_forward::primitive_desc pd(desc, user_scratchpad(ops), cpu_engine(), true);
    if (pd && (!chosen || !is_reference_impl(pd))) chosen = pd;
    if (chosen && !is_reference_impl(*chosen)) break;
  }
  if (!chosen) fail_op(op, "no oneDNN inner product implements it");
  const auto& pd = *chosen;
  const Placement src = need(op.inputs[0], pd.src_desc());
  std::unordered_map<int, memory> fixed;
  fixed[DNNL_ARG_WEIGHTS] = weight_memory(weight_user, op.weight->data(), pd.weights_desc(), op.name + " weights");
  if (op.bias) fixed[DNNL_ARG_BIAS] = weight_memory(bias_md, op.bias->data(), pd.bias_desc(), op.name + " bias");
  // (N, out) row-major is the same bytes as (N, out, 1, 1) NCHW, which consumers see.
  const int v = new_value(dst_md);
  placement_[static_cast<size_t>(op.output)] = Placement{v, plain_md(out)};
  add_primitive_step(op.name, dnnl::inner_product_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, v, dst_md}}, std::move(fixed));
}

void Program::compile_binary(OpId id) {
  const Op& op = graph_.op(id);
  const Shape& out = graph_.output_of(op).shape;
  const algorithm alg = op.kind == OpKind::Add   ? algorithm::binary_add
                        : op.kind == OpKind::Sub ? algorithm::binary_sub
                                                 : algorithm::binary_mul;
  const TensorId a = op.inputs[0], b = op.inputs[1];
  const bool a_full = graph_.tensor(a).shape == out, b_full = graph_.tensor(b).shape == out;

  // oneDNN broadcasts only its second source; `binary(src0, src1)` with src0 of the output's shape.
  // src0_tensor: the tensor src0 holds, if any (not for a materialised output shape).
  const auto binary_step = [&](Placement src0, std::optional<TensorId> src0_tensor, TensorId src1, algorithm how,
                               const dnnl::post_ops& ops, std::optional<Placement> dst) {
    const Placement produced = *placement_[static_cast<size_t>(src1)];
    const auto choose = [&](const memory::desc& md0) {
      std::vector<memory::desc> candidates = {produced.md};
      if (graph_.tensor(src1).shape == out) candidates.push_back(md0);
      candidates.push_back(plain_md(graph_.tensor(src1).shape));
      std::optional<dnnl::binary::primitive_desc> chosen;
      for (const memory::desc& md1 : candidates) {
        dnnl::binary::primitive_desc pd({how, md0, md1, md0}, user_scratchpad(ops), cpu_engine(), true);
        if (pd && (!chosen || !is_reference_impl(pd))) chosen = pd;
        if (chosen && !is_reference_impl(*chosen)) break;
      }
      return chosen;
    };
    std::optional<dnnl::binary::primitive_desc> chosen = choose(src0.md);
    // oneDNN 2.6 runs a binary op with its JIT kernel only on the ISA's own channel blocking or on
    // NHWC. A grouped convolution of 8 channels per group writes nChw8c even with AVX-512, and
    // regnet_y_400mf's squeeze-and-excitation multiplies on it ran oneDNN's reference code, 3 ms
    // each (the whole net took 19 ms against 3.3 fused). Such a src0 is reordered to a layout that
    // has a JIT kernel, into a buffer of its own (a copy other readers may share: never in place).
    if (src0_tensor && (!chosen || is_reference_impl(*chosen))) {
      for (const Tag tag : {blocked_tag(), Tag::nhwc}) {
        const memory::desc md0(dims_of(out), DataType::f32, tag);
        if (md0 == src0.md) continue;
        const std::optional<dnnl::binary::primitive_desc> reordered = choose(md0);
        if (!reordered || is_reference_impl(*reordered)) continue;
        src0 = need(*src0_tensor, md0);
        dst.reset();
        chosen = reordered;
        break;
      }
    }
    if (!chosen) fail_op(op, "no oneDNN binary primitive implements it");
    const Placement s1 = need(src1, chosen->src1_desc());
    if (!dst) dst = Placement{new_value(src0.md), src0.md};
    add_primitive_step(op.name, dnnl::binary(*chosen), *chosen,
                       {{DNNL_ARG_SRC_0, src0.value, src0.md}, {DNNL_ARG_SRC_1, s1.value, s1.md},
                        {DNNL_ARG_DST, dst->value, dst->md}});
    return *dst;
  };

  dnnl::post_ops ops;
  if (a_full || b_full) {
    const TensorId first = a_full ? a : b;
    const TensorId second = a_full ? b : a;
    // a - b computed as -(b - a) when only b has the output's shape.
    if (!a_full && op.kind == OpKind::Sub) ops.append_eltwise(1.0f, algorithm::eltwise_linear, -1.0f, 0.0f);
    append_activation(ops, op.activation);
    const Placement src0 = *placement_[static_cast<size_t>(first)];
    std::optional<Placement> in_place;
    if (writable(first, id, src0)) in_place = src0;
    placement_[static_cast<size_t>(op.output)] = binary_step(src0, first, second, alg, ops, in_place);
    return;
  }
  // Both operands broadcast: materialise the output shape as 0 + a, then apply the op with b.
  const memory::desc md = plain_md(out);
  const Placement dst{new_value(md), md};
  Step zero;
  zero.op = op.name;
  zero.host = [bytes = md.get_size()](std::span<float* const> p) { std::memset(p[0], 0, bytes); };
  zero.args = {{0, dst.value, md}};
  add_step(std::move(zero));
  binary_step(dst, std::nullopt, a, algorithm::binary_add, {}, dst);
  append_activation(ops, op.activation);
  placement_[static_cast<size_t>(op.output)] = binary_step(dst, std::nullopt, b, alg, ops, dst);
}

void Program::compile_batchnorm(OpId id) {
  const Op& op = graph_.op(id);
  const Shape& shape = graph_.output_of(op).shape;
  // y = x * scale + shift as oneDNN's batch normalization with mean 0 and variance 1 (epsilon 0
  // makes the division exact). A binary multiply with the shift as a post-op would say the same,
  // but oneDNN 2.6 runs that with its reference code, ~50x slower (densenet121: 1.2 s of 1.6 s).
  const memory::desc channel_md({shape.c}, DataType::f32, Tag::x);
  auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale |
               dnnl::normalization_flags::use_shift;
  const bool relu = op.activation.kind == ActKind::Relu;
  if (relu) flags |= dnnl::normalization_flags::fuse_norm_relu;
  const Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  const dnnl::batch_normalization_forward::primitive_desc pd({kInference, src.md, 0.0f, flags}, user_scratchpad(),
                                                             cpu_engine());
  const std::vector<float> zeros(static_cast<size_t>(shape.c), 0.0f), ones(static_cast<size_t>(shape.c), 1.0f);
  std::unordered_map<int, memory> fixed;
  fixed[DNNL_ARG_SCALE] = weight_memory(channel_md, op.weight->data(), channel_md, op.name + " scale");
  fixed[DNNL_ARG_SHIFT] = weight_memory(channel_md, op.bias->data(), channel_md, op.name + " shift");
  fixed[DNNL_ARG_MEAN] = weight_memory(channel_md, zeros.data(), channel_md, op.name + " mean (zeros)");
  fixed[DNNL_ARG_VARIANCE] = weight_memory(channel_md, ones.data(), channel_md, op.name + " variance (ones)");
  const Placement dst = writable(op.inputs[0], id, src) ? src : Placement{new_value(src.md), src.md};
  placement_[static_cast<size_t>(op.output)] = dst;
  add_primitive_step(op.name, dnnl::batch_normalization_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}}, std::move(fixed));
  if (!relu) add_eltwise_steps(op, dst, dst, op.activation);
}

void Program::compile_pool(const Op& op) {
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  Window win = op.window;
  algorithm alg = algorithm::pooling_max;
  switch (op.kind) {
    case OpKind::GlobalAvgPool:
      win = Window{static_cast<int>(in.h), static_cast<int>(in.w), 1, 1, 0, 0, 0, 0, 1, 1, false};
      alg = algorithm::pooling_avg_exclude_padding;
      break;
    case OpKind::AdaptiveAvgPool:
      if (in.h % out.h != 0 || in.w % out.w != 0) {
        compile_window_average(op, adaptive_windows(in.h, out.h), adaptive_windows(in.w, out.w));
        return;
      }
      // Even bins are a plain average pool.
      win = Window::square(1);
      win.kernel_h = win.stride_h = static_cast<int>(in.h / out.h);
      win.kernel_w = win.stride_w = static_cast<int>(in.w / out.w);
      alg = algorithm::pooling_avg_exclude_padding;
      break;
    case OpKind::AvgPool:
      alg = op.count_include_pad ? algorithm::pooling_avg_include_padding : algorithm::pooling_avg_exclude_padding;
      break;
    default:
      break;
  }
  const int64_t pad_b = effective_pad_end(in.h, win.pad_top, win.pad_bottom, win.extent_h(), win.stride_h, out.h);
  const int64_t pad_r = effective_pad_end(in.w, win.pad_left, win.pad_right, win.extent_w(), win.stride_w, out.w);
  // oneDNN divides by the whole kernel; PyTorch does not count ceil_mode's extra padding.
  if (alg == algorithm::pooling_avg_include_padding && (pad_b > win.pad_bottom || pad_r > win.pad_right)) {
    compile_window_average(op,
                           pool_windows(in.h, out.h, win.kernel_h, win.stride_h, win.dilation_h, win.pad_top,
                                        win.pad_bottom, true),
                           pool_windows(in.w, out.w, win.kernel_w, win.stride_w, win.dilation_w, win.pad_left,
                                        win.pad_right, true));
    return;
  }
  const Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  const dnnl::pooling_v2_forward::primitive_desc pd(
      {kInference, alg, src.md, any_md(out), {win.stride_h, win.stride_w}, {win.kernel_h, win.kernel_w},
       {win.dilation_h - 1, win.dilation_w - 1}, {win.pad_top, win.pad_left}, {pad_b, pad_r}},
      user_scratchpad(), cpu_engine());
  const Placement dst{new_value(pd.dst_desc()), pd.dst_desc()};
  placement_[static_cast<size_t>(op.output)] = dst;
  add_primitive_step(op.name, dnnl::pooling_v2_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}});
}

void Program::compile_window_average(const Op& op, AxisWindows rows, AxisWindows cols) {
  const Shape& in = graph_.input_of(op).shape;
  const Placement src = need(op.inputs[0], plain_md(in));
  const memory::desc md = plain_md(graph_.output_of(op).shape);
  const Placement dst{new_value(md), md};
  placement_[static_cast<size_t>(op.output)] = dst;
  Step step;
  step.op = op.name;
  step.host = window_average(in, std::move(rows), std::move(cols));
  step.args = {{0, src.value, src.md}, {1, dst.value, dst.md}};
  add_step(std::move(step));
}

void Program::compile_concat(const Op& op) {
  std::vector<memory::desc> srcs;
  std::vector<Placement> parts;
  for (TensorId t : op.inputs) {
    parts.push_back(*placement_[static_cast<size_t>(t)]);
    srcs.push_back(parts.back().md);
  }
  const Shape& out = graph_.output_of(op).shape;
  const memory::desc wanted = policy_md(out);
  const auto pd = wanted.data.format_kind == dnnl_format_kind_any
                      ? dnnl::concat::primitive_desc(1, srcs, cpu_engine(), user_scratchpad())
                      : dnnl::concat::primitive_desc(wanted, 1, srcs, cpu_engine(), user_scratchpad());
  const Placement dst{new_value(pd.dst_desc()), pd.dst_desc()};
  placement_[static_cast<size_t>(op.output)] = dst;
  std::vector<ValueArg> args;
  for (size_t i = 0; i < parts.size(); ++i) {
    args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), parts[i].value, parts[i].md});
  }
  args.push_back({DNNL_ARG_DST, dst.value, dst.md});
  add_primitive_step(op.name, dnnl::concat(pd), pd, std::move(args));
}

// A reorder from a view of the channel range. Only a plain layout has a view at any channel offset
// (a blocked one is cut at block boundaries), so a blocked input is first reordered to NHWC.
void Program::compile_slice(const Op& op) {
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  if (src.md.data.format_desc.blocking.inner_nblks > 0) src = need(op.inputs[0], {dims_of(in), DataType::f32, Tag::nhwc});
  const memory::desc view = src.md.submemory_desc(dims_of(out), {0, op.channel_offset, 0, 0});
  memory::desc wanted = policy_md(out);
  if (wanted.data.format_kind == dnnl_format_kind_any) wanted = {dims_of(out), DataType::f32, Tag::nhwc};
  const Placement dst{new_value(wanted), wanted};
  placement_[static_cast<size_t>(op.output)] = dst;
  const dnnl::reorder::primitive_desc pd(cpu_engine(), view, cpu_engine(), wanted, user_scratchpad());
  add_primitive_step(op.name, dnnl::reorder(pd), pd, {{DNNL_ARG_SRC, src.value, view}, {DNNL_ARG_DST, dst.value, wanted}});
}

// oneDNN's shuffle with group size C / groups is the transpose of a groups x (C / groups) matrix
// of channels. Its JIT kernels do not take every blocked layout; NHWC rather than its C fallback.
void Program::compile_shuffle(const Op& op) {
  const Shape& in = graph_.input_of(op).shape;
  const auto group_size = static_cast<int>(in.c / op.groups);
  Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  auto pd = dnnl::shuffle_forward::primitive_desc({kInference, src.md, 1, group_size}, cpu_engine(), user_scratchpad());
  if (is_reference_impl(pd)) {
    src = need(op.inputs[0], {dims_of(in), DataType::f32, Tag::nhwc});
    pd = dnnl::shuffle_forward::primitive_desc({kInference, src.md, 1, group_size}, cpu_engine(), user_scratchpad());
  }
  const Placement dst{new_value(pd.dst_desc()), pd.dst_desc()};
  placement_[static_cast<size_t>(op.output)] = dst;
  add_primitive_step(op.name, dnnl::shuffle_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}});
}

void Program::compile_activation(OpId id) {
  const Op& op = graph_.op(id);
  if (op.activation.kind == ActKind::None) {
    compile_copy(op, graph_.output_of(op).shape);
    return;
  }
  const Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  const Placement dst = writable(op.inputs[0], id, src) ? src : Placement{new_value(src.md), src.md};
  placement_[static_cast<size_t>(op.output)] = dst;
  add_eltwise_steps(op, src, dst, op.activation);
}

void Program::compile_softmax(OpId id) {
  const Op& op = graph_.op(id);
  const Shape& shape = graph_.output_of(op).shape;
  const Placement src = need(op.inputs[0], plain_md(shape));
  const Placement dst = writable(op.inputs[0], id, src) ? src : Placement{new_value(src.md), src.md};
  placement_[static_cast<size_t>(op.output)] = dst;
  const dnnl::softmax_forward::primitive_desc pd({kInference, src.md, 1}, user_scratchpad(), cpu_engine());
  add_primitive_step(op.name, dnnl::softmax_forward(pd), pd,
                     {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, dst.value, dst.md}});
}

// Flatten and Identity: a reorder into a fresh dense NCHW buffer, seen by consumers as `view`.
// Copying (rather than aliasing the input) keeps in-place steps from writing into a live tensor.
void Program::compile_copy(const Op& op, const Shape& view) {
  const Shape& in = graph_.input_of(op).shape;
  const Placement src = *placement_[static_cast<size_t>(op.inputs[0])];
  const memory::desc dense = plain_md(in);
  const int v = new_value(dense);
  placement_[static_cast<size_t>(op.output)] = Placement{v, plain_md(view)};
  const dnnl::reorder::primitive_desc pd(cpu_engine(), src.md, cpu_engine(), dense, user_scratchpad());
  add_primitive_step(op.name, dnnl::reorder(pd), pd, {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, v, dense}});
}

void Program::compile_outputs() {
  for (size_t k = 0; k < graph_.outputs.size(); ++k) {
    const TensorId t = graph_.outputs[k];
    const Shape& shape = graph_.tensor(t).shape;
    const Placement src = *placement_[static_cast<size_t>(t)];
    const memory::desc md = plain_md(shape);
    const int v = new_value(md);
    values_[static_cast<size_t>(v)].external_output = static_cast<int>(k);
    const dnnl::reorder::primitive_desc pd(cpu_engine(), src.md, cpu_engine(), md, user_scratchpad());
    add_primitive_step("output " + graph_.tensor(t).name, dnnl::reorder(pd), pd,
                       {{DNNL_ARG_SRC, src.value, src.md}, {DNNL_ARG_DST, v, md}});
    output_shapes_.push_back(shape);
  }
}

void Program::allocate_and_bind() {
  std::vector<Lifetime> lifetimes;
  std::vector<size_t> arena_values;
  for (size_t v = 0; v < values_.size(); ++v) {
    const Value& value = values_[v];
    if (value.external_input >= 0 || value.external_output >= 0 || value.last < 0) continue;
    lifetimes.push_back({value.bytes, value.first, value.last});
    arena_values.push_back(v);
  }
  const ArenaLayout layout = plan_arena(lifetimes);
  for (size_t i = 0; i < arena_values.size(); ++i) values_[arena_values[i]].offset = layout.offsets[i];
  arena_ = account_.allocate(layout.bytes, MemoryUse::Activations, graph_.source + " activations");
  scratchpad_ = account_.allocate(scratchpad_bytes_, MemoryUse::Scratchpad, graph_.source + " scratchpad");
  auto* base = static_cast<char*>(arena_.data());
  for (Step& step : steps_) {
    if (!step.primitive) {
      step.host_args.reserve(step.args.size());
      continue;
    }
    std::unordered_map<int, memory> args = step.fixed;
    for (const ValueArg& a : step.args) {
      const Value& value = values_[static_cast<size_t>(a.value)];
      const bool external = value.external_input >= 0 || value.external_output >= 0;
      memory m(a.md, cpu_engine(), external ? DNNL_MEMORY_NONE : base + value.offset);
      if (value.external_input >= 0) input_bindings_.emplace_back(m, value.external_input);
      if (value.external_output >= 0) output_bindings_.emplace_back(m, value.external_output);
      args[a.arg] = m;
    }
    if (step.scratchpad.get_size() > 0) {
      args[DNNL_ARG_SCRATCHPAD] = memory(step.scratchpad, cpu_engine(), scratchpad_.data());
    }
    for (const auto& [arg, m] : args) {
      step.bound.push_back(m);
      step.exec_args.push_back({arg, m.get()});
    }
  }
}

void Program::run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) {
  set_threads(options_.threads);
  // oneDNN takes mutable handles; inputs are only read.
  for (auto& [m, k] : input_bindings_) m.set_data_handle(const_cast<float*>(inputs[static_cast<size_t>(k)].values.data()));
  for (auto& [m, k] : output_bindings_) m.set_data_handle(outputs[static_cast<size_t>(k)].values.data());
  auto* base = static_cast<char*>(arena_.data());
  for (Step& step : steps_) {
    if (step.primitive) {
      const dnnl_status_t status = dnnl_primitive_execute(step.primitive->get(), stream_.get(),
                                                          static_cast<int>(step.exec_args.size()), step.exec_args.data());
      if (status != dnnl_success) fail("{}: oneDNN failed to execute \"{}\" (status {})", source_, step.op, static_cast<int>(status));
      continue;
    }
    stream_.wait();
    step.host_args.clear();  // capacity reserved at compile time
    for (const ValueArg& a : step.args) {
      const Value& value = values_[static_cast<size_t>(a.value)];
      if (value.external_input >= 0) {
        step.host_args.push_back(const_cast<float*>(inputs[static_cast<size_t>(value.external_input)].values.data()));
      } else if (value.external_output >= 0) {
        step.host_args.push_back(outputs[static_cast<size_t>(value.external_output)].values.data());
      } else {
        step.host_args.push_back(reinterpret_cast<float*>(base + value.offset));
      }
    }
    step.host(step.host_args);
  }
  stream_.wait();
}

std::vector<std::string> Program::signature() const {
  std::vector<std::string> parts;
  for (const Step& step : steps_) {
    std::string part = step.op;
    for (const ValueArg& a : step.args) {
      const dnnl_memory_desc_t& d = a.md.data;
      part += fmt::format(" {}:{}", a.arg, static_cast<int>(d.format_kind));
      if (d.format_kind == dnnl_blocked) {
        for (int i = 0; i < d.ndims; ++i) part += fmt::format(",{}", d.format_desc.blocking.strides[i]);
        for (int i = 0; i < d.format_desc.blocking.inner_nblks; ++i) {
          part += fmt::format("/{}x{}", d.format_desc.blocking.inner_idxs[i], d.format_desc.blocking.inner_blks[i]);
        }
      }
    }
    parts.push_back(std::move(part));
  }
  return parts;
}

double best_time_ms(Program& program, std::span<const HostTensor> inputs, std::span<HostTensor> outputs) {
  program.run(inputs, outputs);
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    program.run(inputs, outputs);
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace
}  // namespace exec

std::string_view to_string(ConvAlgorithm algorithm) {
  switch (algorithm) {
    case ConvAlgorithm::Direct: return "direct";
    case ConvAlgorithm::Winograd: return "Winograd";
  }
  return "?";
}

std::string_view to_string(ActivationLayout layout) {
  switch (layout) {
    case ActivationLayout::Measure: return "measured";
    case ActivationLayout::Any: return "primitive-chosen";
    case ActivationLayout::Blocked: return "blocked";
  }
  return "?";
}

std::unique_ptr<Executor> compile_reference(const Graph& graph, const ReferenceOptions& options) {
  using exec::Program;
  ActivationLayout layout = options.layout;
  bool measured = false;
  std::unique_ptr<Program> program;
  if (layout == ActivationLayout::Measure) {
    auto any = std::make_unique<Program>(graph, options, ActivationLayout::Any);
    auto blocked = std::make_unique<Program>(graph, options, ActivationLayout::Blocked);
    if (any->signature() == blocked->signature()) {
      program = std::move(any);
      layout = ActivationLayout::Any;
    } else {
      std::vector<HostTensor> inputs, outputs;
      for (TensorId t : graph.inputs) inputs.push_back(random_input(graph.tensor(t).shape));
      for (TensorId t : graph.outputs) outputs.emplace_back(graph.tensor(t).shape);
      const double any_ms = exec::best_time_ms(*any, inputs, outputs);
      const double blocked_ms = exec::best_time_ms(*blocked, inputs, outputs);
      layout = blocked_ms < any_ms ? ActivationLayout::Blocked : ActivationLayout::Any;
      program = std::move(layout == ActivationLayout::Blocked ? blocked : any);
      measured = true;
    }
  } else {
    program = std::make_unique<Program>(graph, options, layout);
  }
  // oneDNN has Winograd kernels for some ISAs only (AVX-512): say how many convolutions got one.
  const std::string algorithm =
      options.algorithm == ConvAlgorithm::Winograd
          ? fmt::format("Winograd on {} of {} convolutions", program->winograd_convolutions(), program->convolutions())
          : "direct convolution";
  const std::string description = fmt::format(
      "oneDNN {}.{}.{} layer by layer: {}, {} activations{}, {} residual add{} fused, {} steps{}{}",
      DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, DNNL_VERSION_PATCH, algorithm,
      layout == ActivationLayout::Blocked ? (exec::channel_block() == 16 ? "nChw16c" : "nChw8c") : to_string(layout),
      measured ? " (measured)" : "", program->fused_adds(), program->fused_adds() == 1 ? "" : "s", program->steps(),
      exec::merged_groups_summary(program->merged_group_convolutions()),
      program->reference_code_steps() > 0 ? fmt::format(", {} on oneDNN's reference code", program->reference_code_steps())
                                          : std::string());
  return std::make_unique<exec::ProgramExecutor<exec::Program>>(std::move(program), graph.source, description);
}

}  // namespace occam
