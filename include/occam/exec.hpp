// Real execution of a Graph on the CPU.
//
// oneDNN style, describe -> create -> execute: an executor is compiled once from a Graph (and, for
// the fused executor, a Plan). Compiling chooses kernels and layouts, reorders the weights and
// allocates every buffer it will ever use from its own MemoryAccount; `run` then executes one
// mini-batch per call without allocating, so the account's peak is the executor's real footprint.
//
// Inputs and outputs are caller-owned dense NCHW HostTensors and are not counted by any account.
#pragma once

#include "occam/model.hpp"
#include "occam/plan.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace occam {

// ---------------------------------------------------------------------------------------------
// Memory accounting

// What a buffer holds. Activations and scratchpad grow with the input resolution and batch; weights
// (reordered filters, biases) do not and are reported apart, as is the fused executor's program
// (its steps and their operand addresses), which grows with the resolution but not the batch.
enum class MemoryUse : uint8_t { Activations, Scratchpad, Weights, Program };
std::string_view to_string(MemoryUse use);

// Where an Allocation's bytes come from. A SharedFile allocation is an anonymous memory file
// (memfd), page-rounded and mapped once; its file() lets an executor map page ranges of it again
// (a circular line buffer mapped twice back to back, so that no window of rows wraps) without using
// more memory, which is why the account counts it once.
enum class Backing : uint8_t { Heap, SharedFile };

class MemoryAccount;

// Storage handed out by a MemoryAccount: 64-byte aligned, given back when destroyed. Move-only.
class Allocation {
public:
  Allocation() = default;
  Allocation(Allocation&& other) noexcept;
  Allocation& operator=(Allocation&& other) noexcept;
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;
  ~Allocation();

  void* data() const { return data_; }
  float* floats() const { return static_cast<float*>(data_); }
  int64_t bytes() const { return bytes_; }
  MemoryUse use() const { return use_; }
  int file() const { return file_; }  // the memory file of a SharedFile allocation, else -1

private:
  friend class MemoryAccount;
  Allocation(MemoryAccount* account, void* data, int64_t bytes, MemoryUse use, int file)
      : account_(account), data_(data), bytes_(bytes), use_(use), file_(file) {}
  void release();

  MemoryAccount* account_ = nullptr;
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  MemoryUse use_ = MemoryUse::Activations;
  int file_ = -1;
};

// The one allocator of an executor. Counts current and peak bytes per use, and the peak of
// activations + scratchpad together (the "peak activation memory" executors report). Thread-safe.
// Must outlive its allocations.
class MemoryAccount {
public:
  MemoryAccount() = default;
  MemoryAccount(const MemoryAccount&) = delete;
  MemoryAccount& operator=(const MemoryAccount&) = delete;

  // Throws an Error naming `what` if the memory cannot be had. SharedFile sizes are rounded up to
  // whole pages, and the rounded size is what the account counts.
  Allocation allocate(int64_t bytes, MemoryUse use, std::string_view what, Backing backing = Backing::Heap);

  int64_t current_bytes(MemoryUse use) const;
  int64_t peak_bytes(MemoryUse use) const;
  int64_t activation_peak_bytes() const;  // peak of activations + scratchpad
  int64_t allocations() const;            // currently live

private:
  friend class Allocation;
  void count(int64_t bytes, MemoryUse use);
  void give_back(int64_t bytes, MemoryUse use);

  mutable std::mutex mutex_;
  int64_t current_[4] = {};
  int64_t peak_[4] = {};
  int64_t activation_peak_ = 0;
  int64_t live_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Host tensors and inputs

// A dense NCHW float tensor owned by the caller: network inputs and outputs.
struct HostTensor {
  Shape shape;
  std::vector<float> values;

  HostTensor() = default;
  explicit HostTensor(const Shape& s) : shape(s), values(static_cast<size_t>(s.elements())) {}
};

// Seed of the default random input (same value as the zoo's weight seed, for one documented number).
inline constexpr uint64_t kInputSeed = 2106'14138;

// Uniform values in [-1, 1) from a 64-bit Mersenne Twister, identical with every standard library:
// about the range of an ImageNet-normalised image.
HostTensor random_input(const Shape& shape, uint64_t seed = kInputSeed);

// An 8-bit image, pixels interleaved row by row (RGB or gray).
struct Image {
  int64_t height = 0, width = 0;
  int channels = 3;  // 1 or 3
  std::vector<uint8_t> pixels;
};

// Reads a PNG or JPEG file (recognised by its signature, not its name) as 8-bit RGB. Throws an
// Error naming the path when the file cannot be read or decoded.
Image read_image(const std::filesystem::path& path);

// Network input of `shape` from an image: resized bilinearly (half-pixel centres, as PyTorch's
// interpolate with align_corners=False) to shape.h x shape.w, then for 3 channels scaled to [0,1] and
// normalised with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); for 1 channel
// converted to luma (ITU-R BT.601) in [0,1], as DnCNN expects. Every image of the batch is the same.
HostTensor image_input(const Image& image, const Shape& shape);
HostTensor load_image(const std::filesystem::path& path, const Shape& shape);

// A dense output (N, C, H, W) of image `batch_index` as an 8-bit picture: 3 channels as RGB, else the
// first channel as gray, each scaled from its [min, max] to [0, 255].
Image output_image(const HostTensor& output, int64_t batch_index = 0);
// Throws an Error naming the path when it cannot be written.
void write_png(const Image& image, const std::filesystem::path& path);

// ---------------------------------------------------------------------------------------------
// Executors

class Executor {
public:
  virtual ~Executor() = default;

  // One input per graph input and one output per graph output, in the graph's order, with the
  // graph's shapes (outputs pre-sized by the caller); throws an Error on any mismatch.
  virtual void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) = 0;
  // Convenience for one-off runs: allocates the outputs.
  std::vector<HostTensor> run(std::span<const HostTensor> inputs);

  virtual const MemoryAccount& memory() const = 0;
  // One line: kernels and layouts, e.g. "oneDNN 2.6.3 layer by layer: direct convolution, nChw16c
  // activations, 8 residual adds fused, 24 steps".
  virtual std::string describe() const = 0;
  virtual std::span<const Shape> input_shapes() const = 0;
  virtual std::span<const Shape> output_shapes() const = 0;
  // Per thread of a pipeline: seconds its last run() spent waiting for the other threads (filling
  // and draining the pipeline, or a step's input not yet produced). Empty where threads do not wait
  // for each other (one thread, or oneDNN's kernels splitting their own work).
  virtual std::vector<double> thread_waits() const { return {}; }
};

enum class ConvAlgorithm : uint8_t {
  Direct,
  // oneDNN's Winograd wherever it offers it (3x3, stride 1, not grouped or dilated, and only with
  // AVX-512 in oneDNN 2.6); direct elsewhere. Faster on 3x3-heavy nets, numerically looser.
  Winograd,
};
std::string_view to_string(ConvAlgorithm algorithm);

enum class ActivationLayout : uint8_t {
  Measure,  // compile both below and keep the one that runs faster on this machine
  Any,      // each primitive picks its preferred layout (format_tag::any); reorders where they differ
  // The ISA's native channel blocking for every activation with at least a block of channels:
  // nChw16c with AVX-512, nChw8c with AVX2.
  Blocked,
};
std::string_view to_string(ActivationLayout layout);

struct ReferenceOptions {
  int threads = 0;  // 0: every hardware thread
  ConvAlgorithm algorithm = ConvAlgorithm::Direct;
  ActivationLayout layout = ActivationLayout::Measure;
};

// The best layer-by-layer executor oneDNN offers: one primitive per op, created once; activations
// fused as eltwise post-ops; a residual Add whose other operand is dead afterwards fused as an
// in-place `sum` post-op of the convolution producing it; weights reordered once to the primitives'
// preferred layouts; all activations in one arena whose offsets come from tensor lifetimes (the
// peak of simultaneously live tensors, not their sum). Needs a graph with weights.
std::unique_ptr<Executor> compile_reference(const Graph& graph, const ReferenceOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Fused (row-streaming) execution of a plan

// Who computes a convolution's band of rows: oneDNN, or occam's own AVX2 micro-kernel (RowConv:
// stride 1 across, groups 1, channels in multiples of 8, no or ReLU/clip activation). Row-blocked
// rows (chains of dense convolutions one row per step, dncnn's 3x3 layers at 512x512) give oneDNN
// 2.6 only its 1xK kernel over K stacked rows, which runs slower than its KxK kernel on a whole
// tensor (83-87 against 91-95 GFLOP/s on one Zen 3 core); the own kernel runs the KxK window on the
// rows as they lie (97-99 GFLOP/s there). On NHWC bands the two are close alone and far apart in a
// pipeline of many convolutions (dncnn 256x256: 0.83 against 1.10 ms per 4-row band), and oneDNN's
// 1x1 kernels beat ours (mobilenet_v2).
enum class RowKernels : uint8_t {
  // Each convolution's largest band timed alone on both, the faster kept; then, for images of at
  // most half a second, that choice timed on whole images against the own kernel wherever it
  // applies, the faster kept.
  Measure,
  OneDnn,
  Own,  // wherever the own kernel covers the shape
};

// How the fused executor lays out tensors that whole-tensor steps hold (every op touching them runs
// its rows in one step) and the rows of chains of dense convolutions run one row per step.
enum class FusedLayout : uint8_t {
  // Compile both below, time an image with each (interleaved) and keep the faster, where an image
  // takes at most half a second on one thread and the NHWC program holds no more activation memory
  // (else Blocked). Which is faster depends on the CPU and the net: with AVX2, oneDNN 2.6's blocked
  // kernels ran resnet18's convolutions 15% faster than its NHWC ones; with AVX-512 its NHWC
  // (brgconv) kernels ran resnet18 at 224x224 0.98x the reference against 0.84x blocked, while
  // alexnet ran 1.08x blocked against 0.99x in NHWC.
  Measure,
  // The ISA's channel blocks (oneDNN's nChw8c with AVX2, nChw16c with AVX-512) wherever oneDNN has
  // a JIT kernel for every op touching the tensor in that layout.
  Blocked,
  Nhwc,  // NHWC everywhere, as line buffers hold rows
};

// Whether convolutions whose filters are large beside their output rows run several rows per step
// (step_bands: the whole tensor, else filter bytes at most 8x a step's output bytes, within the
// plan's capacity), so that their filters are read from memory less often, or one row per step like
// the rest of a streaming partition (whole-tensor and uniform bands are not affected).
enum class FilterBands : uint8_t {
  // Compile both, time an image with each (interleaved) and keep one row per step unless the bands
  // measure 3% faster (one row per step holds less memory and moves less main-memory traffic),
  // where an image takes at most half a second on one thread and some convolution gets such a band
  // (else On). On the AVX2 Zen 3 the bands helped resnet18's layer4 at small capacities; on the
  // AVX-512 machine (1 MiB L2 per core) mobilenet_v2 1024x1024 ran 1.09-1.12x the reference with
  // them and 1.10-1.16x without (nine runs each), in 2.4 MiB less memory.
  Measure,
  On,
  Off,
};

// How several threads share the work of a fused executor.
enum class ThreadSharing : uint8_t {
  // Compile both below, time an image with each (twice, interleaved) and keep the faster, where an
  // image takes at most half a second on one thread (else Pipeline). The choice depends on the net
  // and the machine: row pipelines of small steps favour Pipeline (mobilenet_v2 at 1024x1024),
  // heavy convolutions in partitions full of filters favour Kernels (vgg16, resnet50 at 224x224).
  Measure,
  // Each thread runs a contiguous group of each partition's ops (a software pipeline); steps of
  // several rows and whole channel-blocked tensors are shared between the threads.
  Pipeline,
  // One thread runs the steps in order and each oneDNN primitive splits its own work over the
  // threads (its OpenMP runtime); host kernels run on one thread.
  Kernels,
};

struct FusedOptions {
  int threads = 0;  // 0: every hardware thread
  // Coarsening: each op runs as many output rows per step as fit in band_bytes (at least one), which
  // gives its kernel calls more work at the price of longer-lived rows (the line buffers are
  // re-measured for the banded order). 0: automatic, while the banded line buffers and the filters
  // fit the plan's capacity: one row per step, except convolutions whose filters are large beside
  // their output rows (resnet18's layer4: 9 MiB of filters for 14 KiB rows), which run enough rows
  // per step that re-reading their filters costs at most 8x the bytes they write. With a plan that
  // has no capacity to spare, the steps are exactly Analysis::span_events and the line buffers
  // exactly closure().buffers. With several threads, a step of several rows is shared: each thread
  // computes a contiguous part of its rows.
  int64_t band_bytes = 0;
  // Threads run the ops of each partition as a software pipeline (each thread a contiguous group of
  // ops, balanced by their kernels' time measured at compile time); line buffers written by one
  // thread and read by another get two more rows, so that the threads overlap instead of taking
  // turns. Each partition reserves this share of its line-buffer bytes for those rows, whichever
  // cut the measurement picks, so that the footprint does not depend on timing; cuts whose rows do
  // not fit are not considered. 0: one thread runs everything.
  double pipeline_share = 0.05;
  // The time of each op (indexed by op, any unit) that the threads' split balances, instead of the
  // kernels' time measured at compile time: a split that does not depend on the machine's load,
  // for tests that walk through many cuts. Empty: measured.
  std::vector<double> op_costs = {};
  ThreadSharing sharing = ThreadSharing::Measure;  // with several threads
  RowKernels row_kernels = RowKernels::Measure;
  FusedLayout layout = FusedLayout::Measure;
  FilterBands filter_bands = FilterBands::Measure;
  // A depthwise convolution's window over a line buffer of exactly its kernel's rows (one output row
  // per step) is read from the buffer's start with the kernel rows rotated where it runs past the
  // end, instead of through the buffer's second mapping: the same bytes and work on the CPU, but
  // less footprint to a cache simulator that tags lines by virtual address (bench/traffic.sh), for a
  // copy of the depthwise weights per rotation. false: every window reads the second mapping.
  bool rotate_wrapping_windows = true;
  // Line buffers of tensors that one thread writes and reads share bytes where no step falls
  // between the production and the last read of a row of each (SpanSchedule::packed_rings): a
  // depthwise output row lives from its step to the projection's. With several threads, decided
  // once the threads' split is known (the block keeps its first size; fewer of its bytes are
  // touched). false: line buffers share bytes only between tensors never in use at once.
  bool share_idle_line_buffers = true;
};

// Runs every partition of `plan` as a row-streaming pipeline in the order of
// Analysis::span_events: each op reads its input rows from a circular line buffer sized by the
// closure (mapped twice back to back, so that a window of rows is one dense NHWC band) and writes
// its output rows into the next one. Only partition boundaries are held whole, in one arena whose
// offsets come from the partitions' lifetimes; the network input is loaded row by row just in time
// and the output stored row by row. Convolutions and poolings are oneDNN primitives created once per
// band shape (top edge, middle, bottom edge); reductions, elementwise ops and Concat are host
// kernels on rows. Images of a batch stream one after another. The plan must have been made for
// `graph` with 4-byte elements at row granularity (plan_for_execution).
std::unique_ptr<Executor> compile_fused(const Graph& graph, const Plan& plan, const FusedOptions& options = {});

// What a cache simulator that tags lines by virtual address (valgrind's) sees of the fused
// executors' line buffers and boundaries in this process: the pages touched so far through each
// mapping of their memory files. A line buffer's pages are mapped twice, back to back; a page table
// entry exists only for a page accessed through that very mapping, so the present pages of the
// second mappings are what windows read past a buffer's end, the same memory as the first
// mappings' (a physically tagged cache holds it once) but lines of their own to such a simulator.
// Read from Linux's /proc/self/maps and /proc/self/pagemap; zeros where those cannot be read.
struct MappedPages {
  int64_t first_bytes = 0;   // first (or only) mappings: the memory itself
  int64_t second_bytes = 0;  // second mappings of a range: seen again only by a virtual tag
};
MappedPages touched_line_buffer_pages();

// Planning for execution on this CPU: 4-byte elements, row granularity.
AnalysisOptions execution_analysis_options();
Plan plan_for_execution(const Graph& graph, int64_t capacity_bytes, int64_t batch = 1);
// Every op in one partition (e.g. for one pipeline stage made with extract_span).
Plan single_partition_plan(const Graph& graph);

// What a plan says a fused execution holds at once (per image, caller inputs and outputs not
// counted): for each partition, its line buffers plus the boundary tensors alive while it runs;
// the largest over partitions.
struct PlanMemory {
  // One circular buffer per tensor (closure().buffers, or as banded), placed by lifetime so that
  // buffers never alive at once share bytes.
  int64_t line_buffer_bytes = 0;
  int64_t closure_bytes = 0;      // the peak of live rows: closure().bytes
  int64_t boundary_bytes = 0;     // boundary tensors alive at once
  int64_t peak_bytes = 0;         // max over partitions of line buffers + live boundaries
  // The same with each line buffer rounded up to whole pages, as the executor maps it (twice, so
  // that windows never wrap): what rows of a few KiB cost beyond the plan.
  int64_t page_peak_bytes = 0;
  int64_t closure_peak_bytes = 0; // max over partitions of closure + live boundaries
};
// Line buffers under the bands the fused executor takes with `options` (FusedOptions::band_bytes).
PlanMemory plan_memory(const Graph& graph, const Plan& plan, const FusedOptions& options = {});

struct MemoryLimitedPlan {
  Plan plan;
  int64_t peak_bytes = 0;  // the compiled fused executor's measured activation peak
  int candidates = 0;      // distinct plans considered
  // FusedOptions::band_bytes the peak was measured with: the caller's, or 1 (one row per step)
  // where the automatic bands (whole tensors where they fit the capacity) exceeded the limit.
  int64_t band_bytes = 0;
};
// The least-traffic plan (over capacities from the whole network down to a few KiB) whose fused
// executor, compiled with `options` (automatic bands, else one row per step), has a measured
// activation peak within limit_bytes. Throws an
// Error naming the smallest peak any plan reaches when none fits.
MemoryLimitedPlan plan_under_memory_limit(const Graph& graph, int64_t limit_bytes, const FusedOptions& options = {});

// ---------------------------------------------------------------------------------------------
// Measuring and reading results

struct RunTimes {
  double min_ms = 0;
  double median_ms = 0;
  int runs = 0;
};
// Runs `executor` once to warm up, then `runs` times, timing each run.
RunTimes time_runs(Executor& executor, std::span<const HostTensor> inputs, std::span<HostTensor> outputs,
                   int runs);

// max |a - b| / max |b|: the error of `a` relative to the scale of the reference `b`.
double max_relative_error(const HostTensor& a, const HostTensor& b);

struct ClassScore {
  int64_t index = 0;
  float score = 0;
};
// The k highest scores of image `batch_index` of a classifier output (N, classes, 1, 1), best first.
std::vector<ClassScore> top_k(const HostTensor& output, int k, int64_t batch_index = 0);

}  // namespace occam
