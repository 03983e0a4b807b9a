// The fused row-streaming executor.
//
// Compilation, per partition of the plan: decide how each tensor is held (TensorRole), build the
// step list (fused_schedule.hpp), size one circular line buffer per streamed tensor from it, and
// lay out all line buffers and boundary tensors in one arena (a memory file, so that each line
// buffer can be mapped twice back to back and any window of its rows is contiguous). Then every
// step gets its kernel (a oneDNN primitive per band shape, or a host kernel) and its operand
// addresses, which are fixed at compile time except for the caller's tensors. `run` walks the steps.
//
// Layout: rows are NHWC (a row is W x C, channels innermost), the order in which a row-band view of
// a circular buffer is a dense oneDNN nhwc tensor. Caller tensors are NCHW; where that differs from
// NHWC (more than one channel and more than one pixel) their rows are converted by Load and Store
// steps into and out of line buffers, exactly as the closure loads and writes boundary rows.
#include "analysis/rows.hpp"
#include "exec/arena.hpp"
#include "exec/fused_schedule.hpp"
#include "exec/onednn.hpp"
#include "exec/ring.hpp"
#include "exec/tensors.hpp"
#include "exec/windows.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <tuple>
#include <unordered_map>

namespace occam {
namespace exec {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using Tag = memory::format_tag;
using DataType = memory::data_type;
constexpr auto kInference = dnnl::prop_kind::forward_inference;

// A step with fewer multiply-adds runs on one thread: waking the others (an OpenMP fork and join,
// tens of microseconds when they sleep) costs more than they save on it.
constexpr int64_t kParallelMacs = 1 << 20;

// Where a step operand lives: a fixed address (line buffers and boundary tensors), or a float
// offset into the current image of a caller tensor.
struct Address {
  int32_t slot = -1;  // caller tensor: graph inputs first, then graph outputs
  int64_t offset = 0;
  float* fixed = nullptr;
};

// A kernel computes `count` events of its op starting at event `first`, on operand addresses laid
// out as its builder documents.
using Kernel = std::function<void(int64_t first, int64_t count, float* const* operands)>;

struct Step {
  int kernel = 0;
  int32_t first = 0;
  int32_t count = 0;
  uint32_t operand_begin = 0;
  uint32_t operand_count = 0;
  bool host = false;  // needs the stream drained first
  bool parallel = false;  // enough work to be worth waking the other threads
};

// How one partition reaches a tensor.
struct Place {
  TensorRole role = TensorRole::None;
  char* base = nullptr;    // line buffer or boundary tensor in the arena
  int64_t ring_bytes = 0;  // line buffers: the circular size
  int32_t slot = -1;       // caller tensor (Whole in caller memory, or the source/target of Load/Store)
};

// One oneDNN primitive for one band shape; src and dst handles are set per step.
struct PrimitiveCall {
  dnnl::primitive primitive;
  std::vector<memory> memories;  // keeps every bound memory object alive
  std::vector<dnnl_exec_arg_t> args;
  dnnl_memory_t src = nullptr;
  dnnl_memory_t dst = nullptr;
  dnnl_memory_t scratchpad = nullptr;
  std::string op;
};

int64_t row_floats(const Shape& s) { return s.w * s.c; }

bool nhwc_equals_nchw(const Shape& s) { return s.c == 1 || s.h * s.w == 1; }

void activate(float* x, int64_t n, const Activation& a) {
  switch (a.kind) {
    case ActKind::None: return;
    case ActKind::Relu:
      for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
      return;
    case ActKind::LeakyRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0 ? x[i] : a.lo * x[i];
      return;
    case ActKind::Clip:
      for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], a.lo, a.hi);
      return;
    case ActKind::Sigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
      return;
    case ActKind::HardSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(a.lo * x[i] + a.hi, 0.0f, 1.0f);
      return;
    case ActKind::HardSwish:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] * std::clamp(x[i] + 3.0f, 0.0f, 6.0f) / 6.0f;
      return;
    case ActKind::Tanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
  }
}

class FusedProgram {
public:
  FusedProgram(const Graph& graph, const Plan& plan, const FusedOptions& options);

  void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs);
  const MemoryAccount& memory_account() const { return account_; }
  std::span<const Shape> input_shapes() const { return input_shapes_; }
  std::span<const Shape> output_shapes() const { return output_shapes_; }
  std::string describe() const;

private:
  // --- compilation
  [[noreturn]] void fail_op(const Op& op, const std::string& what) const;
  void assign_roles(const Plan& plan);
  void lay_out_memory();
  void compile_steps();
  int32_t caller_slot(TensorId t) const;
  Address address(size_t partition, TensorId t, int64_t row) const;
  int add_kernel(Kernel kernel);
  int primitive_kernel(const std::string& op, const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
                       const memory::desc& src, const memory::desc& dst, std::unordered_map<int, memory> fixed);
  memory weights(OpId id, const memory::desc& user, const float* data, const memory::desc& md, const std::string& what);
  int window_kernel(OpId id, int64_t first, int64_t count, bool parallel, int64_t* src_row);
  int host_kernel(OpId id);
  Kernel binary_kernel(const Op& op) const;
  Kernel gemm_kernel(const Op& op);
  Kernel average_kernel(const Op& op, AxisWindows rows, AxisWindows cols) const;
  void bind_scratchpad();

  const Graph& graph_;  // read during compilation only
  std::string source_;
  FusedOptions options_;
  Analysis analysis_;
  dnnl::stream stream_;
  MemoryAccount account_;

  // Per op: its partition and its events per step; per partition: ops, roles, schedule, places.
  std::vector<int> partition_of_;
  std::vector<int> band_rows_;
  struct PartitionState {
    OpId first = 0, last = 0;
    std::vector<TensorRole> roles;
    SpanSchedule schedule;
    std::vector<Place> places;
  };
  std::vector<PartitionState> partitions_;
  std::vector<int> boundary_producer_, boundary_last_;  // per tensor: partitions, -1 if not an arena boundary

  Allocation arena_;
  std::vector<MirroredRange> rings_;
  Allocation scratchpad_;
  int64_t scratchpad_bytes_ = 0;
  std::vector<Allocation> weight_storage_;
  std::map<std::pair<OpId, std::string>, memory> weight_cache_;

  std::vector<Kernel> kernels_;
  std::vector<std::shared_ptr<PrimitiveCall>> calls_;
  std::map<std::tuple<OpId, int64_t, int64_t, int64_t, int64_t, bool>, int> window_kernels_;
  std::map<OpId, int> host_kernels_;
  std::vector<Step> steps_;
  std::vector<Address> operands_;
  std::vector<float*> resolved_;  // scratch for run(): operand addresses of one step

  std::vector<Shape> input_shapes_, output_shapes_;
  std::vector<int64_t> slot_image_floats_;
  std::vector<std::pair<int, int>> passthrough_;  // (input index, output index) of outputs that are inputs
  std::vector<float*> slots_;

  int64_t ring_bytes_ = 0, boundary_bytes_ = 0;
  int primitives_ = 0, reference_primitives_ = 0, line_buffers_ = 0;
  int64_t max_band_rows_ = 1;
};

FusedProgram::FusedProgram(const Graph& graph, const Plan& plan, const FusedOptions& options)
    : graph_(graph), source_(graph.source), options_(options), analysis_(graph, execution_analysis_options()),
      stream_(cpu_engine()) {
  if (!graph.has_weights()) {
    fail("{}: the graph has no weights to execute (zoo models need ModelOptions::with_weights = true)", graph.source);
  }
  check_plan_matches(plan, graph);
  if (plan.bytes_per_elem != 4 || plan.granularity != Granularity::Row) {
    fail("{}: the plan was made for {}-byte elements at {} granularity; executing needs a plan for 4-byte (float) "
         "elements at row granularity (occam plan --bytes-per-elem 4 --granularity row)",
         graph.source, plan.bytes_per_elem, to_string(plan.granularity));
  }
  OpId next = 0;
  for (const Partition& p : plan.partitions) {
    if (p.first_op != next || p.last_op < p.first_op) {
      fail("{}: plan partitions must cover the ops in order; partition [{}, {}] follows op {}", graph.source, p.first_op,
           p.last_op, next - 1);
    }
    next = p.last_op + 1;
  }
  if (next != static_cast<OpId>(graph.ops.size())) {
    fail("{}: the plan covers {} of the model's {} ops", graph.source, next, graph.ops.size());
  }
  set_threads(options.threads);
  for (TensorId t : graph.inputs) {
    input_shapes_.push_back(graph.tensor(t).shape);
    slot_image_floats_.push_back(graph.tensor(t).shape.image_elements());
  }
  for (size_t k = 0; k < graph.outputs.size(); ++k) {
    const Tensor& t = graph.tensor(graph.outputs[k]);
    output_shapes_.push_back(t.shape);
    slot_image_floats_.push_back(t.shape.image_elements());
    if (t.producer < 0) {
      const auto input = std::find(graph.inputs.begin(), graph.inputs.end(), graph.outputs[k]);
      passthrough_.emplace_back(static_cast<int>(input - graph.inputs.begin()), static_cast<int>(k));
    }
  }
  assign_roles(plan);
  lay_out_memory();
  compile_steps();
  bind_scratchpad();
}

void FusedProgram::fail_op(const Op& op, const std::string& what) const {
  fail("{}: node \"{}\" ({}): {}", source_, op.name, to_string(op.kind), what);
}

int32_t FusedProgram::caller_slot(TensorId t) const {
  const auto in = std::find(graph_.inputs.begin(), graph_.inputs.end(), t);
  if (in != graph_.inputs.end()) return static_cast<int32_t>(in - graph_.inputs.begin());
  const auto out = std::find(graph_.outputs.begin(), graph_.outputs.end(), t);
  if (out != graph_.outputs.end()) return static_cast<int32_t>(graph_.inputs.size() + (out - graph_.outputs.begin()));
  return -1;
}

// Roles: a tensor produced in a partition and read by another is a boundary held whole in the
// arena; the caller's tensors are read and written in place where their NCHW layout equals NHWC,
// else streamed through line buffers by Load/Store steps; everything else is a line buffer.
void FusedProgram::assign_roles(const Plan& plan) {
  const size_t tensors = graph_.tensors.size();
  partition_of_.assign(graph_.ops.size(), 0);
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    for (OpId o = plan.partitions[p].first_op; o <= plan.partitions[p].last_op; ++o) partition_of_[static_cast<size_t>(o)] = static_cast<int>(p);
  }
  boundary_producer_.assign(tensors, -1);
  boundary_last_.assign(tensors, -1);
  for (TensorId t = 0; t < static_cast<TensorId>(tensors); ++t) {
    const Tensor& tensor = graph_.tensor(t);
    if (tensor.producer < 0 || caller_slot(t) >= 0) continue;
    const int home = partition_of_[static_cast<size_t>(tensor.producer)];
    int last = home;
    for (OpId c : tensor.consumers) last = std::max(last, partition_of_[static_cast<size_t>(c)]);
    if (last != home) {
      boundary_producer_[static_cast<size_t>(t)] = home;
      boundary_last_[static_cast<size_t>(t)] = last;
    }
  }
  // Events per step: as many rows as fit in band_bytes.
  band_rows_.assign(graph_.ops.size(), 1);
  for (OpId o = 0; o < static_cast<OpId>(graph_.ops.size()); ++o) {
    const Op& op = graph_.op(o);
    const bool accumulates = rows::mode_of(graph_, op) == rows::Mode::Accumulate;
    const int64_t bytes = analysis_.tensor_bytes(accumulates ? op.inputs[0] : op.output) /
                          (accumulates ? graph_.input_of(op).shape.h : graph_.output_of(op).shape.h);
    const int64_t events = rows::event_count(graph_, op);
    if (options_.band_bytes > 0) {
      band_rows_[static_cast<size_t>(o)] = static_cast<int>(std::clamp<int64_t>(options_.band_bytes / std::max<int64_t>(bytes, 1), 1, events));
    }
    max_band_rows_ = std::max<int64_t>(max_band_rows_, band_rows_[static_cast<size_t>(o)]);
  }
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    PartitionState state;
    state.first = plan.partitions[p].first_op;
    state.last = plan.partitions[p].last_op;
    state.roles.assign(tensors, TensorRole::None);
    const auto decide = [&](TensorId t) {
      const Tensor& tensor = graph_.tensor(t);
      const bool caller = caller_slot(t) >= 0;
      const bool here = tensor.producer >= 0 && partition_of_[static_cast<size_t>(tensor.producer)] == static_cast<int>(p);
      if (caller) {
        if (nhwc_equals_nchw(tensor.shape)) return TensorRole::Whole;
        // A graph output produced here is stored; any other caller tensor (a graph input, or an
        // output an earlier partition stored) is loaded.
        return here && graph_.is_output(t) ? TensorRole::Stored : TensorRole::Loaded;
      }
      if (boundary_producer_[static_cast<size_t>(t)] >= 0) return TensorRole::Whole;
      return TensorRole::Ring;
    };
    for (OpId o = state.first; o <= state.last; ++o) {
      const Op& op = graph_.op(o);
      for (TensorId t : op.inputs) state.roles[static_cast<size_t>(t)] = decide(t);
      state.roles[static_cast<size_t>(op.output)] = decide(op.output);
    }
    const std::span<const int> bands(band_rows_.data() + state.first, static_cast<size_t>(state.last - state.first + 1));
    state.schedule = schedule_span(analysis_, state.first, state.last, bands, state.roles);
    partitions_.push_back(std::move(state));
  }
}

// One arena for everything that streams or crosses a boundary: a block of line buffers per
// partition (alive while it runs) and each boundary tensor (alive from its producer's partition to
// its last reader's), placed by lifetime as the reference executor places its tensors.
void FusedProgram::lay_out_memory() {
  const int64_t page = page_bytes();
  const auto round = [&](int64_t bytes) { return (bytes + page - 1) / page * page; };
  std::vector<Lifetime> lifetimes;
  for (size_t p = 0; p < partitions_.size(); ++p) {
    int64_t block = 0;
    for (const LineBuffer& b : partitions_[p].schedule.rings) block += round(b.rows * b.row_bytes);
    lifetimes.push_back({block, static_cast<int>(p), static_cast<int>(p)});
    ring_bytes_ = std::max(ring_bytes_, block);
  }
  std::vector<TensorId> boundaries;
  for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
    if (boundary_producer_[static_cast<size_t>(t)] < 0) continue;
    boundaries.push_back(t);
    lifetimes.push_back({round(analysis_.tensor_bytes(t)), boundary_producer_[static_cast<size_t>(t)],
                         boundary_last_[static_cast<size_t>(t)]});
  }
  for (size_t p = 0; p < partitions_.size(); ++p) {
    int64_t live = 0;
    for (TensorId t : boundaries) {
      const auto i = static_cast<size_t>(t);
      if (boundary_producer_[i] <= static_cast<int>(p) && static_cast<int>(p) <= boundary_last_[i]) live += analysis_.tensor_bytes(t);
    }
    boundary_bytes_ = std::max(boundary_bytes_, live);
  }
  const ArenaLayout layout = plan_arena(lifetimes, page);
  if (layout.bytes > 0) {
    arena_ = account_.allocate(layout.bytes, MemoryUse::Activations, source_ + " line buffers and boundaries",
                               Backing::SharedFile);
  }
  auto* base = static_cast<char*>(arena_.data());
  for (size_t p = 0; p < partitions_.size(); ++p) {
    PartitionState& state = partitions_[p];
    state.places.assign(graph_.tensors.size(), Place{});
    int64_t offset = layout.offsets[p];
    for (const LineBuffer& b : state.schedule.rings) {
      const int64_t size = round(b.rows * b.row_bytes);
      rings_.emplace_back(arena_.file(), offset, size);
      Place& place = state.places[static_cast<size_t>(b.tensor)];
      place.base = rings_.back().data();
      place.ring_bytes = size;
      offset += size;
      ++line_buffers_;
    }
    for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
      Place& place = state.places[static_cast<size_t>(t)];
      place.role = state.roles[static_cast<size_t>(t)];
      place.slot = caller_slot(t);
      if (place.role == TensorRole::Whole && place.slot < 0) {
        const auto at = std::find(boundaries.begin(), boundaries.end(), t) - boundaries.begin();
        place.base = base + layout.offsets[partitions_.size() + static_cast<size_t>(at)];
      }
      if (place.role != TensorRole::None && place.role != TensorRole::Whole && place.base == nullptr) {
        fail("{}: tensor \"{}\" streams through partition {} but was given no line buffer", source_,
             graph_.tensor(t).name, p);
      }
    }
  }
}

Address FusedProgram::address(size_t partition, TensorId t, int64_t row) const {
  const Place& place = partitions_[partition].places[static_cast<size_t>(t)];
  const int64_t row_bytes = row_floats(graph_.tensor(t).shape) * static_cast<int64_t>(sizeof(float));
  if (place.role == TensorRole::Whole) {
    if (place.slot >= 0) return {place.slot, row * row_bytes / static_cast<int64_t>(sizeof(float)), nullptr};
    return {-1, 0, reinterpret_cast<float*>(place.base + row * row_bytes)};
  }
  return {-1, 0, reinterpret_cast<float*>(place.base + (row * row_bytes) % place.ring_bytes)};
}

int FusedProgram::add_kernel(Kernel kernel) {
  kernels_.push_back(std::move(kernel));
  return static_cast<int>(kernels_.size() - 1);
}

memory FusedProgram::weights(OpId id, const memory::desc& user, const float* data, const memory::desc& md,
                             const std::string& what) {
  // Band shapes of one op nearly always agree on the weights' layout: reorder once per layout.
  std::string key(reinterpret_cast<const char*>(&md.data), sizeof md.data);
  key += what;
  const auto found = weight_cache_.find({id, key});
  if (found != weight_cache_.end()) return found->second;
  Allocation storage = account_.allocate(static_cast<int64_t>(md.get_size()), MemoryUse::Weights, what);
  memory dst(md, cpu_engine(), storage.data());
  memory src(user, cpu_engine(), const_cast<float*>(data));  // a reorder only reads its source
  dnnl::reorder(src, dst).execute(stream_, src, dst);
  stream_.wait();
  weight_storage_.push_back(std::move(storage));
  weight_cache_.emplace(std::make_pair(id, key), dst);
  return dst;
}

int FusedProgram::primitive_kernel(const std::string& op, const dnnl::primitive& primitive,
                                   const dnnl::primitive_desc_base& pd, const memory::desc& src,
                                   const memory::desc& dst, std::unordered_map<int, memory> fixed) {
  auto call = std::make_shared<PrimitiveCall>();
  call->primitive = primitive;
  call->op = op;
  ++primitives_;
  reference_primitives_ += is_reference_impl(pd);
  memory src_memory(src, cpu_engine(), DNNL_MEMORY_NONE);
  memory dst_memory(dst, cpu_engine(), DNNL_MEMORY_NONE);
  fixed[DNNL_ARG_SRC] = src_memory;
  fixed[DNNL_ARG_DST] = dst_memory;
  call->src = src_memory.get();
  call->dst = dst_memory.get();
  const memory::desc scratch = pd.scratchpad_desc();
  if (scratch.get_size() > 0) {
    memory scratch_memory(scratch, cpu_engine(), DNNL_MEMORY_NONE);
    fixed[DNNL_ARG_SCRATCHPAD] = scratch_memory;
    call->scratchpad = scratch_memory.get();
    scratchpad_bytes_ = std::max(scratchpad_bytes_, static_cast<int64_t>(scratch.get_size()));
  }
  for (const auto& [arg, m] : fixed) {
    call->memories.push_back(m);
    call->args.push_back({arg, m.get()});
  }
  calls_.push_back(call);
  dnnl_stream_t stream = stream_.get();
  return add_kernel([call = call.get(), stream, source = source_](int64_t, int64_t, float* const* operands) {
    dnnl_memory_set_data_handle(call->src, operands[0]);
    dnnl_memory_set_data_handle(call->dst, operands[1]);
    const dnnl_status_t status =
        dnnl_primitive_execute(call->primitive.get(), stream, static_cast<int>(call->args.size()), call->args.data());
    if (status != dnnl_success) fail("{}: oneDNN failed to execute \"{}\" (status {})", source, call->op, static_cast<int>(status));
  });
}

void FusedProgram::bind_scratchpad() {
  if (scratchpad_bytes_ == 0) return;
  scratchpad_ = account_.allocate(scratchpad_bytes_, MemoryUse::Scratchpad, source_ + " scratchpad");
  for (const auto& call : calls_) {
    if (call->scratchpad != nullptr) dnnl_memory_set_data_handle(call->scratchpad, scratchpad_.data());
  }
}

// Convolution and pooling on a band of output rows [first, first + count): the input rows it
// needs, clipped to the tensor, with the clipped part as padding, so that the top edge, the middle
// and the bottom edge are three band shapes (plus a shorter last band). Writes the first input row
// to *src_row.
int FusedProgram::window_kernel(OpId id, int64_t first, int64_t count, bool parallel, int64_t* src_row) {
  const Op& op = graph_.op(id);
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  Window win = op.window;
  const int64_t top = first * win.stride_h - win.pad_top;
  const int64_t bottom = (first + count - 1) * win.stride_h - win.pad_top + win.extent_h() - 1;
  const int64_t a = std::max<int64_t>(0, top), b = std::min<int64_t>(in.h - 1, bottom);
  if (b < a) fail_op(op, fmt::format("output rows {}..{} see no input row", first, first + count - 1));
  *src_row = a;
  const int64_t pad_t = a - top, pad_b = bottom - b, in_rows = b - a + 1;
  const auto key = std::make_tuple(id, in_rows, count, pad_t, pad_b, parallel);
  if (const auto found = window_kernels_.find(key); found != window_kernels_.end()) return found->second;
  // oneDNN splits a primitive's work for the threads it sees when it is created.
  set_threads(parallel ? options_.threads : 1);

  const memory::desc src({1, in.c, in_rows, in.w}, DataType::f32, Tag::nhwc);
  const memory::desc dst({1, out.c, count, out.w}, DataType::f32, Tag::nhwc);
  const int64_t pad_r = effective_pad_end(in.w, win.pad_left, win.pad_right, win.extent_w(), win.stride_w, out.w);
  const memory::dims strides = {win.stride_h, win.stride_w};
  const memory::dims dilates = {win.dilation_h - 1, win.dilation_w - 1};
  const memory::dims pad_l = {pad_t, win.pad_left}, pad_rb = {pad_b, pad_r};
  int kernel = -1;
  try {
    if (op.kind == OpKind::Conv) {
      const int64_t g = op.groups;
      const memory::dims weight_dims = g > 1 ? memory::dims{g, out.c / g, in.c / g, win.kernel_h, win.kernel_w}
                                             : memory::dims{out.c, in.c, win.kernel_h, win.kernel_w};
      const memory::desc weight_user(weight_dims, DataType::f32, g > 1 ? Tag::goihw : Tag::oihw);
      const memory::desc weight_any(weight_dims, DataType::f32, Tag::any);
      const memory::desc bias_md({out.c}, DataType::f32, Tag::x);
      dnnl::post_ops ops;
      append_activation(ops, op.activation);
      const auto desc = op.bias ? dnnl::convolution_forward::desc(kInference, algorithm::convolution_direct, src,
                                                                  weight_any, bias_md, dst, strides, dilates, pad_l, pad_rb)
                                : dnnl::convolution_forward::desc(kInference, algorithm::convolution_direct, src,
                                                                  weight_any, dst, strides, dilates, pad_l, pad_rb);
      const dnnl::convolution_forward::primitive_desc pd(desc, user_scratchpad(ops), cpu_engine());
      std::unordered_map<int, memory> fixed;
      fixed[DNNL_ARG_WEIGHTS] = weights(id, weight_user, op.weight->data(), pd.weights_desc(), op.name + " weights");
      if (op.bias) fixed[DNNL_ARG_BIAS] = weights(id, bias_md, op.bias->data(), pd.bias_desc(), op.name + " bias");
      kernel = primitive_kernel(op.name, dnnl::convolution_forward(pd), pd, src, dst, std::move(fixed));
    } else {
      const algorithm alg = op.kind == OpKind::MaxPool ? algorithm::pooling_max
                            : op.count_include_pad     ? algorithm::pooling_avg_include_padding
                                                       : algorithm::pooling_avg_exclude_padding;
      dnnl::post_ops ops;
      append_activation(ops, op.activation);
      const dnnl::pooling_v2_forward::primitive_desc pd(
          {kInference, alg, src, dst, strides, {win.kernel_h, win.kernel_w}, dilates, pad_l, pad_rb},
          user_scratchpad(ops), cpu_engine());
      kernel = primitive_kernel(op.name, dnnl::pooling_v2_forward(pd), pd, src, dst, {});
    }
  } catch (const dnnl::error& e) {
    fail_op(op, fmt::format("oneDNN cannot run a band of {} rows ({})", count, e.what()));
  }
  window_kernels_.emplace(key, kernel);
  return kernel;
}

// Elementwise binary op with broadcasting: a broadcast operand has stride 0 along its size-1 axes.
// Operands: a at its window's first row, b likewise, the output at `first`.
Kernel FusedProgram::binary_kernel(const Op& op) const {
  const Shape out = graph_.output_of(op).shape;
  const Shape a = graph_.input_of(op, 0).shape, b = graph_.input_of(op, 1).shape;
  const OpKind kind = op.kind;
  const Activation act = op.activation;
  return [=](int64_t, int64_t count, float* const* p) {
    const auto apply = [kind](float x, float y) { return kind == OpKind::Add ? x + y : kind == OpKind::Sub ? x - y : x * y; };
    if (a == out && b == out) {
      const int64_t n = count * row_floats(out);
      for (int64_t i = 0; i < n; ++i) p[2][i] = apply(p[0][i], p[1][i]);
      activate(p[2], n, act);
      return;
    }
    const auto strides = [&](const Shape& s) {
      return std::array<int64_t, 3>{s.h == 1 ? 0 : row_floats(s), s.w == 1 ? 0 : s.c, s.c == 1 ? 0 : 1};
    };
    const auto sa = strides(a), sb = strides(b);
    for (int64_t y = 0; y < count; ++y) {
      float* o = p[2] + y * row_floats(out);
      for (int64_t x = 0; x < out.w; ++x) {
        const float* pa = p[0] + y * sa[0] + x * sa[1];
        const float* pb = p[1] + y * sb[0] + x * sb[1];
        for (int64_t c = 0; c < out.c; ++c) o[x * out.c + c] = apply(pa[c * sa[2]], pb[c * sb[2]]);
      }
      activate(o, row_floats(out), act);
    }
  };
}

// Fully connected on a multi-row input, one input row per event: y += W_row x_row, with W's rows
// for input row h reordered to NHWC (w, c) order at compile time. Operands: input row `first`,
// the output row.
Kernel FusedProgram::gemm_kernel(const Op& op) {
  const Shape in = graph_.input_of(op).shape;
  const int64_t outs = graph_.output_of(op).shape.c;
  const int64_t row = row_floats(in);
  Allocation storage = account_.allocate(in.h * outs * row * static_cast<int64_t>(sizeof(float)), MemoryUse::Weights,
                                         op.name + " weights");
  float* w = storage.floats();
  const float* src = op.weight->data();
  for (int64_t h = 0; h < in.h; ++h) {
    for (int64_t o = 0; o < outs; ++o) {
      for (int64_t x = 0; x < in.w; ++x) {
        for (int64_t c = 0; c < in.c; ++c) w[(h * outs + o) * row + x * in.c + c] = src[o * in.c * in.h * in.w + (c * in.h + h) * in.w + x];
      }
    }
  }
  weight_storage_.push_back(std::move(storage));
  const float* bias = op.bias ? op.bias->data() : nullptr;
  const Activation act = op.activation;
  const int threads = options_.threads > 0 ? options_.threads : available_threads();
  return [=](int64_t first, int64_t count, float* const* p) {
    float* y = p[1];
    if (first == 0) {
      for (int64_t o = 0; o < outs; ++o) y[o] = bias ? bias[o] : 0.0f;
    }
    for (int64_t r = 0; r < count; ++r) {
      const float* x = p[0] + r * row;
      const float* wr = w + (first + r) * outs * row;
#pragma omp parallel for num_threads(threads) if (outs * row > (1 << 16)) schedule(static)
      for (int64_t o = 0; o < outs; ++o) {
        const float* wo = wr + o * row;
        float sum = 0;
        for (int64_t i = 0; i < row; ++i) sum += wo[i] * x[i];
        y[o] += sum;
      }
    }
    if (first + count == in.h) activate(y, outs, act);
  };
}

// Averages over explicit taps (AdaptiveAvgPool, average pools whose ceil_mode window reaches past
// the padding). Operands: the input at the first tap row of output row `first`, the output there.
Kernel FusedProgram::average_kernel(const Op& op, AxisWindows rows, AxisWindows cols) const {
  const Shape in = graph_.input_of(op).shape, out = graph_.output_of(op).shape;
  const Activation act = op.activation;
  std::vector<int64_t> band_first;  // where the operand points for each output row
  for (int64_t y = 0; y < out.h; ++y) band_first.push_back(rows::band(graph_, op, 0, y).first);
  return [=, rows = std::move(rows), cols = std::move(cols)](int64_t first, int64_t count, float* const* p) {
    const int64_t base = band_first[static_cast<size_t>(first)];
    for (int64_t y = first; y < first + count; ++y) {
      float* o = p[1] + (y - first) * row_floats(out);
      const auto& ty = rows.taps[static_cast<size_t>(y)];
      for (int64_t x = 0; x < out.w; ++x) {
        float* d = o + x * out.c;
        std::fill(d, d + out.c, 0.0f);
        for (int64_t iy : ty) {
          for (int64_t ix : cols.taps[static_cast<size_t>(x)]) {
            const float* s = p[0] + (iy - base) * row_floats(in) + ix * in.c;
            for (int64_t c = 0; c < in.c; ++c) d[c] += s[c];
          }
        }
        const float divisor = rows.divisor[static_cast<size_t>(y)] * cols.divisor[static_cast<size_t>(x)];
        for (int64_t c = 0; c < out.c; ++c) d[c] /= divisor;
      }
      activate(o, row_floats(out), act);
    }
  };
}

// Host kernels, one per op. Operands: each input at its window's first row for event `first`, then
// the output at row `first` (row 0 for reductions).
int FusedProgram::host_kernel(OpId id) {
  if (const auto found = host_kernels_.find(id); found != host_kernels_.end()) return found->second;
  const Op& op = graph_.op(id);
  const Shape in = graph_.input_of(op).shape, out = graph_.output_of(op).shape;
  const Activation act = op.activation;
  Kernel kernel;
  switch (op.kind) {
    case OpKind::Add:
    case OpKind::Sub:
    case OpKind::Mul: kernel = binary_kernel(op); break;
    case OpKind::Gemm: kernel = gemm_kernel(op); break;
    case OpKind::GlobalAvgPool:
      kernel = [=](int64_t first, int64_t count, float* const* p) {
        float* y = p[1];
        if (first == 0) std::fill(y, y + in.c, 0.0f);
        for (int64_t r = 0; r < count; ++r) {
          for (int64_t x = 0; x < in.w; ++x) {
            const float* s = p[0] + r * row_floats(in) + x * in.c;
            for (int64_t c = 0; c < in.c; ++c) y[c] += s[c];
          }
        }
        if (first + count == in.h) {
          const float scale = 1.0f / static_cast<float>(in.h * in.w);
          for (int64_t c = 0; c < in.c; ++c) y[c] *= scale;
          activate(y, in.c, act);
        }
      };
      break;
    case OpKind::AdaptiveAvgPool:
      kernel = average_kernel(op, adaptive_windows(in.h, out.h), adaptive_windows(in.w, out.w));
      break;
    case OpKind::AvgPool: {
      const Window& win = op.window;
      kernel = average_kernel(op,
                              pool_windows(in.h, out.h, win.kernel_h, win.stride_h, win.dilation_h, win.pad_top,
                                           win.pad_bottom, true),
                              pool_windows(in.w, out.w, win.kernel_w, win.stride_w, win.dilation_w, win.pad_left,
                                           win.pad_right, true));
      break;
    }
    case OpKind::BatchNorm: {
      const float* scale = op.weight->data();
      const float* shift = op.bias->data();
      kernel = [=](int64_t, int64_t count, float* const* p) {
        for (int64_t r = 0; r < count * out.w; ++r) {
          const float* s = p[0] + r * out.c;
          float* d = p[1] + r * out.c;
          for (int64_t c = 0; c < out.c; ++c) d[c] = s[c] * scale[c] + shift[c];
        }
        activate(p[1], count * row_floats(out), act);
      };
      break;
    }
    case OpKind::Activation:
    case OpKind::Identity:
      kernel = [=](int64_t, int64_t count, float* const* p) {
        std::memcpy(p[1], p[0], static_cast<size_t>(count * row_floats(out)) * sizeof(float));
        activate(p[1], count * row_floats(out), act);
      };
      break;
    case OpKind::Softmax:
      kernel = [=](int64_t, int64_t count, float* const* p) {
        for (int64_t r = 0; r < count * out.w; ++r) {
          const float* s = p[0] + r * out.c;
          float* d = p[1] + r * out.c;
          const float top = *std::max_element(s, s + out.c);
          float sum = 0;
          for (int64_t c = 0; c < out.c; ++c) sum += d[c] = std::exp(s[c] - top);
          for (int64_t c = 0; c < out.c; ++c) d[c] /= sum;
        }
        activate(p[1], count * row_floats(out), act);
      };
      break;
    case OpKind::Concat: {
      std::vector<int64_t> channels;
      for (TensorId t : op.inputs) channels.push_back(graph_.tensor(t).shape.c);
      kernel = [=](int64_t, int64_t count, float* const* p) {
        const size_t parts = channels.size();
        for (int64_t r = 0; r < count * out.w; ++r) {
          float* d = p[parts] + r * out.c;
          for (size_t k = 0; k < parts; ++k) {
            std::memcpy(d, p[k] + r * channels[k], static_cast<size_t>(channels[k]) * sizeof(float));
            d += channels[k];
          }
        }
        activate(p[parts], count * row_floats(out), act);
      };
      break;
    }
    case OpKind::Flatten:
      // Its one event sees every input row; the output is in NCHW (c, h, w) order.
      kernel = [=](int64_t, int64_t, float* const* p) {
        for (int64_t h = 0; h < in.h; ++h) {
          for (int64_t x = 0; x < in.w; ++x) {
            for (int64_t c = 0; c < in.c; ++c) p[1][(c * in.h + h) * in.w + x] = p[0][(h * in.w + x) * in.c + c];
          }
        }
        activate(p[1], out.c, act);
      };
      break;
    case OpKind::Conv:
    case OpKind::MaxPool: fail_op(op, "runs as a oneDNN primitive, not a host kernel");
  }
  const int index = add_kernel(std::move(kernel));
  host_kernels_.emplace(id, index);
  return index;
}

void FusedProgram::compile_steps() {
  // Load: caller NCHW image -> NHWC line buffer rows; Store: the reverse. Operands: the caller
  // tensor's image, the line buffer at row `first`.
  std::map<TensorId, int> loads, stores;
  const auto transfer = [&](TensorId t, bool load) {
    auto& cache = load ? loads : stores;
    if (const auto found = cache.find(t); found != cache.end()) return found->second;
    const Shape s = graph_.tensor(t).shape;
    Kernel kernel = [s, load](int64_t first, int64_t count, float* const* p) {
      const float* from = p[load ? 0 : 1];
      float* ring = p[load ? 1 : 0];
      float* image = p[load ? 0 : 1];
      for (int64_t y = 0; y < count; ++y) {
        float* row = ring + y * row_floats(s);
        for (int64_t c = 0; c < s.c; ++c) {
          const int64_t plane = (c * s.h + first + y) * s.w;
          for (int64_t x = 0; x < s.w; ++x) {
            if (load) {
              row[x * s.c + c] = from[plane + x];
            } else {
              image[plane + x] = row[x * s.c + c];
            }
          }
        }
      }
    };
    const int index = add_kernel(std::move(kernel));
    cache.emplace(t, index);
    return index;
  };

  for (size_t p = 0; p < partitions_.size(); ++p) {
    for (const FusedStep& fs : partitions_[p].schedule.steps) {
      Step step;
      step.first = fs.first;
      step.count = fs.count;
      step.operand_begin = static_cast<uint32_t>(operands_.size());
      if (fs.kind != StepKind::Compute) {
        const Place& place = partitions_[p].places[static_cast<size_t>(fs.tensor)];
        const Address image{place.slot, 0, nullptr};
        const Address ring = address(p, fs.tensor, fs.first);
        step.kernel = transfer(fs.tensor, fs.kind == StepKind::Load);
        step.host = true;
        if (fs.kind == StepKind::Load) {
          operands_.push_back(image);
          operands_.push_back(ring);
        } else {
          operands_.push_back(ring);
          operands_.push_back(image);
        }
      } else {
        const Op& op = graph_.op(fs.op);
        const bool accumulates = rows::mode_of(graph_, op) == rows::Mode::Accumulate;
        const bool windowed = op.kind == OpKind::Conv || op.kind == OpKind::MaxPool || op.kind == OpKind::AvgPool;
        bool host_average = false;
        if (op.kind == OpKind::AvgPool && op.count_include_pad) {
          // oneDNN divides by the whole kernel; PyTorch does not count ceil_mode's extra padding.
          const Shape& in = graph_.input_of(op).shape;
          const Shape& out = graph_.output_of(op).shape;
          const Window& w = op.window;
          host_average = effective_pad_end(in.h, w.pad_top, w.pad_bottom, w.extent_h(), w.stride_h, out.h) > w.pad_bottom ||
                         effective_pad_end(in.w, w.pad_left, w.pad_right, w.extent_w(), w.stride_w, out.w) > w.pad_right;
        }
        const int64_t events = rows::event_count(graph_, op);
        step.parallel = analysis_.op(fs.op).macs * fs.count / std::max<int64_t>(events, 1) >= kParallelMacs;
        if (windowed && !host_average) {
          int64_t src_row = 0;
          step.kernel = window_kernel(fs.op, fs.first, fs.count, step.parallel, &src_row);
          operands_.push_back(address(p, op.inputs[0], src_row));
        } else {
          step.kernel = host_kernel(fs.op);
          step.host = true;
          for (size_t k = 0; k < op.inputs.size(); ++k) {
            operands_.push_back(address(p, op.inputs[k], rows::band(graph_, op, k, fs.first).first));
          }
        }
        operands_.push_back(address(p, op.output, accumulates ? 0 : fs.first));
      }
      step.operand_count = static_cast<uint32_t>(operands_.size() - step.operand_begin);
      steps_.push_back(step);
    }
  }
  size_t widest = 0;
  for (const Step& s : steps_) widest = std::max<size_t>(widest, s.operand_count);
  resolved_.resize(widest);
  slots_.resize(slot_image_floats_.size());
}

void FusedProgram::run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) {
  const int threads = options_.threads > 0 ? options_.threads : available_threads();
  int current = threads;
  set_threads(threads);
  for (size_t k = 0; k < inputs.size(); ++k) slots_[k] = const_cast<float*>(inputs[k].values.data());  // read only
  for (size_t k = 0; k < outputs.size(); ++k) slots_[inputs.size() + k] = outputs[k].values.data();
  const int64_t images = input_shapes_.empty() ? 1 : input_shapes_[0].n;
  for (int64_t n = 0; n < images; ++n) {
    for (const auto& [in, out] : passthrough_) {
      const auto floats = static_cast<size_t>(slot_image_floats_[static_cast<size_t>(in)]);
      std::memcpy(outputs[static_cast<size_t>(out)].values.data() + static_cast<size_t>(n) * floats,
                  inputs[static_cast<size_t>(in)].values.data() + static_cast<size_t>(n) * floats, floats * sizeof(float));
    }
    bool drained = true;
    for (const Step& step : steps_) {
      for (uint32_t i = 0; i < step.operand_count; ++i) {
        const Address& a = operands_[step.operand_begin + i];
        resolved_[i] = a.slot < 0 ? a.fixed
                                  : slots_[static_cast<size_t>(a.slot)] + n * slot_image_floats_[static_cast<size_t>(a.slot)] + a.offset;
      }
      if (step.host && !drained) stream_.wait();
      if (const int wanted = step.parallel ? threads : 1; wanted != current) {
        omp_set_num_threads(wanted);
        current = wanted;
      }
      kernels_[static_cast<size_t>(step.kernel)](step.first, step.count, resolved_.data());
      drained = step.host;
    }
    stream_.wait();
  }
}

std::string FusedProgram::describe() const {
  return fmt::format(
      "fused row-streaming, oneDNN {}.{}.{}: {} partition{}, {} steps ({}), {} line buffers, NHWC rows, "
      "{} convolution/pooling band kernels{}",
      DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, DNNL_VERSION_PATCH, partitions_.size(),
      partitions_.size() == 1 ? "" : "s", steps_.size(),
      max_band_rows_ == 1 ? "one row per step" : fmt::format("up to {} rows per step", max_band_rows_), line_buffers_,
      primitives_, reference_primitives_ > 0 ? fmt::format(" ({} on oneDNN's reference C code)", reference_primitives_) : "");
}

class FusedExecutor final : public Executor {
public:
  explicit FusedExecutor(std::unique_ptr<FusedProgram> program, std::string source)
      : program_(std::move(program)), source_(std::move(source)) {}

  using Executor::run;
  void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) override {
    check_tensors(source_, "input", program_->input_shapes(), inputs);
    check_tensors(source_, "output", program_->output_shapes(), {outputs.data(), outputs.size()});
    program_->run(inputs, outputs);
  }
  const MemoryAccount& memory() const override { return program_->memory_account(); }
  std::string describe() const override { return program_->describe(); }
  std::span<const Shape> input_shapes() const override { return program_->input_shapes(); }
  std::span<const Shape> output_shapes() const override { return program_->output_shapes(); }

private:
  std::unique_ptr<FusedProgram> program_;
  std::string source_;
};

}  // namespace
}  // namespace exec

std::unique_ptr<Executor> compile_fused(const Graph& graph, const Plan& plan, const FusedOptions& options) {
  return std::make_unique<exec::FusedExecutor>(std::make_unique<exec::FusedProgram>(graph, plan, options), graph.source);
}

}  // namespace occam
