// The fused row-streaming executor.
//
// Compilation, per partition of the plan: decide how each tensor is held (TensorRole), build the
// step list (fused_schedule.hpp), size one circular line buffer per streamed tensor from it, and
// lay out all line buffers and boundary tensors in one arena (a memory file, so that each line
// buffer can be mapped twice back to back and any window of its rows is contiguous). Then every
// step gets its kernel (a oneDNN primitive per band shape, or a host kernel) and its operand
// addresses, which are fixed at compile time except for the caller's tensors. `run` walks the steps.
//
// Threads: the ops of each partition are cut into one contiguous group per thread, balanced by the
// measured time of their kernels, and each thread walks its own steps in the schedule's order,
// every kernel single-threaded. A step waits only for the steps of other threads it depends on (the
// rows it reads produced; the line-buffer rows it overwrites read), computed at compile time as
// counts of each thread's completed steps. This is a software pipeline over the row schedule: no
// fork and join per row, as oneDNN's own parallelism would need for every kernel call. Line buffers
// between threads get a few more rows so that neither thread waits for the other on every row.
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
#include "exec/row_conv.hpp"
#include "exec/tensors.hpp"
#include "exec/windows.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

namespace occam {
namespace exec {
namespace {

// Where a step operand lives: a fixed address (line buffers and boundary tensors), or a float
// offset into the current image of a caller tensor. 16 bytes: the operand lists are part of the
// program a run reads once per image (RunStep).
struct Address {
  static Address at(float* fixed) {
    Address a;
    a.fixed = fixed;
    return a;
  }
  static Address in_slot(int32_t slot, int64_t offset) {
    Address a;
    a.slot = slot;
    a.offset = offset;
    return a;
  }
  // What tells two addresses apart: (slot, offset) or (-1, the fixed address).
  std::pair<int32_t, intptr_t> key() const { return {slot, slot < 0 ? reinterpret_cast<intptr_t>(fixed) : static_cast<intptr_t>(offset)}; }
  union {
    int64_t offset = 0;  // slot >= 0
    float* fixed;        // slot < 0
  };
  int32_t slot = -1;  // caller tensor: graph inputs first, then graph outputs
};

// An operand before the arena is laid out: row `row` of tensor `tensor` as partition `partition`
// holds it.
struct OperandRef {
  int32_t partition = 0;
  TensorId tensor = -1;
  int64_t row = 0;  // may be negative: a row of zeros above the tensor (ZeroRows)
};
// OperandRef::row of a caller tensor's whole image.
constexpr int64_t kWholeImage = std::numeric_limits<int64_t>::min();

// A kernel computes `count` events of its op starting at event `first`, on operand addresses laid
// out as its builder documents.
using Kernel = std::function<void(int64_t first, int64_t count, float* const* operands)>;

// A band of output rows on occam's own convolution kernel: per output row, where its input rows
// start and its output row goes (floats from the band's), and the kernel rows the image has.
struct OwnBand {
  struct Row {
    int64_t src_offset = 0, dst_offset = 0;
    int64_t kernel_begin = 0, kernel_end = 0;
  };
  std::vector<Row> rows;
};

// Before running, a step waits until thread `thread` has completed `steps` of its steps (of the
// current image).
struct Wait {
  int32_t thread = 0;
  int32_t steps = 0;
};

// A step as compiled: its operands as refs (operand_refs_), to be resolved once memory is laid out.
struct Step {
  int kernel = 0;
  int32_t first = 0;
  int32_t count = 0;
  uint32_t operand_begin = 0;  // in operand_refs_
  uint32_t operand_count = 0;
  uint32_t operands = 0;  // in operands_, once resolved
  int32_t thread = 0;
};

// A step as a thread runs it, in 16 bytes: the steps are read once per image, so in a stream they
// take cache like a tensor does (mobilenet_v2 1024: 7905 steps). Its operands are the list at
// `operands` in operands_, as many as its kernel takes; steps with the same addresses (a line
// buffer's rows come round again) share one list.
struct RunStep {
  uint32_t kernel = 0;
  int32_t first = 0;
  int32_t count = 0;
  uint32_t operands = 0;
};
static_assert(sizeof(RunStep) == 16);

// A thread's steps in schedule order, and before which of them it waits for another thread.
struct Lane {
  struct Before {
    uint32_t step = 0;  // index in `steps`
    Wait wait;
  };
  std::span<const RunStep> steps;
  std::span<const Before> waits;  // by step
};

// What a step reads or writes: rows [lo, hi] of a tensor. Compile-time only, for the waits.
struct Access {
  TensorId tensor = -1;
  int64_t lo = 0, hi = 0;
  bool write = false;
};

// Rows added to a line buffer that one thread writes and another reads: without them the writer
// could not produce a row before the reader has released the oldest one, and the two threads would
// take turns instead of overlapping.
constexpr int64_t kPipelineRows = 2;

// How long a thread spins (pause instructions) for a partner before yielding its core: a partner
// that is running arrives within microseconds; one that was descheduled by other work on a shared
// machine may take a time slice, better spent by whoever else wants the core.
constexpr int kSpinsBeforeYield = 256;

// A cut between two threads leaving them further apart than this share of the partition's work is
// evened out by sharing the rows of the op across the middle.
constexpr double kStraddleImbalance = 0.01;

// The most uneven share of output channel blocks (largest share x threads / blocks) for which the
// threads share a whole-tensor convolution by channels rather than by rows in NHWC.
constexpr double kChannelImbalance = 1.1;

// How a tensor that whole-tensor steps write and read at once lays out its image in its buffer.
enum class WholeLayout : uint8_t {
  Rows,     // NHWC rows, as every line buffer holds them
  Blocked,  // the ISA's channel blocking of the whole image (nChw8c, nChw16c), the reference's layout
  Planar,   // NCHW: the caller's input image as it is, for first convolutions of fewer channels than a block
};

// The CPU stream of the calling thread: oneDNN streams are not to be shared by threads that execute
// at the same time, and on the CPU engine execution is synchronous, so a thread's stream is only
// the handle its primitive calls go through.
dnnl_stream_t thread_stream() {
  static thread_local dnnl::stream stream(cpu_engine());
  return stream.get();
}

// How one partition reaches a tensor.
struct Place {
  TensorRole role = TensorRole::None;
  char* base = nullptr;    // line buffer or boundary tensor in the arena
  int64_t ring_bytes = 0;  // line buffers: the circular size
  int64_t block_offset = -1;  // line buffers: where in the partition's block (others may share it)
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
  int kernel = -1;
};

// Where a line buffer's first mapping lies, for kernels that must not read past it; set by
// lay_out_memory (the buffers move when the pipeline rows are added).
struct RingSpan {
  const char* begin = nullptr;
  int64_t bytes = 0;
};

int64_t row_floats(const Shape& s) { return s.w * s.c; }

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
    case ActKind::Swish:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
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
  // The kernels' time for one image on one thread, as calibrated for the threads' split (0 if none).
  double calibrated_seconds() const { return calibrated_seconds_; }
  size_t own_convolutions() const { return own_convs_.size(); }
  // Convolutions the own kernel could run (all of them on it with RowKernels::Own).
  size_t own_candidates() const { return own_candidates_.size(); }
  // Whether some convolution runs several rows per step for its filters' sake (FilterBands::On).
  bool has_filter_bands(const Plan& plan) const {
    return options_.filter_bands != FilterBands::Off && band_rows_ != step_bands(analysis_, plan, options_.band_bytes, false);
  }
  // Tensors held in channel blocks: whole, or as rows of a chain of dense convolutions.
  size_t blocked_tensors() const {
    return static_cast<size_t>(std::count(row_blocked_.begin(), row_blocked_.end(), true) +
                               std::count(whole_layout_.begin(), whole_layout_.end(), WholeLayout::Blocked));
  }
  // Per thread: seconds the last run() spent waiting for the other threads (empty with one thread).
  std::vector<double> thread_waits() const;

private:
  // --- compilation
  [[noreturn]] void fail_op(const Op& op, const std::string& what) const;
  void assign_roles(const Plan& plan);
  void lay_out_memory();
  ArenaLayout pack_rings(size_t partition) const;
  std::vector<int> share_classes(size_t partition) const;
  void compile_steps();
  void calibrate_and_split();
  struct PartitionState;
  std::vector<int64_t> cut_bytes(const PartitionState& state) const;
  int64_t straddle_reserve(const PartitionState& state) const;
  struct MiddleOp {
    size_t index = 0;       // from the partition's first op
    int64_t crossing = 0;   // pipeline-row bytes on both of its sides (cut_bytes)
    bool accumulates = false;
  };
  MiddleOp middle_op(const PartitionState& state, std::span<const double> prefix, std::span<const int64_t> bytes) const;
  void split(PartitionState& state, const std::vector<double>& cost) const;
  void share_fill_and_drain(const std::vector<double>& cost);
  void add_pipeline_rows();
  void compute_waits();
  void pack_program(const std::vector<std::vector<RunStep>>& steps, const std::vector<std::vector<Lane::Before>>& waits);
  void resolve_operands();
  static RunStep runnable(const Step& step);
  void execute(const RunStep& step, int64_t image, std::vector<float*>& resolved);
  void run_lane(int thread, int64_t images);
  int32_t caller_slot(TensorId t) const;
  Address address(const OperandRef& ref) const;
  int add_kernel(Kernel kernel);
  int primitive_kernel(const std::string& op, const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
                       const memory::desc& src, const memory::desc& dst, std::unordered_map<int, memory> fixed);
  const float* owned_copy(const std::vector<float>& values, const std::string& what);
  memory weights(OpId id, const memory::desc& user, const float* data, const memory::desc& md, const std::string& what);
  // `share`: steps of different threads get different kernels, since a primitive call binds its
  // operands (and its thread's scratchpad) in shared state.
  int window_kernel(OpId id, int64_t first, int64_t count, int32_t share, int64_t* src_row);
  struct Descs {
    memory::desc src, dst;
    memory::desc rows;  // the output rows as the line buffer holds them, where dst differs
    memory::dims strides, dilates, pad_l, pad_rb;
  };
  Descs window_descs(const Op& op, int64_t in_rows, int64_t count, int64_t pad_t, int64_t pad_b) const;
  struct BandInput {
    int64_t first_row = 0, rows = 0;  // may start in the rows of zeros above the tensor
    int64_t pad_t = 0, pad_b = 0;
  };
  BandInput band_input(const Op& op, int64_t first, int64_t count) const;
  int64_t described_rows(OpId id, const BandInput& band, int64_t count) const;
  memory::dims band_weight_dims(OpId id, int64_t in_rows) const;
  dnnl::convolution_forward::primitive_desc band_convolution(OpId id, const Descs& d, int64_t in_rows) const;
  void choose_row_layouts();
  void choose_whole_layouts();
  bool whole_runs_jit(OpId id, WholeLayout in, WholeLayout out) const;
  struct WholeDescs {
    memory::desc src, dst, weights, bias;
    int64_t src_offset = 0, dst_offset = 0, weight_offset = 0, bias_offset = 0;  // floats
  };
  WholeDescs whole_descs(const Op& op, WholeLayout in, int64_t first_channel, int64_t channels) const;
  struct WholePrimitive {  // one of the two
    std::optional<dnnl::convolution_forward::primitive_desc> conv;
    std::optional<dnnl::pooling_v2_forward::primitive_desc> pool;
    const dnnl::primitive_desc_base& pd() const {
      return conv ? static_cast<const dnnl::primitive_desc_base&>(*conv) : *pool;
    }
  };
  WholePrimitive whole_primitive(const Op& op, const WholeDescs& d, const dnnl::post_ops& ops) const;
  std::pair<int64_t, int64_t> channel_share(const Op& op, int32_t share) const;
  int whole_kernel(OpId id, int32_t share);
  int offset_kernel(int inner, int64_t src_offset, int64_t dst_offset);
  bool runs_jit(OpId id) const;
  // A convolution or max pool writing a channel-blocked whole tensor.
  bool channel_blocked(OpId id) const {
    const Op& op = graph_.op(id);
    return (op.kind == OpKind::Conv || op.kind == OpKind::MaxPool) && whole_layout_[static_cast<size_t>(op.output)] == WholeLayout::Blocked;
  }
  int64_t ring_rows_limit(TensorId t) const;
  int converting_kernel(const Op& op, int32_t share, int inner, const memory::desc& blocked, const memory::desc& rows);
  int own_row_kernel(OpId id, const Descs& d, int64_t in_rows, int64_t count, int64_t pad_t);
  int convolution_kernel(OpId id, const dnnl::convolution_forward::primitive_desc& pd, const memory::desc& user, const float* data,
                         const std::string& name, const memory::desc& src, const memory::desc& dst);
  bool rotates_wrapping_windows(OpId id, const Descs& d, int64_t count) const;
  int rotating_kernel(OpId id, int whole, int64_t in_rows, int64_t pad_t);
  std::optional<RowConvShape> own_row_shape(const Op& op, const Descs& d, int64_t in_rows, int64_t count) const;
  bool own_band_faster(const RowConvShape& shape, const OwnBand& band, const dnnl::convolution_forward::primitive_desc& pd);
  int host_kernel(OpId id);
  Kernel binary_kernel(const Op& op) const;
  Kernel gemm_kernel(const Op& op);
  Kernel average_kernel(const Op& op, AxisWindows rows, AxisWindows cols) const;
  void bind_scratchpads();

  const Graph& graph_;  // read during compilation only
  std::string source_;
  FusedOptions options_;
  Analysis analysis_;
  dnnl::stream stream_;
  MemoryAccount account_;

  // Per op: its partition and its events per step; per partition: ops, roles, schedule, places.
  std::vector<int> partition_of_;
  std::vector<int> band_rows_;
  std::vector<ConvGroups> conv_groups_;  // per op: a convolution's groups as oneDNN runs them
  std::vector<bool> row_blocked_;  // per tensor: rows in the ISA's blocked layout, each on its own
  std::vector<ZeroRows> zero_rows_;  // per tensor: rows of zeros its line buffer holds beyond its edges
  std::vector<WholeLayout> whole_layout_;  // per tensor
  struct PartitionState {
    OpId first = 0, last = 0;
    bool streams_filters = false;  // the plan's Fallback::StreamWeights: filters beyond the capacity
    std::vector<TensorRole> roles;
    SpanSchedule schedule;
    std::vector<Place> places;
    std::vector<int> thread_of;  // per op - first
    // Two threads: the op (index from first, -1: none) whose rows both threads take, interleaved,
    // thread 0 this share of them, so that a cut between ops of unequal cost still balances.
    int straddle = -1;
    double straddle_share = 0;
    int64_t reserve = 0;         // bytes of the arena block kept for pipeline rows
    int64_t block = 0;           // bytes of the arena block: line buffers without pipeline rows + reserve
  };
  std::vector<PartitionState> partitions_;
  std::vector<BoundarySpan> boundaries_;  // per tensor

  Allocation arena_;
  std::vector<MirroredRange> rings_;
  std::vector<Allocation> scratchpads_;  // one per thread
  // A blocked output row, converted to an NHWC row: per tensor and thread share (threads that take
  // turns at an op's rows convert their rows at the same time).
  std::map<std::pair<TensorId, int32_t>, Allocation> blocked_rows_;
  int64_t scratchpad_bytes_ = 0;
  std::vector<Allocation> weight_storage_;
  std::map<std::pair<OpId, std::string>, memory> weight_cache_;

  std::vector<Kernel> kernels_;
  std::vector<std::shared_ptr<PrimitiveCall>> calls_;
  std::map<std::tuple<OpId, int64_t, int64_t, int64_t, int64_t, int32_t>, int> window_kernels_;
  std::map<OpId, int> host_kernels_;
  std::map<std::pair<OpId, int32_t>, int> whole_kernels_;
  std::multimap<int, int> wrapped_;  // kernel -> the primitive kernels it runs: the same thread's scratchpad
  // Per partition and tensor: the line buffer's first mapping, for windows read with rotated kernel rows.
  std::map<std::pair<int, TensorId>, std::unique_ptr<RingSpan>> ring_spans_;
  std::map<OpId, std::shared_ptr<const RowConv>> own_convs_;  // convolutions on occam's own row kernel
  std::set<OpId> own_candidates_;
  std::map<OpId, bool> own_chosen_;               // measured: whether the op runs on its own row kernel
  std::map<OpId, std::pair<int64_t, int64_t>> largest_band_;  // per window op: (first, count) of its largest step
  std::map<std::vector<int64_t>, bool> own_faster_;  // measured: per shape and band
  std::vector<Step> steps_;
  std::vector<OperandRef> operand_refs_;
  std::vector<Address> operand_lists_;  // until the program is packed
  std::span<const Address> operands_;    // the operand lists: operand_lists_, then program_'s
  // Compile time only: per step, its partition and schedule entry, and what it reads and writes.
  std::vector<std::pair<int, FusedStep>> sources_;
  std::vector<std::vector<Access>> accesses_;
  // Per step: which thread runs it when its band is shared by the threads, else -1.
  std::vector<int32_t> shares_;
  std::vector<bool> window_steps_;  // per step: its kernel is a oneDNN primitive (one per thread)

  // Threads: each runs its lane (steps in schedule order) after the waits of each step.
  int threads_ = 1;
  int kernel_threads_ = 1;  // threads of each oneDNN primitive
  std::vector<Lane> lanes_;
  Allocation program_;  // the operand lists, the lanes' steps and their waits
  std::vector<uint32_t> kernel_operands_;  // per kernel: how many operands its steps pass
  struct alignas(64) Progress {
    std::atomic<int64_t> done{0};  // steps completed, counted over the images of a run
    double waited_seconds = 0;     // written by its own thread only, read after the run
  };
  std::unique_ptr<Progress[]> progress_;
  std::atomic<bool> abort_{false};

  std::vector<Shape> input_shapes_, output_shapes_;
  std::vector<int64_t> slot_image_floats_;
  std::vector<std::pair<int, int>> passthrough_;  // (input index, output index) of outputs that are inputs
  std::vector<float*> slots_;

  int64_t ring_bytes_ = 0, boundary_bytes_ = 0;
  int primitives_ = 0, reference_primitives_ = 0, line_buffers_ = 0;
  int64_t max_band_rows_ = 1;
  std::string split_summary_;  // each thread's share of the measured kernel time
  int64_t fill_and_drain_steps_ = 0;  // steps share_fill_and_drain() gave to the other thread
  double calibrated_seconds_ = 0;
  bool split_known_ = false;  // the steps' threads are final (calibrate_and_split has run)
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
  threads_ = options.threads > 0 ? options.threads : available_threads();
  // oneDNN fixes a primitive's work split when it is created: every kernel runs on one thread of a
  // pipeline, or on all threads where one thread runs the steps (ThreadSharing::Kernels).
  if (options.sharing == ThreadSharing::Kernels) {
    kernel_threads_ = threads_;
    threads_ = 1;
  }
  set_threads(kernel_threads_);
  conv_groups_.resize(graph.ops.size());
  for (OpId o = 0; o < static_cast<OpId>(graph.ops.size()); ++o) {
    const Op& op = graph.op(o);
    if (op.kind == OpKind::Conv) conv_groups_[static_cast<size_t>(o)] = onednn_groups(op, graph.input_of(op).shape, graph.output_of(op).shape);
  }
  assign_roles(plan);
  choose_row_layouts();
  choose_whole_layouts();
  compile_steps();
  lay_out_memory();
  resolve_operands();
  bind_scratchpads();
  if (threads_ > 1) {
    calibrate_and_split();
    add_pipeline_rows();
    rings_.clear();
    arena_ = Allocation{};  // given back before the larger arena is taken, so the peak is one arena
    lay_out_memory();
    resolve_operands();
    bind_scratchpads();
  }
  compute_waits();
  set_threads(options.threads);
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
  partition_of_ = partition_of_ops(plan, graph_.ops.size());
  boundaries_ = boundary_spans(graph_, partition_of_);
  band_rows_ = step_bands(analysis_, plan, options_.band_bytes, options_.filter_bands != FilterBands::Off);
  max_band_rows_ = *std::max_element(band_rows_.begin(), band_rows_.end());
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    PartitionState state;
    state.first = plan.partitions[p].first_op;
    state.streams_filters = plan.partitions[p].fallback == Fallback::StreamWeights;
    state.last = plan.partitions[p].last_op;
    state.roles = partition_roles(graph_, plan, boundaries_, p);
    const std::span<const int> bands(band_rows_.data() + state.first, static_cast<size_t>(state.last - state.first + 1));
    state.schedule = schedule_span(analysis_, state.first, state.last, bands, state.roles);
    partitions_.push_back(std::move(state));
  }
}

// Rows of a tensor are row-blocked when every op touching it is a convolution run by oneDNN one row
// per step: its producer, and readers with groups 1 and no vertical dilation (whose windows can be
// stacked), so that no host kernel, Load or Store ever sees the layout. Blocked rows are then kept
// only where oneDNN runs every convolution touching them with a JIT kernel for that mix of layouts
// (its reference and GEMM fallbacks are several times slower than either layout).
void FusedProgram::choose_row_layouts() {
  row_blocked_.assign(graph_.tensors.size(), false);
  zero_rows_.assign(graph_.tensors.size(), {});
  if (options_.layout == FusedLayout::Nhwc) return;
  const auto one_row_conv = [&](OpId o) { return graph_.op(o).kind == OpKind::Conv && band_rows_[static_cast<size_t>(o)] == 1; };
  for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
    const Tensor& tensor = graph_.tensor(t);
    if (tensor.producer < 0 || tensor.consumers.empty() || tensor.shape.c % channel_block() != 0) continue;
    if (partitions_[static_cast<size_t>(partition_of_[static_cast<size_t>(tensor.producer)])].roles[static_cast<size_t>(t)] !=
        TensorRole::Ring) {
      continue;
    }
    if (!one_row_conv(tensor.producer)) continue;
    row_blocked_[static_cast<size_t>(t)] = std::all_of(tensor.consumers.begin(), tensor.consumers.end(), [&](OpId c) {
      const Op& op = graph_.op(c);
      return one_row_conv(c) && op.groups == 1 && op.window.dilation_h == 1;
    });
  }
  for (bool changed = true; changed;) {
    changed = false;
    for (OpId o = 0; o < static_cast<OpId>(graph_.ops.size()); ++o) {
      const Op& op = graph_.op(o);
      if (op.kind != OpKind::Conv) continue;
      const auto in = static_cast<size_t>(op.inputs[0]), out = static_cast<size_t>(op.output);
      if ((row_blocked_[in] || row_blocked_[out]) && !runs_jit(o)) {
        row_blocked_[row_blocked_[out] ? out : in] = false;
        changed = true;
      }
    }
  }
  // Windows of stacked rows reach into the padding as rows of zeros in the line buffer, so that
  // every window covers the whole kernel: one stacked copy of the weights (the filters reordered,
  // no larger) and one band shape serve the top edge, the middle and the bottom edge alike.
  for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
    if (!row_blocked_[static_cast<size_t>(t)]) continue;
    const int64_t h = graph_.tensor(t).shape.h;
    ZeroRows& zeros = zero_rows_[static_cast<size_t>(t)];
    for (OpId c : graph_.tensor(t).consumers) {
      const Op& op = graph_.op(c);
      const int64_t bottom = rows::window_rows(op, graph_.output_of(op).shape.h - 1).last;
      zeros.above = std::max<int32_t>(zeros.above, static_cast<int32_t>(op.window.pad_top));
      zeros.below = std::max<int32_t>(zeros.below, static_cast<int32_t>(std::max<int64_t>(0, bottom - (h - 1))));
    }
  }
  for (PartitionState& state : partitions_) {
    bool zeros = false;
    for (OpId o = state.first; o <= state.last; ++o) {
      const ZeroRows& z = zero_rows_[static_cast<size_t>(graph_.op(o).output)];
      zeros = zeros || z.above > 0 || z.below > 0;
    }
    if (!zeros) continue;
    const std::span<const int> bands(band_rows_.data() + state.first, static_cast<size_t>(state.last - state.first + 1));
    state.schedule = schedule_span(analysis_, state.first, state.last, bands, state.roles, zero_rows_);
  }
}

// The most rows a line buffer of tensor `t` can usefully hold: all of them, and its rows of zeros.
int64_t FusedProgram::ring_rows_limit(TensorId t) const {
  const ZeroRows& z = zero_rows_[static_cast<size_t>(t)];
  return graph_.tensor(t).shape.h + z.above + z.below;
}

// Whether oneDNN runs convolution `id` on its middle band of one output row with a JIT kernel.
bool FusedProgram::runs_jit(OpId id) const {
  const Op& op = graph_.op(id);
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const auto [top, bottom] = rows::window_rows(op, out.h / 2);
  const int64_t a = std::max<int64_t>(0, top), b = std::min<int64_t>(in.h - 1, bottom);
  try {
    return std::string_view(band_convolution(id, window_descs(op, b - a + 1, 1, a - top, bottom - b), b - a + 1).impl_info_str())
        .starts_with("jit");
  } catch (const dnnl::error&) {
    return false;
  }
}

// Tensors that whole-tensor steps write and read at once need no rows: they take the reference's
// channel-blocked layout, whose oneDNN kernels run faster than NHWC ones on the same work (resnet18's
// convolutions: 15% with AVX2), and two threads then share an op by output channel blocks, each
// writing a dense part. A tensor is blocked where every op touching it runs whole-tensor steps and
// takes the layout: a convolution (groups 1 or depthwise) or max pool with a JIT kernel for it on
// both sides, an elementwise op of equal shapes on all its operands (layout-blind), or a global
// average pool reading it. A first convolution of a few channels reads the caller's image planar.
void FusedProgram::choose_whole_layouts() {
  whole_layout_.assign(graph_.tensors.size(), WholeLayout::Rows);
  if (options_.layout == FusedLayout::Nhwc) return;
  const auto whole_step = [&](OpId o) {
    return band_rows_[static_cast<size_t>(o)] >= rows::event_count(graph_, graph_.op(o));
  };
  const auto elementwise = [&](const Op& op) {
    const Shape& out = graph_.output_of(op).shape;
    switch (op.kind) {
      case OpKind::Add:
      case OpKind::Sub:
      case OpKind::Mul:
      case OpKind::Activation:
      case OpKind::Identity:
        return std::all_of(op.inputs.begin(), op.inputs.end(), [&](TensorId t) { return graph_.tensor(t).shape == out; });
      default: return false;
    }
  };
  const auto windowed = [&](const Op& op) {
    const Shape& in = graph_.input_of(op).shape;
    const Shape& out = graph_.output_of(op).shape;
    return op.kind == OpKind::MaxPool ||
           (op.kind == OpKind::Conv && (op.groups == 1 || (op.groups == in.c && op.groups == out.c)));
  };
  const auto loaded_for = [&](TensorId t, OpId reader) {
    return partitions_[static_cast<size_t>(partition_of_[static_cast<size_t>(reader)])].roles[static_cast<size_t>(t)] ==
           TensorRole::Loaded;
  };
  for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
    const Tensor& tensor = graph_.tensor(t);
    if (tensor.consumers.empty() || tensor.shape.h * tensor.shape.w == 1) continue;
    const bool readers_whole = std::all_of(tensor.consumers.begin(), tensor.consumers.end(), [&](OpId c) { return whole_step(c); });
    if (!readers_whole) continue;
    if (tensor.producer < 0) {
      // The caller's image, loaded into a line buffer (its NCHW is not NHWC) for first convolutions.
      const bool planar = tensor.shape.c < channel_block() && std::all_of(tensor.consumers.begin(), tensor.consumers.end(), [&](OpId c) {
        return graph_.op(c).kind == OpKind::Conv && graph_.op(c).groups == 1 && loaded_for(t, c);
      });
      if (planar) whole_layout_[static_cast<size_t>(t)] = WholeLayout::Planar;
      continue;
    }
    if (caller_slot(t) >= 0 || tensor.shape.c % channel_block() != 0 || !whole_step(tensor.producer)) continue;
    const Op& producer = graph_.op(tensor.producer);
    // The threads share a convolution by whole channel blocks: 3 blocks (mobilenet_v2's 24 channels)
    // would leave one thread idle a third of the time, where rows split evenly.
    const int64_t blocks = tensor.shape.c / channel_block();
    const int64_t most = (blocks + threads_ - 1) / threads_;
    if (windowed(producer) && static_cast<double>(most * threads_) > kChannelImbalance * static_cast<double>(blocks)) continue;
    const bool takes = (windowed(producer) || elementwise(producer)) &&
                       std::all_of(tensor.consumers.begin(), tensor.consumers.end(), [&](OpId c) {
                         const Op& op = graph_.op(c);
                         return windowed(op) || elementwise(op) || op.kind == OpKind::GlobalAvgPool;
                       });
    if (takes) whole_layout_[static_cast<size_t>(t)] = WholeLayout::Blocked;
  }
  // An op whose operands disagree puts them back into rows, until every op agrees with its operands.
  const auto layout = [&](TensorId t) { return whole_layout_[static_cast<size_t>(t)]; };
  for (bool changed = true; changed;) {
    changed = false;
    for (OpId o = 0; o < static_cast<OpId>(graph_.ops.size()); ++o) {
      const Op& op = graph_.op(o);
      std::vector<TensorId> operands(op.inputs.begin(), op.inputs.end());
      operands.push_back(op.output);
      bool agree = true;
      if (elementwise(op)) {
        agree = std::all_of(operands.begin(), operands.end(), [&](TensorId t) { return layout(t) == layout(op.output); });
      } else if (windowed(op)) {
        const WholeLayout in = layout(op.inputs[0]), out = layout(op.output);
        agree = (in == WholeLayout::Rows && out == WholeLayout::Rows) ||
                ((in == out || (in == WholeLayout::Planar && out == WholeLayout::Blocked)) && whole_runs_jit(o, in, out));
      } else if (op.kind != OpKind::GlobalAvgPool) {
        agree = std::all_of(operands.begin(), operands.end(), [&](TensorId t) { return layout(t) == WholeLayout::Rows; });
      }
      if (agree) continue;
      for (TensorId t : operands) {
        changed = changed || layout(t) != WholeLayout::Rows;
        whole_layout_[static_cast<size_t>(t)] = WholeLayout::Rows;
      }
    }
  }
}

// Whether oneDNN runs a whole-tensor convolution or max pool with these layouts with a JIT kernel.
bool FusedProgram::whole_runs_jit(OpId id, WholeLayout in, WholeLayout out) const {
  if (out != WholeLayout::Blocked) return false;
  const Op& op = graph_.op(id);
  try {
    const WholePrimitive primitive = whole_primitive(op, whole_descs(op, in, 0, graph_.output_of(op).shape.c), {});
    return std::string_view(primitive.pd().impl_info_str()).starts_with("jit");
  } catch (const dnnl::error&) {
    return false;
  }
}

// A whole-tensor convolution or max pool on output channels [first_channel, + channels): the input
// is every channel (a dense convolution) or the same channels (depthwise, pooling), each a dense
// tensor at an offset of the whole image, since channel blocks (and planar channels) lie one after
// another; the weights and bias are those of the channels.
FusedProgram::WholeDescs FusedProgram::whole_descs(const Op& op, WholeLayout in, int64_t first_channel, int64_t channels) const {
  const Shape& is = graph_.input_of(op).shape;
  const Shape& os = graph_.output_of(op).shape;
  const bool per_channel = op.kind == OpKind::MaxPool || op.groups > 1;
  const Tag src_tag = in == WholeLayout::Planar ? Tag::nchw : blocked_tag();
  WholeDescs d;
  d.src = memory::desc({1, per_channel ? channels : is.c, is.h, is.w}, DataType::f32, src_tag);
  d.dst = memory::desc({1, channels, os.h, os.w}, DataType::f32, blocked_tag());
  d.src_offset = per_channel ? first_channel * is.h * is.w : 0;
  d.dst_offset = first_channel * os.h * os.w;
  if (op.kind == OpKind::Conv) {
    const Window& win = op.window;
    d.weights = op.groups > 1 ? memory::desc({channels, 1, 1, win.kernel_h, win.kernel_w}, DataType::f32, Tag::any)
                              : memory::desc({channels, is.c, win.kernel_h, win.kernel_w}, DataType::f32, Tag::any);
    d.weight_offset = first_channel * (op.groups > 1 ? 1 : is.c) * win.kernel_h * win.kernel_w;
    d.bias = memory::desc({channels}, DataType::f32, Tag::x);
    d.bias_offset = first_channel;
  }
  return d;
}

// Output channels [first, first + count) of thread share `share` of an op whose whole-tensor step
// the threads share (-1: not shared), in whole channel blocks.
std::pair<int64_t, int64_t> FusedProgram::channel_share(const Op& op, int32_t share) const {
  const int64_t channels = graph_.output_of(op).shape.c;
  if (share < 0) return {0, channels};
  const int64_t blocks = channels / channel_block();
  const int64_t shares = std::min<int64_t>(threads_, blocks);
  const int64_t first = blocks * share / shares, last = blocks * (share + 1) / shares;
  return {first * channel_block(), (last - first) * channel_block()};
}

// The oneDNN descriptor of a whole-tensor convolution or max pool on the descriptors `d`.
FusedProgram::WholePrimitive FusedProgram::whole_primitive(const Op& op, const WholeDescs& d, const dnnl::post_ops& ops) const {
  const Shape& is = graph_.input_of(op).shape;
  const Shape& os = graph_.output_of(op).shape;
  const Window& win = op.window;
  const memory::dims strides{win.stride_h, win.stride_w}, dilates{win.dilation_h - 1, win.dilation_w - 1};
  const memory::dims pad_l{win.pad_top, win.pad_left};
  const memory::dims pad_r = pad_end_dims(win, is, os);
  WholePrimitive primitive;
  if (op.kind == OpKind::Conv) {
    primitive.conv.emplace(dnnl::convolution_forward::desc(kInference, algorithm::convolution_direct, d.src, d.weights, d.bias,
                                                           d.dst, strides, dilates, pad_l, pad_r),
                           user_scratchpad(ops), cpu_engine());
  } else {
    primitive.pool.emplace(dnnl::pooling_v2_forward::desc(kInference, algorithm::pooling_max, d.src, d.dst, strides,
                                                          {win.kernel_h, win.kernel_w}, dilates, pad_l, pad_r),
                           user_scratchpad(ops), cpu_engine());
  }
  return primitive;
}

// A whole-tensor convolution or max pool on its channel share, its operands as its tensors' images.
int FusedProgram::whole_kernel(OpId id, int32_t share) {
  if (const auto found = whole_kernels_.find({id, share}); found != whole_kernels_.end()) return found->second;
  const Op& op = graph_.op(id);
  const auto [first, channels] = channel_share(op, share);
  const WholeDescs d = whole_descs(op, whole_layout_[static_cast<size_t>(op.inputs[0])], first, channels);
  const std::string channel_range = fmt::format(" (output channels {}..{})", first, first + channels - 1);
  int kernel = -1;
  try {
    dnnl::post_ops ops;
    append_activation(ops, op.activation);
    const WholePrimitive primitive = whole_primitive(op, d, ops);
    if (primitive.conv) {
      const dnnl::convolution_forward::primitive_desc& pd = *primitive.conv;
      const memory::desc user(d.weights.dims(), DataType::f32, op.groups > 1 ? Tag::goihw : Tag::oihw);
      std::unordered_map<int, memory> fixed;
      fixed[DNNL_ARG_WEIGHTS] = weights(id, user, op.weight->data() + d.weight_offset, pd.weights_desc(), op.name + " weights" + channel_range);
      const std::vector<float> no_bias(static_cast<size_t>(channels), 0.0f);
      fixed[DNNL_ARG_BIAS] = weights(id, d.bias, op.bias ? op.bias->data() + d.bias_offset : no_bias.data(), pd.bias_desc(),
                                     op.name + " bias" + channel_range);
      kernel = primitive_kernel(op.name, dnnl::convolution_forward(pd), pd, d.src, d.dst, std::move(fixed));
    } else {
      kernel = primitive_kernel(op.name, dnnl::pooling_v2_forward(*primitive.pool), *primitive.pool, d.src, d.dst, {});
    }
  } catch (const dnnl::error& e) {
    fail_op(op, fmt::format("oneDNN cannot run it on whole channel-blocked tensors ({})", e.what()));
  }
  if (d.src_offset != 0 || d.dst_offset != 0) kernel = offset_kernel(kernel, d.src_offset, d.dst_offset);
  whole_kernels_.emplace(std::pair{id, share}, kernel);
  return kernel;
}

// Runs `inner` (operands: source, destination) at fixed float offsets into its operands.
int FusedProgram::offset_kernel(int inner, int64_t src_offset, int64_t dst_offset) {
  const int outer = add_kernel([this, inner, src_offset, dst_offset](int64_t first, int64_t count, float* const* p) {
    float* const shifted[2] = {p[0] + src_offset, p[1] + dst_offset};
    kernels_[static_cast<size_t>(inner)](first, count, shifted);
  });
  wrapped_.emplace(outer, inner);
  return outer;
}

// One arena for everything that streams or crosses a boundary: a block of line buffers per
// partition (alive while it runs) and each boundary tensor (alive from its producer's partition to
// its last reader's), placed by lifetime as the reference executor places its tensors. Called again
// when the line buffers grow for threads.
void FusedProgram::lay_out_memory() {
  const int64_t page = page_bytes();
  const auto round = [&](int64_t bytes) { return (bytes + page - 1) / page * page; };
  ring_bytes_ = boundary_bytes_ = 0;
  line_buffers_ = 0;
  std::vector<Lifetime> lifetimes;
  std::vector<ArenaLayout> packed;
  for (size_t p = 0; p < partitions_.size(); ++p) {
    PartitionState& state = partitions_[p];
    packed.push_back(pack_rings(p));
    const int64_t rings = packed.back().bytes;
    if (state.block == 0) {
      // The first layout, before any pipeline rows: the block is fixed here, reserve included.
      state.reserve = threads_ > 1 ? round(static_cast<int64_t>(options_.pipeline_share * static_cast<double>(rings))) : 0;
      if (threads_ == 2) state.reserve = std::max(state.reserve, round(straddle_reserve(state)));
      state.block = rings + state.reserve;
    }
    if (rings > state.block) fail("{}: partition {}'s line buffers outgrew their block ({} > {} bytes)", source_, p, rings, state.block);
    lifetimes.push_back({state.block, static_cast<int>(p), static_cast<int>(p)});
    ring_bytes_ = std::max(ring_bytes_, state.block);
  }
  std::vector<TensorId> boundaries;
  for (TensorId t = 0; t < static_cast<TensorId>(graph_.tensors.size()); ++t) {
    const BoundarySpan& b = boundaries_[static_cast<size_t>(t)];
    if (b.first < 0) continue;
    boundaries.push_back(t);
    lifetimes.push_back({round(analysis_.tensor_bytes(t)), b.first, b.last});
  }
  for (size_t p = 0; p < partitions_.size(); ++p) {
    boundary_bytes_ = std::max(boundary_bytes_, live_boundary_bytes(analysis_, boundaries_, static_cast<int>(p)));
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
    // A line buffer of one row of whole pages is never read past its end, so where it shares bytes
    // with another (share_idle_line_buffers) it also shares that one's addresses: to a cache tagged
    // by virtual address (valgrind's) the bytes are then one memory, as they are to the CPU.
    std::vector<size_t> largest_first(state.schedule.rings.size());
    std::iota(largest_first.begin(), largest_first.end(), size_t{0});
    std::stable_sort(largest_first.begin(), largest_first.end(), [&](size_t a, size_t c) {
      return state.schedule.rings[a].rows * state.schedule.rings[a].row_bytes > state.schedule.rings[c].rows * state.schedule.rings[c].row_bytes;
    });
    std::map<int64_t, std::pair<char*, int64_t>> mapped;  // file offset -> (address, bytes) of its first mapping
    for (size_t k : largest_first) {
      const LineBuffer& b = state.schedule.rings[k];
      const int64_t size = round(b.rows * b.row_bytes);
      const int64_t offset = layout.offsets[p] + packed[p].offsets[k];
      Place& place = state.places[static_cast<size_t>(b.tensor)];
      const auto same = mapped.find(offset);
      if (b.rows == 1 && b.row_bytes == size && same != mapped.end() && same->second.second >= size) {
        place.base = same->second.first;
      } else {
        rings_.emplace_back(arena_.file(), offset, size);
        place.base = rings_.back().data();
        mapped.try_emplace(offset, place.base, size);
      }
      place.ring_bytes = size;
      place.block_offset = packed[p].offsets[k];
      if (const auto span = ring_spans_.find({static_cast<int>(p), b.tensor}); span != ring_spans_.end()) {
        *span->second = {place.base, place.ring_bytes};
      }
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

// A partition's line buffers placed in its block by lifetime (SpanSchedule::packed_rings), in whole
// pages since each is mapped twice. compute_waits() orders the threads' use of shared bytes.
ArenaLayout FusedProgram::pack_rings(size_t partition) const {
  return partitions_[partition].schedule.packed_rings(graph_, page_bytes(), share_classes(partition));
}

// Per tensor, for FusedOptions::share_idle_line_buffers: the thread that runs every step touching
// its line buffer in partition `partition`, or -1 where several do, where the buffer holds rows of
// zeros (written by steps the schedule does not list) or is not a plain ring. Empty before the
// threads' split is known.
std::vector<int> FusedProgram::share_classes(size_t partition) const {
  if (!options_.share_idle_line_buffers || (threads_ > 1 && !split_known_)) return {};
  const PartitionState& state = partitions_[partition];
  std::vector<int> classes(graph_.tensors.size(), -1);
  std::vector<bool> several(graph_.tensors.size(), false);
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (sources_[i].first != static_cast<int>(partition)) continue;
    for (const Access& a : accesses_[i]) {
      const auto t = static_cast<size_t>(a.tensor);
      if (classes[t] >= 0 && classes[t] != steps_[i].thread) several[t] = true;
      classes[t] = steps_[i].thread;
    }
  }
  for (size_t t = 0; t < classes.size(); ++t) {
    const ZeroRows& zeros = zero_rows_[t];
    if (several[t] || state.roles[t] != TensorRole::Ring || zeros.above > 0 || zeros.below > 0) classes[t] = -1;
  }
  return classes;
}

Address FusedProgram::address(const OperandRef& ref) const {
  const TensorId t = ref.tensor;
  const int64_t row = ref.row;
  const Place& place = partitions_[static_cast<size_t>(ref.partition)].places[static_cast<size_t>(t)];
  if (row == kWholeImage) return Address::in_slot(place.slot, 0);
  const int64_t row_bytes = row_floats(graph_.tensor(t).shape) * static_cast<int64_t>(sizeof(float));
  if (place.role == TensorRole::Whole) {
    if (place.slot >= 0) return Address::in_slot(place.slot, row * row_bytes / static_cast<int64_t>(sizeof(float)));
    return Address::at(reinterpret_cast<float*>(place.base + row * row_bytes));
  }
  const int64_t offset = (row * row_bytes) % place.ring_bytes;  // rows of zeros above the tensor: row < 0
  return Address::at(reinterpret_cast<float*>(place.base + (offset < 0 ? offset + place.ring_bytes : offset)));
}

int FusedProgram::add_kernel(Kernel kernel) {
  kernels_.push_back(std::move(kernel));
  return static_cast<int>(kernels_.size() - 1);
}

// Parameters a host kernel reads while it runs are copied: the graph (and its weights) may be gone
// by then, as in a pipeline rank that keeps only its executor.
const float* FusedProgram::owned_copy(const std::vector<float>& values, const std::string& what) {
  Allocation storage =
      account_.allocate(static_cast<int64_t>(values.size() * sizeof(float)), MemoryUse::Weights, what);
  std::copy(values.begin(), values.end(), storage.floats());
  const float* copy = storage.floats();
  weight_storage_.push_back(std::move(storage));
  return copy;
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
  call->kernel = static_cast<int>(kernels_.size());
  calls_.push_back(call);
  return add_kernel([call = call.get(), source = source_](int64_t, int64_t, float* const* operands) {
    dnnl_memory_set_data_handle(call->src, operands[0]);
    dnnl_memory_set_data_handle(call->dst, operands[1]);
    const dnnl_status_t status = dnnl_primitive_execute(call->primitive.get(), thread_stream(),
                                                        static_cast<int>(call->args.size()), call->args.data());
    if (status != dnnl_success) fail("{}: oneDNN failed to execute \"{}\" (status {})", source, call->op, static_cast<int>(status));
  });
}

// Runs `inner` (which writes one blocked output row) into a row buffer of its own, then reorders
// that row into the NHWC output row. Operands: as `inner`'s.
int FusedProgram::converting_kernel(const Op& op, int32_t share, int inner, const memory::desc& blocked, const memory::desc& rows) {
  auto found = blocked_rows_.find({op.output, share});
  if (found == blocked_rows_.end()) {
    found = blocked_rows_.emplace(std::pair{op.output, share}, account_.allocate(static_cast<int64_t>(blocked.get_size()), MemoryUse::Scratchpad,
                                                               op.name + " blocked output row")).first;
  }
  float* row = found->second.floats();
  auto call = std::make_shared<PrimitiveCall>();
  memory from(blocked, cpu_engine(), row);
  memory to(rows, cpu_engine(), DNNL_MEMORY_NONE);
  call->primitive = dnnl::reorder(from, to);
  call->memories = {from, to};
  call->args = {{DNNL_ARG_FROM, from.get()}, {DNNL_ARG_TO, to.get()}};
  call->dst = to.get();
  call->op = op.name;
  call->kernel = static_cast<int>(kernels_.size());
  calls_.push_back(call);
  const int outer = add_kernel([this, inner, row, call = call.get()](int64_t first, int64_t count, float* const* operands) {
    float* const into_row[2] = {operands[0], row};
    kernels_[static_cast<size_t>(inner)](first, count, into_row);
    dnnl_memory_set_data_handle(call->dst, operands[1]);
    const dnnl_status_t status = dnnl_primitive_execute(call->primitive.get(), thread_stream(), 2, call->args.data());
    if (status != dnnl_success) fail("{}: oneDNN failed to reorder the output row of \"{}\" (status {})", source_, call->op, static_cast<int>(status));
  });
  wrapped_.emplace(outer, inner);
  return outer;
}

// One scratchpad per thread that runs primitives needing one, shared by that thread's primitives.
void FusedProgram::bind_scratchpads() {
  if (scratchpad_bytes_ == 0) return;
  std::vector<bool> needed(static_cast<size_t>(threads_), false);
  std::vector<int> thread_of_kernel(kernels_.size(), 0);
  for (const Step& step : steps_) thread_of_kernel[static_cast<size_t>(step.kernel)] = step.thread;
  for (auto wrap = wrapped_.rbegin(); wrap != wrapped_.rend(); ++wrap) {  // outer kernels come after their inner ones
    thread_of_kernel[static_cast<size_t>(wrap->second)] = thread_of_kernel[static_cast<size_t>(wrap->first)];
  }
  for (const auto& call : calls_) {
    if (call->scratchpad != nullptr) needed[static_cast<size_t>(thread_of_kernel[static_cast<size_t>(call->kernel)])] = true;
  }
  scratchpads_.resize(static_cast<size_t>(threads_));
  for (size_t t = 0; t < needed.size(); ++t) {
    if (needed[t] && scratchpads_[t].data() == nullptr) {
      scratchpads_[t] = account_.allocate(scratchpad_bytes_, MemoryUse::Scratchpad, fmt::format("{} scratchpad {}", source_, t));
    }
  }
  for (const auto& call : calls_) {
    if (call->scratchpad == nullptr) continue;
    const auto t = static_cast<size_t>(thread_of_kernel[static_cast<size_t>(call->kernel)]);
    dnnl_memory_set_data_handle(call->scratchpad, scratchpads_[t].data());
  }
}

// The input rows a band of output rows [first, first + count) of window op `op` reads, clipped to
// the tensor and its rows of zeros; the clipped part is padding.
FusedProgram::BandInput FusedProgram::band_input(const Op& op, int64_t first, int64_t count) const {
  const int64_t h = graph_.input_of(op).shape.h;
  const int64_t top = rows::window_rows(op, first).first, bottom = rows::window_rows(op, first + count - 1).last;
  const ZeroRows& zeros = zero_rows_[static_cast<size_t>(op.inputs[0])];
  const int64_t a = std::max<int64_t>(-zeros.above, top), b = std::min<int64_t>(h - 1 + zeros.below, bottom);
  if (b < a) fail_op(op, fmt::format("output rows {}..{} see no input row", first, first + count - 1));
  return {a, b - a + 1, a - top, bottom - b};
}

// The input rows a band of `count` output rows of convolution `id` describes to oneDNN: the rows it
// reads, except that a 1x1 convolution of vertical stride s > 1 wants s input rows per output row,
// the only shape oneDNN's 1x1 kernel takes (with the rows it reads, (count - 1) * s + 1, a direct
// kernel runs it: 1.8x slower on a 56-pixel row of resnext50's 256 to 512 channels, 3.2x on its
// 14x14 layer of 1024 to 2048 as one band). The rows past the last one read are never read
// (checked with NaNs there) but must be memory: rows of a tensor held whole, or one row past a
// window of a line buffer of whole pages of rows — each window then starts at a row of the first
// mapping, so the second mapping holds a row more than the buffer's.
int64_t FusedProgram::described_rows(OpId id, const BandInput& band, int64_t count) const {
  const Op& op = graph_.op(id);
  const Window& win = op.window;
  const bool strided_pointwise = op.kind == OpKind::Conv && win.kernel_h == 1 && win.kernel_w == 1 && win.stride_h > 1 &&
                                 band.pad_t == 0 && band.pad_b == 0 && !row_blocked_[static_cast<size_t>(op.inputs[0])];
  const int64_t rows = count * win.stride_h;
  if (!strided_pointwise || rows <= band.rows) return band.rows;
  const TensorId t = op.inputs[0];
  const Shape& in = graph_.tensor(t).shape;
  const PartitionState& state = partitions_[static_cast<size_t>(partition_of_[static_cast<size_t>(id)])];
  if (state.roles[static_cast<size_t>(t)] == TensorRole::Whole) return band.first_row + rows <= in.h ? rows : band.rows;
  const int64_t row_bytes = row_floats(in) * static_cast<int64_t>(sizeof(float));
  return rows == band.rows + 1 && row_bytes % page_bytes() == 0 ? rows : band.rows;
}

// The weights of convolution `op` on a band of `in_rows` input rows: stacked, the kernel rows the
// window covers run along the input channels of a 1 x kernel_w kernel.
memory::dims FusedProgram::band_weight_dims(OpId id, int64_t in_rows) const {
  const Op& op = graph_.op(id);
  const int64_t in_c = graph_.input_of(op).shape.c, out_c = graph_.output_of(op).shape.c;
  const bool stacked = row_blocked_[static_cast<size_t>(op.inputs[0])];  // groups 1 only
  const int64_t kh = stacked ? 1 : op.window.kernel_h, cin = stacked ? in_rows * in_c : in_c;
  return conv_weight_dims(conv_groups_[static_cast<size_t>(id)], cin, out_c, kh, op.window.kernel_w);
}

dnnl::convolution_forward::primitive_desc FusedProgram::band_convolution(OpId id, const Descs& d, int64_t in_rows) const {
  const Op& op = graph_.op(id);
  const memory::desc weights(band_weight_dims(id, in_rows), DataType::f32, Tag::any);
  const memory::desc bias({graph_.output_of(op).shape.c}, DataType::f32, Tag::x);
  dnnl::post_ops ops;
  append_activation(ops, op.activation);
  const auto desc =
      op.bias ? dnnl::convolution_forward::desc(kInference, algorithm::convolution_direct, d.src, weights, bias, d.dst, d.strides,
                                                d.dilates, d.pad_l, d.pad_rb)
              : dnnl::convolution_forward::desc(kInference, algorithm::convolution_direct, d.src, weights, d.dst, d.strides, d.dilates,
                                                d.pad_l, d.pad_rb);
  return {desc, user_scratchpad(ops), cpu_engine()};
}

// The oneDNN descriptors of a window op on a band of `in_rows` input rows (`pad_t` and `pad_b` rows
// of padding beyond them) giving `count` output rows. NHWC rows make a band one nhwc tensor.
// Row-blocked rows (each row nChw8c or nChw16c on its own) make one row a blocked tensor of height 1,
// and a window of K rows a blocked tensor of height 1 with K x C channels: a KxK convolution on it is
// a 1xK convolution with the kernel rows stacked along the input channels.
FusedProgram::Descs FusedProgram::window_descs(const Op& op, int64_t in_rows, int64_t count, int64_t pad_t, int64_t pad_b) const {
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const Window& win = op.window;
  const bool stacked = row_blocked_[static_cast<size_t>(op.inputs[0])];
  const int64_t pad_r = effective_pad_end(in.w, win.pad_left, win.pad_right, win.extent_w(), win.stride_w, out.w);
  Descs d;
  // A stacked window gives one output row, blocked: the JIT kernels want both sides in one layout.
  // Where the output rows are NHWC, the kernel converts its row (Descs::rows).
  const bool blocked_dst = row_blocked_[static_cast<size_t>(op.output)] || stacked;
  d.rows = memory::desc({1, out.c, count, out.w}, DataType::f32, Tag::nhwc);
  d.dst = blocked_dst ? memory::desc({1, out.c, 1, out.w}, DataType::f32, blocked_tag()) : d.rows;
  // One channel is both layouts; the JIT kernels take it as planar (nchw) input to blocked output.
  d.src = stacked ? memory::desc({1, in_rows * in.c, 1, in.w}, DataType::f32, blocked_tag())
                  : memory::desc({1, in.c, in_rows, in.w}, DataType::f32, in.c == 1 && blocked_dst ? Tag::nchw : Tag::nhwc);
  d.strides = {stacked ? 1 : win.stride_h, win.stride_w};
  d.dilates = {stacked ? 0 : win.dilation_h - 1, win.dilation_w - 1};
  d.pad_l = {stacked ? 0 : pad_t, win.pad_left};
  d.pad_rb = {stacked ? 0 : pad_b, pad_r};
  return d;
}

// Where each output row of a band of `count` rows (stride 1) finds its input rows (`in_rows` from
// the band's first, `pad_t` rows of padding above it) and which kernel rows those are.
OwnBand own_band(const Op& op, int64_t in_rows, int64_t count, int64_t pad_t, int64_t in_row_floats, int64_t out_row_floats) {
  OwnBand band;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t top = j - pad_t;  // output row j's first kernel row, from the band's first input row
    const int64_t begin = std::max<int64_t>(0, -top), end = std::clamp<int64_t>(in_rows - top, begin, op.window.kernel_h);
    band.rows.push_back({std::max<int64_t>(top, 0) * in_row_floats, j * out_row_floats, begin, end});
  }
  return band;
}

void run_own_band(const RowConv& conv, const OwnBand& band, const float* src, float* dst) {
  for (const OwnBand::Row& row : band.rows) conv.run(src + row.src_offset, dst + row.dst_offset, row.kernel_begin, row.kernel_end);
}

// A band of convolution `id` on occam's own micro-kernel (RowConv), or -1 where the options or the
// shape leave it to oneDNN, or where they ask to measure and oneDNN runs the op's largest band (the
// steps it spends most of its time in) faster: one choice per op, so that its weights are kept
// once. The band's rows: a stacked window of row-blocked rows, or NHWC rows (d).
int FusedProgram::own_row_kernel(OpId id, const Descs& d, int64_t in_rows, int64_t count, int64_t pad_t) {
  const Op& op = graph_.op(id);
  const std::optional<RowConvShape> shape = own_row_shape(op, d, in_rows, count);
  if (!shape) return -1;
  own_candidates_.insert(id);
  if (options_.row_kernels == RowKernels::OneDnn) return -1;
  const bool stacked = row_blocked_[static_cast<size_t>(op.inputs[0])];
  const int64_t in_row_floats = shape->in_c * shape->in_w, out_row_floats = shape->out_c * shape->out_w;
  if (options_.row_kernels == RowKernels::Measure) {
    auto chosen = own_chosen_.find(id);
    if (chosen == own_chosen_.end()) {
      // The op's largest band, as its steps give it: that one measured is the op's choice.
      const auto [first, largest] = largest_band_.at(id);
      const BandInput input = band_input(op, first, largest);
      const Descs large = window_descs(op, input.rows, largest, input.pad_t, input.pad_b);
      const std::optional<RowConvShape> large_shape = own_row_shape(op, large, input.rows, largest);
      const bool own = large_shape && own_band_faster(*large_shape, own_band(op, input.rows, largest, stacked ? 0 : input.pad_t, in_row_floats, out_row_floats),
                                                      band_convolution(id, large, input.rows));
      chosen = own_chosen_.emplace(id, own).first;
    }
    if (!chosen->second) return -1;
  }
  auto found = own_convs_.find(id);
  if (found == own_convs_.end()) {
    Allocation packed = account_.allocate(RowConv::packed_floats(*shape) * static_cast<int64_t>(sizeof(float)), MemoryUse::Weights,
                                          op.name + " weights (own row kernel)");
    auto conv = std::make_shared<const RowConv>(*shape, op.weight->data(), op.bias ? op.bias->data() : nullptr, packed.floats());
    weight_storage_.push_back(std::move(packed));
    found = own_convs_.emplace(id, std::move(conv)).first;
  }
  const OwnBand band = own_band(op, in_rows, count, stacked ? 0 : pad_t, in_row_floats, out_row_floats);
  return add_kernel([conv = found->second, band](int64_t, int64_t, float* const* operands) { run_own_band(*conv, band, operands[0], operands[1]); });
}

// The own kernel's view of convolution `op` on a band (descriptors d), if its micro-kernel covers it.
std::optional<RowConvShape> FusedProgram::own_row_shape(const Op& op, const Descs& d, int64_t in_rows, int64_t count) const {
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const Window& win = op.window;
  const bool stacked = row_blocked_[static_cast<size_t>(op.inputs[0])];
  const int64_t out_block = d.dst == d.rows ? out.c : channel_block();
  const RowConvShape shape{in.c, out.c, in.w, out.w, win.kernel_h, win.kernel_w, win.pad_left, stacked ? channel_block() : in.c,
                           out_block, op.activation};
  if (op.groups != 1 || win.stride_h != 1 || win.stride_w != 1 || win.dilation_w != 1 || win.dilation_h != 1 ||
      (stacked && (count != 1 || in_rows != win.kernel_h)) || (out_block != out.c && count != 1) || !row_conv_supported(shape)) {
    return std::nullopt;
  }
  return shape;
}

// Times a band on both kernels, alternating, on rows and weights of zeros; once per shape and band.
bool FusedProgram::own_band_faster(const RowConvShape& shape, const OwnBand& band, const dnnl::convolution_forward::primitive_desc& pd) {
  std::vector<int64_t> key = {shape.in_c,     shape.out_c,    shape.in_w, shape.out_w, shape.kernel_h, shape.kernel_w, shape.pad_left,
                              shape.in_block, shape.out_block, static_cast<int64_t>(shape.activation.kind)};
  for (const OwnBand::Row& row : band.rows) key.insert(key.end(), {row.src_offset, row.kernel_begin, row.kernel_end});
  if (const auto known = own_faster_.find(key); known != own_faster_.end()) return known->second;
  // Buffers aligned as the executor's are (split cache-line loads of misaligned weights made the
  // own kernel measure 30% slower than it runs).
  const auto zeros = [](int64_t bytes) {
    const auto size = static_cast<size_t>((bytes + 63) / 64 * 64 + 64);
    std::unique_ptr<float[], decltype(&std::free)> buffer(static_cast<float*>(std::aligned_alloc(64, size)), &std::free);
    if (!buffer) throw std::bad_alloc();
    std::memset(buffer.get(), 0, size);
    return buffer;
  };
  const auto bytes = [](const memory::desc& md) { return static_cast<int64_t>(md.get_size()); };
  const auto rows = zeros(bytes(pd.src_desc())), row = zeros(bytes(pd.dst_desc())), filters = zeros(bytes(pd.weights_desc()));
  const auto bias = zeros(bytes(pd.bias_desc())), scratch = zeros(bytes(pd.scratchpad_desc()));
  const auto packed = zeros(RowConv::packed_floats(shape) * static_cast<int64_t>(sizeof(float)));
  const auto plain_filters = zeros(shape.out_c * shape.in_c * shape.kernel_h * shape.kernel_w * static_cast<int64_t>(sizeof(float)));
  const RowConv own(shape, plain_filters.get(), nullptr, packed.get());
  const dnnl::convolution_forward onednn(pd);
  const std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, memory(pd.src_desc(), cpu_engine(), rows.get())},
      {DNNL_ARG_DST, memory(pd.dst_desc(), cpu_engine(), row.get())},
      {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), cpu_engine(), filters.get())},
      {DNNL_ARG_BIAS, memory(pd.bias_desc(), cpu_engine(), bias.get())},
      {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), cpu_engine(), scratch.get())}};
  // Enough repetitions for a round of about 2 ms whatever the band's size.
  const double flops = 2.0 * static_cast<double>(band.rows.size()) *
                       static_cast<double>(shape.out_c * shape.out_w * shape.in_c * shape.kernel_h * shape.kernel_w);
  const int repeats = static_cast<int>(std::clamp(1e8 / flops, 1.0, 1000.0));
  const auto seconds = [&](const auto& body) {
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r) body();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const auto run_own = [&] { run_own_band(own, band, rows.get(), row.get()); };
  const auto run_onednn = [&] {
    onednn.execute(stream_, args);
    stream_.wait();
  };
  double own_best = std::numeric_limits<double>::infinity(), onednn_best = own_best;
  for (int round = 0; round < 8; ++round) {  // minima: the first round warms caches and code, a busy machine slows some
    own_best = std::min(own_best, seconds(run_own));
    onednn_best = std::min(onednn_best, seconds(run_onednn));
  }
  return own_faster_.emplace(std::move(key), own_best < onednn_best).first->second;
}

// Convolution and pooling on a band of output rows [first, first + count): the input rows it
// needs, clipped to the tensor and its rows of zeros, with the clipped part as padding, so that the
// top edge, the middle and the bottom edge are up to three band shapes (plus a shorter last band).
// Writes the first input row to *src_row.
int FusedProgram::window_kernel(OpId id, int64_t first, int64_t count, int32_t share, int64_t* src_row) {
  const Op& op = graph_.op(id);
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  Window win = op.window;
  const BandInput band = band_input(op, first, count);
  *src_row = band.first_row;
  const int64_t pad_t = band.pad_t, pad_b = band.pad_b, in_rows = described_rows(id, band, count);
  const auto key = std::make_tuple(id, in_rows, count, pad_t, pad_b, share);
  if (const auto found = window_kernels_.find(key); found != window_kernels_.end()) return found->second;

  const bool stacked = row_blocked_[static_cast<size_t>(op.inputs[0])];
  int kernel = -1;
  try {
    const Descs d = window_descs(op, in_rows, count, pad_t, pad_b);
    const memory::desc &src = d.src, &dst = d.dst;
    const memory::dims &strides = d.strides, &dilates = d.dilates, &pad_l = d.pad_l, &pad_rb = d.pad_rb;
    if (op.kind == OpKind::Conv) {
      kernel = own_row_kernel(id, d, in_rows, count, pad_t);
      if (kernel < 0) {
        const dnnl::convolution_forward::primitive_desc pd = band_convolution(id, d, in_rows);
        const memory::dims weight_dims = band_weight_dims(id, in_rows);
        const ConvGroups& groups = conv_groups_[static_cast<size_t>(id)];
        const memory::desc weight_user(weight_dims, DataType::f32, groups.groups > 1 ? Tag::goihw : Tag::oihw);
        std::vector<float> arranged = merged_group_weights(op, groups, in.c, out.c);  // empty: the graph's own
        std::string weight_name = op.name + " weights";
        if (stacked) {
          const int64_t cin = weight_dims[1];
          arranged.resize(static_cast<size_t>(out.c * cin * win.kernel_w));
          const float* w = op.weight->data();
          for (int64_t o = 0; o < out.c; ++o) {
            for (int64_t j = 0; j < in_rows; ++j) {
              for (int64_t c = 0; c < in.c; ++c) {
                for (int64_t x = 0; x < win.kernel_w; ++x) {
                  arranged[static_cast<size_t>(((o * cin) + j * in.c + c) * win.kernel_w + x)] =
                      w[((o * in.c + c) * win.kernel_h + pad_t + j) * win.kernel_w + x];
                }
              }
            }
          }
          weight_name += fmt::format(" (kernel rows {}..{} stacked)", pad_t, pad_t + in_rows - 1);
        }
        kernel = convolution_kernel(id, pd, weight_user, arranged.empty() ? op.weight->data() : arranged.data(), weight_name, src, dst);
        if (rotates_wrapping_windows(id, d, count)) kernel = rotating_kernel(id, kernel, in_rows, pad_t);
      }
      if (dst != d.rows && !row_blocked_[static_cast<size_t>(op.output)]) kernel = converting_kernel(op, share, kernel, dst, d.rows);
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

// Convolution primitive `pd` of op `id` as a kernel, with the weights `data` (laid out as `user`,
// reordered once per layout and `name`) and the op's bias. Operands: src, dst.
int FusedProgram::convolution_kernel(OpId id, const dnnl::convolution_forward::primitive_desc& pd, const memory::desc& user,
                                     const float* data, const std::string& name, const memory::desc& src, const memory::desc& dst) {
  const Op& op = graph_.op(id);
  std::unordered_map<int, memory> fixed;
  fixed[DNNL_ARG_WEIGHTS] = weights(id, user, data, pd.weights_desc(), name);
  if (op.bias) {
    fixed[DNNL_ARG_BIAS] = weights(id, {{graph_.output_of(op).shape.c}, DataType::f32, Tag::x}, op.bias->data(), pd.bias_desc(),
                                   op.name + " bias");
  }
  return primitive_kernel(op.name, dnnl::convolution_forward(pd), pd, src, dst, std::move(fixed));
}

// A window of a line buffer of exactly its kernel's rows runs past the buffer's end in all but one
// position, and then reads its last rows through the buffer's second mapping (ring.hpp): the same
// memory to the CPU, whose caches are tagged by physical address, but lines of their own to a cache
// tagged by virtual address, such as valgrind's (bench/traffic.sh): mobilenet_v2 1024's 3-row
// windows of its expanded tensors made the executor look 4.32 MiB larger to it than it is. Such a
// window is also the whole buffer in another order: buffer row s holds the window's row (s - r) mod
// K, r the buffer row the window starts at. So it runs as the same convolution over the buffer from
// its start, with the kernel's rows rotated by r (and rows of zeros for buffer rows outside a window
// clipped at the image's edge): one call, as before, on a copy of the weights per rotation, which
// for a depthwise convolution (9 floats per channel) is small. Where the pipeline gave the buffer
// more rows than the kernel, the window reads the second mapping as before.
bool FusedProgram::rotates_wrapping_windows(OpId id, const Descs& d, int64_t count) const {
  const Op& op = graph_.op(id);
  const TensorId t = op.inputs[0];
  const TensorRole role = partitions_[static_cast<size_t>(partition_of_[static_cast<size_t>(id)])].roles[static_cast<size_t>(t)];
  return options_.rotate_wrapping_windows && count == 1 && op.window.kernel_h > 1 && d.dst == d.rows && op.groups > 1 &&
         op.groups == graph_.tensor(t).shape.c && op.window.dilation_h == 1 && !row_blocked_[static_cast<size_t>(t)] &&
         role != TensorRole::Whole && role != TensorRole::None;
}

// The window kernel `whole` of convolution `id` over `in_rows` input rows, its kernel rows from
// `pad_t`, run over the whole line buffer with rotated kernel rows where the window wraps in a
// buffer of its kernel's rows. Operands: as `whole`'s.
int FusedProgram::rotating_kernel(OpId id, int whole, int64_t in_rows, int64_t pad_t) {
  const Op& op = graph_.op(id);
  const Shape& in = graph_.input_of(op).shape;
  const Shape& out = graph_.output_of(op).shape;
  const int64_t kh = op.window.kernel_h, kw = op.window.kernel_w;
  const auto key = std::make_pair(partition_of_[static_cast<size_t>(id)], op.inputs[0]);
  auto span = ring_spans_.find(key);
  if (span == ring_spans_.end()) span = ring_spans_.emplace(key, std::make_unique<RingSpan>()).first;
  const Descs d = window_descs(op, kh, 1, 0, 0);
  const dnnl::convolution_forward::primitive_desc pd = band_convolution(id, d, kh);
  const ConvGroups& groups = conv_groups_[static_cast<size_t>(id)];
  const std::vector<float> merged = merged_group_weights(op, groups, in.c, out.c);  // empty: the graph's own
  const float* graph_weights = merged.empty() ? op.weight->data() : merged.data();
  const int64_t filters = static_cast<int64_t>(merged.empty() ? op.weight->size() : merged.size()) / (kh * kw);
  const memory::desc user(conv_weight_dims(groups, in.c, out.c, kh, kw), DataType::f32, groups.groups > 1 ? Tag::goihw : Tag::oihw);
  std::vector<int> rotated(static_cast<size_t>(kh), whole);  // by the buffer row the window starts at
  for (int64_t r = kh - in_rows + 1; r < kh; ++r) {  // the starts at which the window wraps
    std::vector<float> weights_r(static_cast<size_t>(filters * kh * kw), 0.0f);
    for (int64_t f = 0; f < filters; ++f) {
      for (int64_t i = 0; i < in_rows; ++i) {  // window row i lies in buffer row (r + i) mod kh
        std::copy_n(graph_weights + (f * kh + pad_t + i) * kw, kw, weights_r.begin() + (f * kh + (r + i) % kh) * kw);
      }
    }
    rotated[static_cast<size_t>(r)] =
        convolution_kernel(id, pd, user, weights_r.data(),
                           fmt::format("{} weights (kernel rows {}..{} from buffer row {})", op.name, pad_t, pad_t + in_rows - 1, r), d.src, d.dst);
  }
  const int64_t row_bytes = row_floats(in) * static_cast<int64_t>(sizeof(float));
  const int outer = add_kernel([this, rotated, ring = span->second.get(), row_bytes, kh](int64_t first, int64_t count, float* const* operands) {
    const int64_t start = (reinterpret_cast<const char*>(operands[0]) - ring->begin) / row_bytes;
    const int kernel = rotated[static_cast<size_t>(std::min(start, kh - 1))];
    if (kernel == rotated[0] || ring->bytes != kh * row_bytes) {  // no wrap, or pipeline rows: the second mapping
      kernels_[static_cast<size_t>(rotated[0])](first, count, operands);
      return;
    }
    float* const from_start[2] = {reinterpret_cast<float*>(const_cast<char*>(ring->begin)), operands[1]};
    kernels_[static_cast<size_t>(kernel)](first, count, from_start);
  });
  for (size_t r = 0; r < rotated.size(); ++r) {
    if (r == 0 || rotated[r] != whole) wrapped_.emplace(outer, rotated[r]);
  }
  return outer;
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
    // One value per channel against a full tensor (squeeze-and-excitation's scale): unit strides,
    // so that the compiler vectorises the channel loop.
    const auto per_channel = [&](const Shape& s) { return s.h == 1 && s.w == 1 && s.c == out.c; };
    if ((a == out && per_channel(b)) || (b == out && per_channel(a))) {
      const bool full_first = a == out;
      const float* channel = full_first ? p[1] : p[0];
      for (int64_t y = 0; y < count * out.w; ++y) {
        const float* full = (full_first ? p[0] : p[1]) + y * out.c;
        float* o = p[2] + y * out.c;
        if (full_first) {
          for (int64_t c = 0; c < out.c; ++c) o[c] = apply(full[c], channel[c]);
        } else {
          for (int64_t c = 0; c < out.c; ++c) o[c] = apply(channel[c], full[c]);
        }
      }
      activate(p[2], count * row_floats(out), act);
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
// for input row h reordered to NHWC (w, c) order at compile time, and interleaved by blocks of
// kGemmBlock outputs (zero-padded) so that the kernel keeps a block's sums in vector registers and
// reads each weight once with unit stride. Operands: input row `first`, the output row.
constexpr int64_t kGemmBlock = 32;
constexpr int64_t kParallelGemmMacs = int64_t{1} << 20;

Kernel FusedProgram::gemm_kernel(const Op& op) {
  const Shape in = graph_.input_of(op).shape;
  const int64_t outs = graph_.output_of(op).shape.c;
  const int64_t row = row_floats(in);
  const int64_t blocks = (outs + kGemmBlock - 1) / kGemmBlock;
  Allocation storage = account_.allocate(in.h * blocks * kGemmBlock * row * static_cast<int64_t>(sizeof(float)),
                                         MemoryUse::Weights, op.name + " weights");
  float* w = storage.floats();
  const float* src = op.weight->data();
  for (int64_t h = 0; h < in.h; ++h) {
    for (int64_t o = 0; o < blocks * kGemmBlock; ++o) {
      for (int64_t x = 0; x < in.w; ++x) {
        for (int64_t c = 0; c < in.c; ++c) {
          const int64_t i = x * in.c + c;
          w[((h * blocks + o / kGemmBlock) * row + i) * kGemmBlock + o % kGemmBlock] =
              o < outs ? src[o * in.c * in.h * in.w + (c * in.h + h) * in.w + x] : 0.0f;
        }
      }
    }
  }
  weight_storage_.push_back(std::move(storage));
  const float* bias = op.bias ? owned_copy(*op.bias, op.name + " bias") : nullptr;
  const Activation act = op.activation;
  // Where one thread runs the steps (ThreadSharing::Kernels), the other threads take blocks of
  // outputs of a layer large enough to pay for waking them (vgg16's first fully connected layer
  // streams 392 MiB of weights per image).
  const int threads = row * blocks * kGemmBlock >= kParallelGemmMacs ? kernel_threads_ : 1;
  // Each image takes the blocks in the order opposite to the previous image's. A classifier's
  // weights are read once per image, so where the image's stream fills the cache they are its
  // oldest lines: in a set that overflows by a line, an LRU cache evicts the first block read, and
  // reading the blocks in the same order again would evict each next block before it is read (all
  // of them miss); in the opposite order the last blocks read are read first, and only the
  // overflowing lines miss. Each output's sum is the same, whichever order the blocks go in.
  auto backwards = std::make_shared<bool>(true);
  return [=](int64_t first, int64_t count, float* const* p) {
    float* y = p[1];
    if (first == 0) {
      for (int64_t o = 0; o < outs; ++o) y[o] = bias ? bias[o] : 0.0f;
      *backwards = !*backwards;
    }
    const bool reversed = *backwards;
    for (int64_t r = 0; r < count; ++r) {
      const float* x = p[0] + r * row;
#pragma omp parallel for num_threads(threads) if (threads > 1)
      for (int64_t k = 0; k < blocks; ++k) {
        const int64_t b = reversed ? blocks - 1 - k : k;
        const float* wb = w + ((first + r) * blocks + b) * row * kGemmBlock;
        float sum[kGemmBlock] = {};
        for (int64_t i = 0; i < row; ++i) {
          for (int64_t j = 0; j < kGemmBlock; ++j) sum[j] += wb[i * kGemmBlock + j] * x[i];
        }
        for (int64_t j = 0; j < std::min(kGemmBlock, outs - b * kGemmBlock); ++j) y[b * kGemmBlock + j] += sum[j];
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
      if (whole_layout_[static_cast<size_t>(op.inputs[0])] == WholeLayout::Blocked) {
        // One step over the whole channel-blocked image: a block of channel sums per pixel.
        const int64_t block = channel_block();
        kernel = [=](int64_t, int64_t, float* const* p) {
          float* y = p[1];
          std::fill(y, y + in.c, 0.0f);
          for (int64_t b = 0; b < in.c / block; ++b) {
            const float* s = p[0] + b * in.h * in.w * block;
            float* sums = y + b * block;
            for (int64_t i = 0; i < in.h * in.w; ++i) {
              for (int64_t c = 0; c < block; ++c) sums[c] += s[i * block + c];
            }
          }
          const float scale = 1.0f / static_cast<float>(in.h * in.w);
          for (int64_t c = 0; c < in.c; ++c) y[c] *= scale;
          activate(y, in.c, act);
        };
        break;
      }
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
      const float* scale = owned_copy(*op.weight, op.name + " scale");
      const float* shift = owned_copy(*op.bias, op.name + " shift");
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
    case OpKind::Slice: {
      const int64_t offset = op.channel_offset;
      kernel = [=](int64_t, int64_t count, float* const* p) {
        for (int64_t r = 0; r < count * out.w; ++r) {
          std::memcpy(p[1] + r * out.c, p[0] + r * in.c + offset, static_cast<size_t>(out.c) * sizeof(float));
        }
        activate(p[1], count * row_floats(out), act);
      };
      break;
    }
    case OpKind::ChannelShuffle: {
      const int64_t groups = op.groups, per_group = in.c / groups;
      kernel = [=](int64_t, int64_t count, float* const* p) {
        for (int64_t r = 0; r < count * out.w; ++r) {
          const float* s = p[0] + r * in.c;
          float* d = p[1] + r * out.c;
          for (int64_t j = 0; j < per_group; ++j) {
            for (int64_t g = 0; g < groups; ++g) d[j * groups + g] = s[g * per_group + j];
          }
        }
        activate(p[1], count * row_floats(out), act);
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
    if (whole_layout_[static_cast<size_t>(t)] == WholeLayout::Planar) {
      // Rows [first, first + count) of each channel plane, into the same place of the whole image.
      const int index = add_kernel([s](int64_t first, int64_t count, float* const* p) {
        for (int64_t c = 0; c < s.c; ++c) {
          const int64_t at = (c * s.h + first) * s.w;
          std::memcpy(p[1] + at, p[0] + at, static_cast<size_t>(count * s.w) * sizeof(float));
        }
      });
      cache.emplace(t, index);
      return index;
    }
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

  // Zero: the rows of zeros of a line buffer, written just before the first window that reads them.
  std::map<TensorId, int> zero_kernels;
  const auto zero = [&](TensorId t) {
    if (const auto found = zero_kernels.find(t); found != zero_kernels.end()) return found->second;
    const int64_t floats = row_floats(graph_.tensor(t).shape);
    const int index = add_kernel([floats](int64_t, int64_t count, float* const* p) {
      std::fill(p[0], p[0] + count * floats, 0.0f);
    });
    zero_kernels.emplace(t, index);
    return index;
  };
  for (size_t p = 0; p < partitions_.size(); ++p) {
    const auto part = static_cast<int32_t>(p);
    std::vector<std::pair<FusedStep, int32_t>> pieces;  // (step, thread share; -1: not split)
    std::set<TensorId> zeroed_above;                    // tensors whose rows of zeros above are written
    std::map<TensorId, int64_t> zeroed_below;           // per tensor: the end of its rows of zeros below written so far
    for (const FusedStep& whole : partitions_[p].schedule.steps) {
      if (whole.kind == StepKind::Compute) {
        const Op& op = graph_.op(whole.op);
        const TensorId in = op.inputs[0];
        const ZeroRows& zeros = zero_rows_[static_cast<size_t>(in)];
        const int64_t h = graph_.tensor(in).shape.h;
        const int64_t top = rows::window_rows(op, whole.first).first;
        const int64_t bottom = rows::window_rows(op, whole.first + whole.count - 1).last;
        if (zeros.above > 0 && top < 0 && zeroed_above.insert(in).second) {
          pieces.emplace_back(FusedStep{StepKind::Zero, -1, in, -zeros.above, zeros.above}, -1);
        }
        // Rows of zeros below, as far as this window reaches: the line buffer holds no more (the
        // schedule sizes it so), and a row of zeros written further down would take the slot of a
        // row still to be read (a 5-row window's second row of zeros overwrote its first input row).
        if (zeros.below > 0 && bottom >= h) {
          int64_t& written = zeroed_below.emplace(in, h).first->second;
          const int64_t end = std::min<int64_t>(bottom, h + zeros.below - 1) + 1;
          if (end > written) {
            pieces.emplace_back(FusedStep{StepKind::Zero, -1, in, static_cast<int32_t>(written), static_cast<int32_t>(end - written)}, -1);
            written = end;
          }
        }
      }
      if (whole.kind == StepKind::Compute && threads_ > 1 && channel_blocked(whole.op)) {
        // A whole-tensor step into a channel-blocked tensor: a run of output channel blocks each.
        const auto blocks = graph_.output_of(graph_.op(whole.op)).shape.c / channel_block();
        for (int32_t k = 0; k < std::min<int64_t>(threads_, blocks); ++k) pieces.emplace_back(whole, k);
        continue;
      }
      const bool splits = whole.kind == StepKind::Compute && threads_ > 1 && whole.count > 1 &&
                          rows::mode_of(graph_, graph_.op(whole.op)) == rows::Mode::Window;
      if (!splits) {
        pieces.emplace_back(whole, -1);
        continue;
      }
      // A band of several rows is shared by the threads, a contiguous run of rows each.
      const int32_t shares = std::min<int32_t>(threads_, whole.count);
      for (int32_t k = 0; k < shares; ++k) {
        FusedStep piece = whole;
        piece.first = whole.first + whole.count * k / shares;
        piece.count = whole.first + whole.count * (k + 1) / shares - piece.first;
        pieces.emplace_back(piece, k);
      }
    }
    for (const auto& [fs, share] : pieces) {
      if (fs.kind != StepKind::Compute || rows::mode_of(graph_, graph_.op(fs.op)) != rows::Mode::Window) continue;
      auto [largest, fresh] = largest_band_.try_emplace(fs.op, fs.first, fs.count);
      if (!fresh && fs.count > largest->second.second) largest->second = {fs.first, fs.count};
    }
    for (const auto& [fs, share] : pieces) {
      Step step;
      bool windowed_kernel = false;
      step.first = fs.first;
      step.count = fs.count;
      step.operand_begin = static_cast<uint32_t>(operand_refs_.size());
      std::vector<Access> access;
      if (fs.kind == StepKind::Zero) {
        step.kernel = zero(fs.tensor);
        operand_refs_.push_back({part, fs.tensor, fs.first});
        access.push_back({fs.tensor, fs.first, fs.first + fs.count - 1, true});
      } else if (fs.kind != StepKind::Compute) {
        const bool load = fs.kind == StepKind::Load;
        step.kernel = transfer(fs.tensor, load);
        // The caller tensor's image (row 0), and the line buffer at row `first` (a planar image: at its start).
        const OperandRef image{part, fs.tensor, kWholeImage};
        const OperandRef ring{part, fs.tensor, whole_layout_[static_cast<size_t>(fs.tensor)] == WholeLayout::Planar ? 0 : fs.first};
        operand_refs_.push_back(load ? image : ring);
        operand_refs_.push_back(load ? ring : image);
        access.push_back({fs.tensor, fs.first, fs.first + fs.count - 1, load});
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
        windowed_kernel = windowed && !host_average;
        if (channel_blocked(fs.op)) {
          step.kernel = whole_kernel(fs.op, share);
          operand_refs_.push_back({part, op.inputs[0], 0});
        } else if (windowed_kernel) {
          int64_t src_row = 0;
          step.kernel = window_kernel(fs.op, fs.first, fs.count, share, &src_row);
          operand_refs_.push_back({part, op.inputs[0], src_row});
        } else {
          step.kernel = host_kernel(fs.op);
          for (size_t k = 0; k < op.inputs.size(); ++k) {
            operand_refs_.push_back({part, op.inputs[k], rows::band(graph_, op, k, fs.first).first});
          }
        }
        for (size_t k = 0; k < op.inputs.size(); ++k) {
          int64_t lo = rows::band(graph_, op, k, fs.first).first;
          int64_t hi = rows::band(graph_, op, k, fs.first + fs.count - 1).last;
          const ZeroRows& zeros = zero_rows_[static_cast<size_t>(op.inputs[k])];
          if (zeros.above > 0 || zeros.below > 0) {  // the window's rows of zeros are read too
            const int64_t h = graph_.input_of(op, k).shape.h;
            lo = std::max<int64_t>(-zeros.above, rows::window_rows(op, fs.first).first);
            hi = std::min<int64_t>(h - 1 + zeros.below, rows::window_rows(op, fs.first + fs.count - 1).last);
          }
          access.push_back({op.inputs[k], lo, hi, false});
        }
        operand_refs_.push_back({part, op.output, accumulates ? 0 : fs.first});
        access.push_back({op.output, accumulates ? 0 : fs.first, accumulates ? 0 : fs.first + fs.count - 1, true});
      }
      step.operand_count = static_cast<uint32_t>(operand_refs_.size() - step.operand_begin);
      steps_.push_back(step);
      sources_.emplace_back(static_cast<int>(p), fs);
      accesses_.push_back(std::move(access));
      shares_.push_back(share);
      window_steps_.push_back(windowed_kernel);
    }
  }
  slots_.resize(slot_image_floats_.size());
}

void FusedProgram::resolve_operands() {
  operand_lists_.clear();
  kernel_operands_.assign(kernels_.size(), 0);
  std::vector<bool> seen(kernels_.size(), false);
  std::map<std::vector<std::pair<int32_t, intptr_t>>, uint32_t> lists;  // by their addresses' keys
  std::vector<Address> list;
  std::vector<std::pair<int32_t, intptr_t>> key;
  for (Step& step : steps_) {
    const auto k = static_cast<size_t>(step.kernel);
    if (seen[k] && kernel_operands_[k] != step.operand_count) {
      fail("{}: internal error: kernel {} runs with {} and with {} operands", source_, k, kernel_operands_[k], step.operand_count);
    }
    seen[k] = true;
    kernel_operands_[k] = step.operand_count;
    list.clear();
    key.clear();
    for (uint32_t i = 0; i < step.operand_count; ++i) {
      list.push_back(address(operand_refs_[step.operand_begin + i]));
      key.push_back(list.back().key());
    }
    const auto [found, added] = lists.try_emplace(key, static_cast<uint32_t>(operand_lists_.size()));
    if (added) operand_lists_.insert(operand_lists_.end(), list.begin(), list.end());
    step.operands = found->second;
  }
  operands_ = operand_lists_;
}

// Each op's cost is the measured time of one of its steps (the middle one, best of a few tries on
// whatever the buffers hold) times its number of steps, or FusedOptions::op_costs; each partition's
// ops are then cut into contiguous groups of about equal cost, one per thread, in schedule order.
void FusedProgram::calibrate_and_split() {
  std::vector<std::vector<float>> dummy;  // caller tensors, one image each: only addresses matter
  for (int64_t floats : slot_image_floats_) dummy.emplace_back(static_cast<size_t>(floats), 0.0f);
  for (size_t k = 0; k < dummy.size(); ++k) slots_[k] = dummy[k].data();
  std::vector<std::vector<size_t>> steps_of(graph_.ops.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (sources_[i].second.kind == StepKind::Compute) steps_of[static_cast<size_t>(sources_[i].second.op)].push_back(i);
  }
  std::vector<float*> resolved;
  if (!options_.op_costs.empty() && options_.op_costs.size() != graph_.ops.size()) {
    fail("{}: {} op costs given for {} ops", source_, options_.op_costs.size(), graph_.ops.size());
  }
  std::vector<double> cost(graph_.ops.size(), 0.0);
  for (size_t o = 0; o < graph_.ops.size(); ++o) {
    if (steps_of[o].empty()) continue;
    if (!options_.op_costs.empty()) {
      cost[o] = std::max(options_.op_costs[o], 0.0);
      continue;
    }
    const Step& step = steps_[steps_of[o][steps_of[o].size() / 2]];
    double best = 1e30;
    for (int attempt = 0; attempt < 3; ++attempt) {
      const auto start = std::chrono::steady_clock::now();
      execute(runnable(step), 0, resolved);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    cost[o] = best * static_cast<double>(rows::event_count(graph_, graph_.op(static_cast<OpId>(o)))) / step.count;
    if (channel_blocked(static_cast<OpId>(o))) cost[o] *= static_cast<double>(steps_of[o].size());  // each step: a channel share
  }
  // Ops whose bands the threads share are balanced already; the others are cut into groups.
  std::vector<bool> shared(graph_.ops.size(), false);
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (shares_[i] >= 0) shared[static_cast<size_t>(sources_[i].second.op)] = true;
  }
  std::vector<double> grouped = cost;
  for (size_t o = 0; o < graph_.ops.size(); ++o) {
    if (shared[o]) grouped[o] = 0;
  }
  for (PartitionState& state : partitions_) split(state, grouped);
  std::vector<double> share(static_cast<size_t>(threads_), 0.0);
  for (const PartitionState& state : partitions_) {
    for (OpId o = state.first; o <= state.last; ++o) {
      const auto i = static_cast<size_t>(o);
      if (shared[i]) {
        for (double& s : share) s += cost[i] / threads_;
      } else {
        const int k = o - state.first;
        if (k == state.straddle) {
          share[0] += cost[i] * state.straddle_share;
          share[1] += cost[i] * (1 - state.straddle_share);
        } else {
          share[static_cast<size_t>(state.thread_of[static_cast<size_t>(k)])] += cost[i];
        }
      }
    }
  }
  const double total = std::accumulate(share.begin(), share.end(), 0.0);
  calibrated_seconds_ = total;
  for (double c : share) split_summary_ += fmt::format("{}{:.0f}%", split_summary_.empty() ? "" : "/", 100 * c / std::max(total, 1e-30));
  // Loads and rows of zeros run on the thread of the step that needs them (the next compute step), stores on the
  // thread of the step that produced the rows (the previous one).
  int64_t straddled = 0;  // steps of the current partition's straddling op so far
  for (size_t i = 0; i < steps_.size(); ++i) {
    const auto& [p, fs] = sources_[i];
    const PartitionState& state = partitions_[static_cast<size_t>(p)];
    if (i > 0 && sources_[i - 1].first != p) straddled = 0;
    if (fs.kind == StepKind::Compute && fs.op - state.first == state.straddle) {
      // Interleaved: of every run of steps, thread 0 takes its share.
      const int64_t k = straddled++;
      const bool first_thread = std::floor(static_cast<double>(k + 1) * state.straddle_share) >
                                std::floor(static_cast<double>(k) * state.straddle_share);
      steps_[i].thread = first_thread ? 0 : 1;
      if (!first_thread && window_steps_[i]) {
        int64_t src_row = 0;
        steps_[i].kernel = window_kernel(fs.op, fs.first, fs.count, 1, &src_row);
      }
    } else if (fs.kind == StepKind::Compute) {
      steps_[i].thread = shares_[i] >= 0 ? shares_[i] : state.thread_of[static_cast<size_t>(fs.op - state.first)];
    }
  }
  if (threads_ == 2) share_fill_and_drain(cost);
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (sources_[i].second.kind == StepKind::Store) steps_[i].thread = steps_[i - 1].thread;
  }
  for (size_t i = steps_.size(); i-- > 0;) {
    const StepKind kind = sources_[i].second.kind;
    if (kind == StepKind::Load || kind == StepKind::Zero) steps_[i].thread = steps_[i + 1].thread;
  }
  split_known_ = true;
}

// Bytes the line buffers of a partition grow by when each tensor crossing a cut between threads gets
// kPipelineRows more rows, per candidate cut: after op `first + k` (k < ops - 1). A tensor crosses a
// cut when the ops touching it in the partition (its producer, its readers) lie on both sides.
std::vector<int64_t> FusedProgram::cut_bytes(const PartitionState& state) const {
  const int64_t page = page_bytes();
  const auto round = [&](int64_t bytes) { return (bytes + page - 1) / page * page; };
  std::vector<int64_t> bytes(static_cast<size_t>(state.last - state.first + 1), 0);
  for (const LineBuffer& b : state.schedule.rings) {
    const Tensor& tensor = graph_.tensor(b.tensor);
    OpId lo = tensor.producer >= state.first && tensor.producer <= state.last ? tensor.producer : state.last;
    OpId hi = tensor.producer >= state.first && tensor.producer <= state.last ? tensor.producer : state.first;
    for (OpId c : tensor.consumers) {
      if (c < state.first || c > state.last) continue;
      lo = std::min(lo, c);
      hi = std::max(hi, c);
    }
    const int64_t rows = std::max(b.rows, std::min(b.rows + kPipelineRows, ring_rows_limit(b.tensor)));
    const int64_t extra = round(rows * b.row_bytes) - round(b.rows * b.row_bytes);
    for (OpId k = lo; k < hi; ++k) bytes[static_cast<size_t>(k - state.first)] += extra;
  }
  return bytes;
}

// Two threads: a partition's pipeline fills before the second thread's first step can run (the
// first thread alone produces the rows it needs) and drains after the first thread's last step
// (the second alone finishes the deep ops' last rows): mobilenet_v2 1024x1024 waited 5-7 ms of a
// 40 ms image so. Those steps run as a pipeline of their own: of the steps before the second
// thread's first, the later ops' (half of their cost) go to the second thread; of the steps after
// the first thread's last, the later ops' go to the first. The waits (compute_waits) order the
// rows these steps now pass between the threads; a step moved gets its own kernel (a primitive call
// binds its operands and its thread's scratchpad). Reductions, which accumulate into one row, shared
// steps and a straddled op keep their threads.
void FusedProgram::share_fill_and_drain(const std::vector<double>& cost) {
  for (size_t p = 0; p < partitions_.size(); ++p) {
    const PartitionState& state = partitions_[p];
    std::vector<size_t> compute;  // the partition's unshared compute steps, in order
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (sources_[i].first == static_cast<int>(p) && sources_[i].second.kind == StepKind::Compute && shares_[i] < 0) compute.push_back(i);
    }
    const auto on = [&](int thread) { return [&, thread](size_t i) { return steps_[i].thread == thread; }; };
    const auto first_of_1 = std::find_if(compute.begin(), compute.end(), on(1));
    const auto last_of_0 = std::find_if(compute.rbegin(), compute.rend(), on(0));
    if (first_of_1 == compute.end() || last_of_0 == compute.rend()) continue;
    const auto movable = [&](size_t i) {
      const OpId o = sources_[i].second.op;
      return o - state.first != state.straddle && rows::mode_of(graph_, graph_.op(o)) != rows::Mode::Accumulate;
    };
    const auto step_cost = [&](size_t i) {
      const FusedStep& fs = sources_[i].second;
      return cost[static_cast<size_t>(fs.op)] * fs.count / static_cast<double>(rows::event_count(graph_, graph_.op(fs.op)));
    };
    // The later ops' steps of a region, half its cost, to thread `to`.
    const auto pipeline = [&](std::span<const size_t> region, int to) {
      std::map<OpId, double> by_op;
      double total = 0;
      for (size_t i : region) {
        if (!movable(i)) continue;
        by_op[sources_[i].second.op] += step_cost(i);
        total += step_cost(i);
      }
      double prefix = 0;
      OpId last_kept = -1;
      for (const auto& [op, c] : by_op) {
        if (prefix >= total / 2) break;
        prefix += c;
        last_kept = op;
      }
      for (size_t i : region) {
        const FusedStep& fs = sources_[i].second;
        if (!movable(i) || fs.op <= last_kept) continue;
        steps_[i].thread = to;
        ++fill_and_drain_steps_;
        if (window_steps_[i]) {
          int64_t src_row = 0;
          steps_[i].kernel = window_kernel(fs.op, fs.first, fs.count, to, &src_row);
        }
      }
    };
    const auto head_end = static_cast<size_t>(first_of_1 - compute.begin());
    const auto tail_begin = static_cast<size_t>(compute.rend() - last_of_0);
    pipeline(std::span(compute).first(head_end), 1);
    pipeline(std::span(compute).subspan(tail_begin), 0);
  }
}

// Cuts a partition's ops into up to threads_ contiguous groups of about equal cost: the j-th cut
// goes after the op whose cost prefix is nearest j/threads_ of the total, among the cuts whose
// pipeline rows still fit the partition's reserve (a tensor crossing several cuts is counted at each,
// which overestimates). Without a fitting cut, fewer threads share the partition.
void FusedProgram::split(PartitionState& state, const std::vector<double>& cost) const {
  const auto ops = static_cast<size_t>(state.last - state.first + 1);
  state.thread_of.assign(ops, 0);
  const std::vector<int64_t> bytes = cut_bytes(state);
  std::vector<double> prefix(ops + 1, 0.0);
  for (size_t i = 0; i < ops; ++i) prefix[i + 1] = prefix[i] + cost[static_cast<size_t>(state.first) + i];
  int64_t left = state.reserve;
  size_t from = 0;  // first op of the current group
  for (int j = 1; j < threads_; ++j) {
    const double target = prefix[ops] * j / threads_;
    size_t best = ops;
    for (size_t k = from; k + 1 < ops; ++k) {
      if (bytes[k] > left) continue;
      if (best == ops || std::abs(prefix[k + 1] - target) < std::abs(prefix[best + 1] - target)) best = k;
    }
    if (best == ops) break;
    left -= bytes[best];
    for (size_t i = best + 1; i < ops; ++i) state.thread_of[i] = j;
    from = best + 1;
  }
  // Two threads: where the best cut leaves them unequal (dncnn's 17 equal convolutions: 47%/53%),
  // the op across the middle gives each thread its share of rows, if the rows then crossing on both
  // of its sides fit the reserve.
  state.straddle = -1;
  const double half = prefix[ops] / 2;
  if (threads_ != 2 || ops < 2 || prefix[ops] <= 0) return;
  const auto cut_at = static_cast<size_t>(std::find(state.thread_of.begin(), state.thread_of.end(), 1) - state.thread_of.begin());
  const double imbalance = std::abs(prefix[cut_at] - half);
  const MiddleOp middle = middle_op(state, prefix, bytes);
  const size_t m = middle.index;
  const double share = (half - prefix[m]) / std::max(cost[static_cast<size_t>(state.first) + m], 1e-30);
  if (imbalance < kStraddleImbalance * prefix[ops] || share <= 0.05 || share >= 0.95 || middle.crossing > state.reserve ||
      middle.accumulates) {
    return;
  }
  state.straddle = static_cast<int>(m);
  state.straddle_share = share;
  for (size_t i = 0; i < ops; ++i) state.thread_of[i] = i <= m ? 0 : 1;
}

// The op across the middle of a partition's cost (`prefix`: running sums over its ops). Reductions
// accumulate every step into one output row, so their steps cannot be shared between threads.
FusedProgram::MiddleOp FusedProgram::middle_op(const PartitionState& state, std::span<const double> prefix,
                                               std::span<const int64_t> bytes) const {
  const size_t ops = prefix.size() - 1;
  MiddleOp middle;
  while (middle.index + 1 < ops && prefix[middle.index + 1] <= prefix[ops] / 2) ++middle.index;
  const size_t m = middle.index;
  middle.crossing = (m > 0 ? bytes[m - 1] : 0) + (m + 1 < ops ? bytes[m] : 0);
  middle.accumulates = rows::mode_of(graph_, graph_.op(state.first + static_cast<OpId>(m))) == rows::Mode::Accumulate;
  return middle;
}

// The reserve a partition of few, equal ops (dncnn's 15 middle convolutions) needs for split() to
// share the middle op's rows between the two threads, where no cut between ops balances them: the
// pipeline rows on both sides of that op. The costs are the ops' multiply-accumulates (or
// FusedOptions::op_costs), not measured times, so that the footprint does not depend on timing; at
// most twice pipeline_share of the line buffers, else nothing beyond pipeline_share.
int64_t FusedProgram::straddle_reserve(const PartitionState& state) const {
  const auto ops = static_cast<size_t>(state.last - state.first + 1);
  if (ops < 2) return 0;
  std::vector<double> prefix(ops + 1, 0.0);
  for (size_t i = 0; i < ops; ++i) {
    const auto o = static_cast<size_t>(state.first) + i;
    const double cost = options_.op_costs.size() == graph_.ops.size() ? options_.op_costs[o]
                                                                        : static_cast<double>(op_macs(graph_, graph_.op(static_cast<OpId>(o))));
    prefix[i + 1] = prefix[i] + std::max(cost, 0.0);
  }
  const double half = prefix[ops] / 2;
  double imbalance = prefix[ops];
  for (size_t k = 0; k + 1 < ops; ++k) imbalance = std::min(imbalance, std::abs(prefix[k + 1] - half));
  if (prefix[ops] <= 0 || imbalance < kStraddleImbalance * prefix[ops]) return 0;
  const MiddleOp middle = middle_op(state, prefix, cut_bytes(state));
  if (middle.accumulates) return 0;
  const double rings = static_cast<double>(state.schedule.ring_bytes());
  return static_cast<double>(middle.crossing) <= 2 * options_.pipeline_share * rings ? middle.crossing : 0;
}

// Line buffers written by one thread and read by another get kPipelineRows more rows. Bands the
// threads share are not counted: their threads work on the same rows at the same time, and the
// partition's reserve is sized for the cuts between groups only.
void FusedProgram::add_pipeline_rows() {
  for (size_t p = 0; p < partitions_.size(); ++p) {
    PartitionState& state = partitions_[p];
    std::vector<uint32_t> threads(graph_.tensors.size(), 0);  // bit per thread touching the tensor
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (sources_[i].first != static_cast<int>(p) || shares_[i] >= 0) continue;
      for (const Access& a : accesses_[i]) threads[static_cast<size_t>(a.tensor)] |= 1u << (steps_[i].thread % 32);
    }
    // The split chose cuts whose rows fit the reserve, but Loads and Stores follow the threads of
    // their neighbours: rows beyond the block are not added (the waits keep the threads correct).
    for (LineBuffer& b : state.schedule.rings) {
      const uint32_t mask = threads[static_cast<size_t>(b.tensor)];
      if ((mask & (mask - 1)) == 0) continue;
      const int64_t rows = std::max(b.rows, std::min(b.rows + kPipelineRows, ring_rows_limit(b.tensor)));
      if (rows == b.rows) continue;
      const int64_t before = b.rows;
      b.rows = rows;
      if (pack_rings(p).bytes > state.block) b.rows = before;  // shared bytes: the packing decides
    }
  }
}

// Replays the steps in schedule order, tracking which step last wrote each row and which step of
// each thread last read it; a step then waits for the writers of the rows it reads, and for the
// readers (and writer) of every older row whose line-buffer bytes it overwrites, where those ran on
// another thread. A thread's first step in a partition waits for all other threads to finish the
// previous partitions, whose memory the arena may give to this one.
void FusedProgram::compute_waits() {
  const auto T = static_cast<size_t>(threads_);
  std::vector<std::vector<RunStep>> lane_steps(T);
  std::vector<std::vector<Lane::Before>> lane_waits(T);
  std::vector<int32_t> seq(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    auto& lane = lane_steps[static_cast<size_t>(steps_[i].thread)];
    seq[i] = static_cast<int32_t>(lane.size());
    lane.push_back(runnable(steps_[i]));
  }
  struct RowState {
    // Per thread: its step that wrote the row, -1 if none (the threads sharing a channel-blocked step
    // each write a part of every row).
    std::vector<int32_t> writer;
    std::vector<int32_t> last_read;  // per thread: its sequence number + 1, 0 if none
  };
  std::vector<std::vector<RowState>> rows(graph_.tensors.size());
  // Line buffers of the partition that share bytes (pack_rings), and per tensor and thread the
  // sequence number + 1 of its last step touching the tensor: a step touching a line buffer comes
  // after every other thread's last touch of the buffers it shares bytes with.
  std::vector<std::vector<TensorId>> overlaps(graph_.tensors.size());
  std::vector<std::vector<int32_t>> touched(graph_.tensors.size(), std::vector<int32_t>(T, 0));
  std::vector<std::vector<int32_t>> waited(T, std::vector<int32_t>(T, 0));  // [thread][other]: already ensured
  std::vector<int32_t> count_before(T, 0);  // per thread: its steps in earlier partitions
  int partition = -1;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const auto t = static_cast<size_t>(steps_[i].thread);
    const int p = sources_[i].first;
    std::vector<int32_t> need(T, 0);
    if (p != partition) {
      partition = p;
      for (auto& r : rows) r.clear();
      for (auto& o : overlaps) o.clear();
      for (auto& touch : touched) std::fill(touch.begin(), touch.end(), 0);
      const PartitionState& state = partitions_[static_cast<size_t>(p)];
      for (const LineBuffer& a : state.schedule.rings) {
        const Place& pa = state.places[static_cast<size_t>(a.tensor)];
        for (const LineBuffer& b : state.schedule.rings) {
          const Place& pb = state.places[static_cast<size_t>(b.tensor)];
          if (a.tensor != b.tensor && pa.block_offset < pb.block_offset + pb.ring_bytes &&
              pb.block_offset < pa.block_offset + pa.ring_bytes) {
            overlaps[static_cast<size_t>(a.tensor)].push_back(b.tensor);
          }
        }
      }
      for (size_t u = 0; u < T; ++u) count_before[u] = 0;
      for (size_t j = 0; j < i; ++j) ++count_before[static_cast<size_t>(steps_[j].thread)];
    }
    need = count_before;  // a thread's steps in this partition come after every earlier one of others
    for (const Access& a : accesses_[i]) {
      for (const TensorId other : overlaps[static_cast<size_t>(a.tensor)]) {
        for (size_t u = 0; u < T; ++u) {
          if (u != t) need[u] = std::max(need[u], touched[static_cast<size_t>(other)][u]);
        }
      }
      touched[static_cast<size_t>(a.tensor)][t] = seq[i] + 1;
      auto& r = rows[static_cast<size_t>(a.tensor)];
      const int64_t above = zero_rows_[static_cast<size_t>(a.tensor)].above;  // r[y + above]: row y, rows of zeros included
      if (r.empty()) r.assign(static_cast<size_t>(ring_rows_limit(a.tensor)), RowState{std::vector<int32_t>(T, -1), std::vector<int32_t>(T, 0)});
      const auto depend_on = [&](const RowState& row) {
        for (size_t u = 0; u < T; ++u) {
          if (u != t && row.writer[u] >= 0) need[u] = std::max(need[u], seq[static_cast<size_t>(row.writer[u])] + 1);
        }
      };
      if (!a.write) {
        for (int64_t y = a.lo; y <= a.hi; ++y) {
          depend_on(r[static_cast<size_t>(y + above)]);
          r[static_cast<size_t>(y + above)].last_read[t] = seq[i] + 1;
        }
        continue;
      }
      const Place& place = partitions_[static_cast<size_t>(p)].places[static_cast<size_t>(a.tensor)];
      if (place.role != TensorRole::Whole) {
        // Older rows sharing bytes with rows [lo, hi] in the circular buffer of ring_bytes.
        const int64_t rb = row_floats(graph_.tensor(a.tensor).shape) * static_cast<int64_t>(sizeof(float));
        const int64_t span = place.ring_bytes / rb + 2;
        for (int64_t y = std::max<int64_t>(-above, a.lo - 2 * span); y < a.lo; ++y) {
          bool shared = false;
          for (int64_t wrap = place.ring_bytes; !shared && y * rb + wrap < (a.hi + 1) * rb; wrap += place.ring_bytes) {
            shared = (y + 1) * rb + wrap > a.lo * rb;
          }
          if (!shared) continue;
          const RowState& old = r[static_cast<size_t>(y + above)];
          depend_on(old);
          for (size_t u = 0; u < T; ++u) {
            if (u != t && old.last_read[u] > 0) need[u] = std::max(need[u], old.last_read[u]);
          }
        }
      }
      for (int64_t y = a.lo; y <= a.hi; ++y) r[static_cast<size_t>(y + above)].writer[t] = static_cast<int32_t>(i);
    }
    for (size_t u = 0; u < T; ++u) {
      if (u == t || need[u] <= waited[t][u]) continue;
      lane_waits[t].push_back({static_cast<uint32_t>(seq[i]), {static_cast<int32_t>(u), need[u]}});
      waited[t][u] = need[u];
    }
  }
  sources_.clear();
  accesses_.clear();
  shares_.clear();
  window_steps_.clear();
  progress_ = std::make_unique<Progress[]>(T);
  pack_program(lane_steps, lane_waits);
}

// The program in one allocation of the account: read once per image, it is memory the run streams
// through like a tensor's.
void FusedProgram::pack_program(const std::vector<std::vector<RunStep>>& steps, const std::vector<std::vector<Lane::Before>>& waits) {
  int64_t bytes = static_cast<int64_t>(operand_lists_.size() * sizeof(Address));
  for (const auto& lane : steps) bytes += static_cast<int64_t>(lane.size() * sizeof(RunStep));
  for (const auto& lane : waits) bytes += static_cast<int64_t>(lane.size() * sizeof(Lane::Before));
  program_ = account_.allocate(bytes, MemoryUse::Program, source_ + " program");
  auto* at = static_cast<std::byte*>(program_.data());
  const auto place = [&]<typename T>(const std::vector<T>& values) {
    if (!values.empty()) std::memcpy(at, values.data(), values.size() * sizeof(T));
    const std::span<const T> placed(reinterpret_cast<const T*>(at), values.size());
    at += values.size() * sizeof(T);
    return placed;
  };
  static_assert(alignof(Address) >= alignof(RunStep) && alignof(RunStep) >= alignof(Lane::Before));
  operands_ = place(operand_lists_);
  lanes_.assign(steps.size(), {});
  for (size_t t = 0; t < steps.size(); ++t) lanes_[t].steps = place(steps[t]);
  for (size_t t = 0; t < waits.size(); ++t) lanes_[t].waits = place(waits[t]);
  operand_lists_ = {};
}

RunStep FusedProgram::runnable(const Step& step) {
  return {static_cast<uint32_t>(step.kernel), step.first, step.count, step.operands};
}

void FusedProgram::execute(const RunStep& step, int64_t image, std::vector<float*>& resolved) {
  resolved.clear();
  const uint32_t count = kernel_operands_[step.kernel];
  for (uint32_t i = 0; i < count; ++i) {
    const Address& a = operands_[step.operands + i];
    resolved.push_back(a.slot < 0 ? a.fixed
                                  : slots_[static_cast<size_t>(a.slot)] + image * slot_image_floats_[static_cast<size_t>(a.slot)] + a.offset);
  }
  kernels_[static_cast<size_t>(step.kernel)](step.first, step.count, resolved.data());
}

void FusedProgram::run_lane(int thread, int64_t images) {
  const auto t = static_cast<size_t>(thread);
  const Lane& lane = lanes_[t];
  const auto lane_steps = [&](size_t u) { return static_cast<int64_t>(lanes_[u].steps.size()); };
  std::vector<float*> resolved;
  double waited = 0;
  const auto wait_until = [&](size_t u, int64_t target) {
    if (progress_[u].done.load(std::memory_order_acquire) >= target) return;
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0; progress_[u].done.load(std::memory_order_acquire) < target; ++spins) {
      if (abort_.load(std::memory_order_relaxed)) throw std::runtime_error("another thread failed");
      if (spins < kSpinsBeforeYield) {
        _mm_pause();
      } else {
        sched_yield();
      }
    }
    waited += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (int64_t n = 0; n < images; ++n) {
    // The next image reuses every line buffer: all threads finish this one first.
    for (size_t u = 0; u < lanes_.size() && n > 0; ++u) wait_until(u, n * lane_steps(u));
    auto before = lane.waits.begin();
    for (size_t k = 0; k < lane.steps.size(); ++k) {
      for (; before != lane.waits.end() && before->step == k; ++before) {
        const auto u = static_cast<size_t>(before->wait.thread);
        wait_until(u, n * lane_steps(u) + before->wait.steps);
      }
      execute(lane.steps[k], n, resolved);
      progress_[t].done.store(n * lane_steps(t) + static_cast<int64_t>(k) + 1, std::memory_order_release);
    }
  }
  progress_[t].waited_seconds = waited;
}

std::vector<double> FusedProgram::thread_waits() const {
  if (threads_ == 1) return {};
  std::vector<double> seconds;
  for (int t = 0; t < threads_; ++t) seconds.push_back(progress_[static_cast<size_t>(t)].waited_seconds);
  return seconds;
}

void FusedProgram::run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) {
  for (size_t k = 0; k < inputs.size(); ++k) slots_[k] = const_cast<float*>(inputs[k].values.data());  // read only
  for (size_t k = 0; k < outputs.size(); ++k) slots_[inputs.size() + k] = outputs[k].values.data();
  const int64_t images = input_shapes_.empty() ? 1 : input_shapes_[0].n;
  for (int64_t n = 0; n < images; ++n) {
    for (const auto& [in, out] : passthrough_) {
      const auto floats = static_cast<size_t>(slot_image_floats_[static_cast<size_t>(in)]);
      std::memcpy(outputs[static_cast<size_t>(out)].values.data() + static_cast<size_t>(n) * floats,
                  inputs[static_cast<size_t>(in)].values.data() + static_cast<size_t>(n) * floats, floats * sizeof(float));
    }
  }
  for (int t = 0; t < threads_; ++t) {
    progress_[static_cast<size_t>(t)].done.store(0, std::memory_order_relaxed);
    progress_[static_cast<size_t>(t)].waited_seconds = 0;
  }
  abort_.store(false);
  const auto serially = [&] {
    std::vector<float*> resolved;
    for (int64_t n = 0; n < images; ++n) {
      if (threads_ == 1) {
        for (const RunStep& step : lanes_[0].steps) execute(step, n, resolved);
      } else {
        for (const Step& step : steps_) execute(runnable(step), n, resolved);
      }
    }
  };
  if (threads_ == 1) {
    serially();
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel num_threads(threads_)
  {
    if (omp_get_num_threads() != threads_) {
      // OpenMP gave fewer threads than asked (nested in another parallel region, or a thread
      // limit): the lanes would wait for ones that never run, but the schedule's order is valid.
#pragma omp single
      {
        try {
          serially();
        } catch (...) {
          error = std::current_exception();
        }
      }
    } else {
      try {
        run_lane(omp_get_thread_num(), images);
      } catch (...) {
        const std::lock_guard lock(error_mutex);
        if (!error && !abort_.load()) error = std::current_exception();
        abort_.store(true);
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

std::string FusedProgram::describe() const {
  // A partition of one-row tensors (a classifier) takes all its rows at once whatever the bands.
  const auto whole_steps = [&](const PartitionState& state) {
    bool rows = false;
    for (OpId o = state.first; o <= state.last; ++o) {
      const int64_t events = rows::event_count(graph_, graph_.op(o));
      if (band_rows_[static_cast<size_t>(o)] != events) return false;
      rows = rows || events > 1;
    }
    return rows;
  };
  const auto fitting = std::count_if(partitions_.begin(), partitions_.end(),
                                     [&](const PartitionState& state) { return !state.streams_filters && whole_steps(state); });
  const auto streaming = std::count_if(partitions_.begin(), partitions_.end(),
                                       [&](const PartitionState& state) { return state.streams_filters && whole_steps(state); });
  const auto whole = fitting + streaming;
  const std::string why = streaming == 0 ? std::string("they fit the capacity")
                          : fitting == 0 ? std::string("their filters stream from memory once per image")
                                         : fmt::format("{} fit the capacity, {} stream their filters from memory once per image", fitting, streaming);
  return fmt::format(
      "fused row-streaming, oneDNN {}.{}.{}: {} partition{}{}, {} steps ({}), {}, {} line buffers ({} row-blocked, {} whole "
      "channel-blocked), {} convolution/pooling band kernels{}{}{}{}",
      DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, DNNL_VERSION_PATCH, partitions_.size(),
      partitions_.size() == 1 ? "" : "s",
      whole == 0                ? std::string()
      : partitions_.size() == 1 ? fmt::format(" (whole tensors per step: {})", why)
                                : fmt::format(" ({} with whole tensors per step: {})", whole, why),
      steps_.size(),
      max_band_rows_ == 1 ? "one row per step" : fmt::format("up to {} rows per step", max_band_rows_),
      threads_ > 1 ? fmt::format("{}-thread pipeline (kernel time {}{})", threads_, split_summary_,
                                 fill_and_drain_steps_ == 0
                                     ? std::string()
                                     : fmt::format("; {} steps of its filling and draining on the other thread", fill_and_drain_steps_))
      : kernel_threads_ > 1 ? fmt::format("steps in order, oneDNN's kernels on {} threads", kernel_threads_)
                            : std::string("one thread"),
      line_buffers_, std::count(row_blocked_.begin(), row_blocked_.end(), true),
      std::count(whole_layout_.begin(), whole_layout_.end(), WholeLayout::Blocked),
      primitives_, reference_primitives_ > 0 ? fmt::format(" ({} on oneDNN's reference C code)", reference_primitives_) : "",
      merged_groups_summary(std::count_if(conv_groups_.begin(), conv_groups_.end(), [](const ConvGroups& g) { return g.merged > 1; })),
      own_convs_.empty() ? std::string()
                         : fmt::format(", {} convolution{} on occam's own AVX2 row kernel", own_convs_.size(), own_convs_.size() == 1 ? "" : "s"),
      ring_spans_.empty() ? std::string()
                          : fmt::format(", windows past the end of {} line buffer{} read with rotated kernel rows", ring_spans_.size(), ring_spans_.size() == 1 ? "" : "s"));
}

}  // namespace
}  // namespace exec

namespace {
// Images whose kernels take longer on one thread than this are not timed to choose the sharing or
// the row kernels.
constexpr double kLongestMeasuredImage = 0.5;
// About how long the timing runs take, and how much faster the kernels way must measure to be kept:
// a margin for the noise of a few runs, in favour of the pipeline whose split was calibrated
// (mobilenet_v3_small measured 1.48 against 1.49 ms at compile time, 0.88 against 0.91 of the
// reference's speed over ten runs after).
constexpr double kMeasuringSeconds = 0.2;
constexpr double kKernelsMargin = 0.97;
// Bands for heavy filters are kept only where they measure this much faster than one row per step,
// which holds fewer rows and moves less main-memory traffic (mobilenet_v2 1024x1024 in callgrind's
// 32 MiB LL: 1.89x the plan's prediction against 2.47x with the bands); compiles of mobilenet_v2
// 1024x1024 measured the two within 1-3% of each other and kept either.
constexpr double kBandsMargin = 0.97;

using Program = std::unique_ptr<exec::FusedProgram>;

// The best time of each program on an image of zeros: a first run untimed (first touches of
// memory), then rounds interleaving the programs, more of them for small images (noisy to time),
// about kMeasuringSeconds in all.
std::vector<double> time_images(std::span<const Program> programs, double per_image) {
  std::vector<HostTensor> inputs, outputs;
  for (const Shape& shape : programs[0]->input_shapes()) inputs.emplace_back(shape);
  for (const Shape& shape : programs[0]->output_shapes()) outputs.emplace_back(shape);
  for (const Program& program : programs) program->run(inputs, outputs);
  std::vector<double> best(programs.size(), 1e30);
  const int rounds = static_cast<int>(std::clamp(kMeasuringSeconds / std::max(per_image, 1e-4), 2.0, 10.0));
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < programs.size(); ++k) {
      const auto start = std::chrono::steady_clock::now();
      programs[k]->run(inputs, outputs);
      best[k] = std::min(best[k], std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  return best;
}

// How one side of a measured choice is named: on its own where it is kept, and as what the kept
// one was measured against.
struct Side {
  std::string kept, other;
};

// One measured choice between the program compiled so far (with `chosen`) and the same plan
// compiled with `alternative`, both timed on whole images, interleaved: the alternative replaces
// it where `alternative_wins(best current, best alternative)` and, with `no_more_memory`, it holds
// no more activation memory (so that a peak measured without the choice, as plan_under_memory_limit
// measures it, still bounds what runs). Appends "<kept> measured X ms per image against Y ms
// <the other>" to `measured`.
void measure_choice(Program& program, FusedOptions& chosen, const FusedOptions& alternative, const Graph& graph,
                    const Plan& plan, double per_image, const std::function<bool(double, double)>& alternative_wins,
                    bool no_more_memory, const Side& current, const Side& other, std::string& measured) {
  std::array<Program, 2> programs = {std::move(program), std::make_unique<exec::FusedProgram>(graph, plan, alternative)};
  const std::vector<double> best = time_images(programs, per_image);
  const bool switched = alternative_wins(best[0], best[1]) &&
                        (!no_more_memory || programs[1]->memory_account().activation_peak_bytes() <=
                                                programs[0]->memory_account().activation_peak_bytes());
  const size_t kept = switched ? 1 : 0;
  const std::string& name = switched ? other.kept : current.kept;
  const std::string line = fmt::format("{}{}measured {:.2f} ms per image against {:.2f} ms {}", name, name.empty() ? "" : " ",
                                       best[kept] * 1e3, best[1 - kept] * 1e3, switched ? current.other : other.other);
  measured = measured.empty() ? line : fmt::format("{}; {}", measured, line);
  program = std::move(programs[kept]);
  if (switched) chosen = alternative;
}

// One image's time on the program's threads, from its calibration or, without one, one run.
double image_seconds(exec::FusedProgram& program, int threads) {
  if (program.calibrated_seconds() > 0) return program.calibrated_seconds() / threads;
  std::vector<HostTensor> inputs, outputs;
  for (const Shape& shape : program.input_shapes()) inputs.emplace_back(shape);
  for (const Shape& shape : program.output_shapes()) outputs.emplace_back(shape);
  const auto start = std::chrono::steady_clock::now();
  program.run(inputs, outputs);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

std::unique_ptr<Executor> compile_fused(const Graph& graph, const Plan& plan, const FusedOptions& options) {
  const int threads = options.threads > 0 ? options.threads : exec::available_threads();
  const bool measure_sharing = options.sharing == ThreadSharing::Measure && threads > 1;
  FusedOptions chosen = options;
  if (chosen.sharing == ThreadSharing::Measure) chosen.sharing = ThreadSharing::Pipeline;
  if (chosen.layout == FusedLayout::Measure) chosen.layout = FusedLayout::Blocked;
  if (chosen.filter_bands == FilterBands::Measure) chosen.filter_bands = FilterBands::On;
  Program program = std::make_unique<exec::FusedProgram>(graph, plan, chosen);
  std::string measured;
  // Images that take long (dncnn at 512x512: seconds) are not timed: the timing would cost more than
  // compiling, and the pipeline is what large images are streamed with; their row kernels are
  // chosen by timing each convolution's band alone (RowKernels::Measure).
  const bool measuring = measure_sharing || options.row_kernels == RowKernels::Measure ||
                         options.layout == FusedLayout::Measure || options.filter_bands == FilterBands::Measure;
  const double per_image = measuring ? image_seconds(*program, threads) : 0.0;
  const bool timed = measuring && per_image <= kLongestMeasuredImage;
  const auto faster = [](double current, double alternative) { return alternative < current; };
  // Bands first: they decide the band shapes every later choice is timed on. Without them the line
  // buffers hold fewer rows, so the memory bound of plan_under_memory_limit holds either way.
  if (timed && options.filter_bands == FilterBands::Measure && program->has_filter_bands(plan)) {
    FusedOptions rows = chosen;
    rows.filter_bands = FilterBands::Off;
    measure_choice(program, chosen, rows, graph, plan, per_image,
                   [](double bands, double one_row) { return !(bands < kBandsMargin * one_row); }, true,
                   {"bands for heavy filters", "with bands"}, {"one row per step for heavy filters", "with one row per step"},
                   measured);
  }
  // Layout next: it decides which convolutions the own row kernel could run. NHWC is kept only
  // where it holds no more activation memory than the blocked layout that plan_under_memory_limit
  // measured.
  if (timed && options.layout == FusedLayout::Measure && program->blocked_tensors() > 0) {
    FusedOptions nhwc = chosen;
    nhwc.layout = FusedLayout::Nhwc;
    measure_choice(program, chosen, nhwc, graph, plan, per_image, faster, true,
                   {"channel blocks", "in channel blocks"}, {"NHWC", "in NHWC"}, measured);
  }
  if (timed && options.row_kernels == RowKernels::Measure && program->own_candidates() > program->own_convolutions()) {
    // A band timed alone can mislead: in a pipeline of many convolutions oneDNN's NHWC kernels ran
    // dncnn's 3x3 bands at 256x256 in 1.10 ms against the own kernel's 0.83 ms, alone in 0.73 against
    // 0.72 ms. So the own kernels wherever they apply are timed against that choice on whole images.
    FusedOptions own = chosen;
    own.row_kernels = RowKernels::Own;
    const std::string own_everywhere = "own row kernels wherever they apply", each_alone = "row kernels chosen per convolution timed alone";
    measure_choice(program, chosen, own, graph, plan, per_image, faster, false, {each_alone, "with " + each_alone},
                   {own_everywhere, "with " + own_everywhere}, measured);
  }
  // Kernels (the steps in order, oneDNN's kernels on all threads) is kept only where it is faster and
  // holds no more activation memory, so that a peak measured with the pipeline (plan_under_memory_limit)
  // bounds the kept one.
  if (timed && measure_sharing) {
    FusedOptions kernels = chosen;
    kernels.sharing = ThreadSharing::Kernels;
    measure_choice(program, chosen, kernels, graph, plan, program->calibrated_seconds() / threads,
                   [](double pipeline, double all_threads) { return all_threads < kKernelsMargin * pipeline; }, true,
                   {"", "as a pipeline"}, {"", "with oneDNN's kernels on all threads"}, measured);
  }
  std::string description = measured.empty() ? program->describe() : fmt::format("{} ({})", program->describe(), measured);
  return std::make_unique<exec::ProgramExecutor<exec::FusedProgram>>(std::move(program), graph.source, std::move(description));
}

}  // namespace occam
