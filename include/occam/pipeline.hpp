// Pipelined execution of a plan: each partition is a stage (one chip) that compiles its own
// executor once, keeps its filters resident and runs mini-batch after mini-batch while a stream of
// them flows through. Stages run as threads of one process (ThreadPipeline) or as MPI ranks
// (run_mpi_pipeline), with STAP replicas of a stage taking staggered mini-batches: replica j of a
// stage with r replicas runs mini-batches j, j + r, j + 2r, ...
//
// Tensors travel down the pipeline as bundles. The bundle leaving stage k holds every tensor live
// across the cut after partition k: produced by stage k or earlier (or a network input) and read
// by a later stage, or a network output. A skip connection that jumps over several cuts is carried
// by every stage in between, as on a chain of chips with one link each; the last bundle holds the
// network outputs.
#pragma once

#include "occam/exec.hpp"
#include "occam/plan.hpp"
#include "occam/sim.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace occam {

// ---------------------------------------------------------------------------------------------
// Stages and their routes

enum class StageExecutor : uint8_t {
  // The fused row-streaming executor, the stage graph as one partition: a stage computes exactly
  // what the same partition computes in the fused run of the whole plan, bit for bit.
  Fused,
  // The oneDNN layer-by-layer executor. A stage rounds differently from the whole graph at some
  // cuts (about 1e-6 of the logits): see run_stages_in_sequence.
  Reference,
};
std::string_view to_string(StageExecutor executor);

// How a stage's executor is built: one thread per stage by default, since stages run side by side;
// convolutions on oneDNN's kernels with filter bands, not on choices timed at compile time
// (RowKernels::Measure, FilterBands::Measure), so that every compile of a stage computes the same
// bits (pipelines are checked against their stages run in sequence, bit for bit); and in NHWC (FusedLayout::Nhwc, not a timed choice either),
// so that a convolution runs the same oneDNN kernel in its stage, where it reads or writes the
// stage's NHWC inputs and outputs, as in the whole graph, where the channel-blocked layout would
// take it (with AVX-512 oneDNN 2.6's blocked and NHWC kernels sum in different orders: resnet18
// cut in three stages gave 1.3e-6 against the whole graph blocked, 0 in NHWC).
struct StageOptions {
  StageExecutor executor = StageExecutor::Fused;
  FusedOptions fused = [] {
    FusedOptions options{1, 0};
    options.row_kernels = RowKernels::OneDnn;
    options.layout = FusedLayout::Nhwc;
    options.filter_bands = FilterBands::On;
    return options;
  }();
  ReferenceOptions reference{1, ConvAlgorithm::Direct, ActivationLayout::Blocked};
};

// The executor one stage runs, from its graph (extract_span): the one place that chooses the
// executor kind, so that pipelines and their baselines always agree.
std::unique_ptr<Executor> compile_stage(const Graph& stage_graph, const StageOptions& options);
// The same executor kind on the whole graph in one process, the single-process baseline of a
// pipeline: the fused executor running every partition of `plan` in turn, or the reference executor.
std::unique_ptr<Executor> compile_whole(const Graph& graph, const Plan& plan, const StageOptions& options);

// Builds the executor of stage `stage` from its graph; a replacement for compile_stage (tests use
// it to inject failing stages).
using StageFactory = std::function<std::unique_ptr<Executor>(const Graph& stage_graph, int stage)>;

struct StageRoute {
  OpId first_op = 0, last_op = 0;
  std::string label;  // "first_op_name .. last_op_name"
  Graph graph;        // extract_span(graph, first_op, last_op): what the stage compiles
  // Per input of `graph`: its index in the incoming bundle.
  std::vector<int> inputs;
  // Per entry of the outgoing bundle: an output of `graph` (index into its outputs) or an entry of
  // the incoming bundle carried through (index into it).
  struct Source {
    bool carried = false;
    int index = 0;
  };
  std::vector<Source> outgoing;
  std::vector<TensorId> outgoing_tensors;  // ids in the whole graph, ascending
  std::vector<Shape> outgoing_shapes;
  // The partition's filters at 4 bytes per element (resident plus streamed: a CPU stage keeps them
  // all): what the stage's executor should hold as weights.
  int64_t filter_bytes = 0;
};

struct PipelineLayout {
  std::string model;                    // graph source, for messages
  std::vector<Shape> input_shapes;      // the bundle entering stage 0: network inputs in graph order
  std::vector<StageRoute> stages;
  std::vector<int> outputs;             // per network output (graph order): its index in the last bundle
};

// Routes of `plan`'s partitions through `graph`. Throws an Error if the plan was not made for this
// graph or its partitions do not cover the ops in order.
PipelineLayout pipeline_layout(const Graph& graph, const Plan& plan);

// ---------------------------------------------------------------------------------------------
// Predictions: the simulator's stage times for this CPU

// This machine's cores as the simulator's chips (one core per stage), from the measurements in
// DESIGN.md: FP32, 16 FMA per cycle at an effective 3.66 GHz (117 GFLOP/s per core), 27 GB/s per
// core (STREAM triad, one thread), 1 MiB of L2 per core as on-chip memory, 2 chips.
Hardware cpu_core_hardware();

// Predicted seconds per mini-batch of `images` images for each stage of `plan` on `hardware`, FP32,
// compute and DRAM traffic overlapped, boundaries through DRAM.
std::vector<double> predict_stage_seconds(const Graph& graph, const Plan& plan, const Hardware& hardware,
                                          int64_t images);

// Replicas per stage: STAP (the simulator's greedy) on `stage_seconds` within `chip_budget` chips.
std::vector<int> choose_replicas(std::span<const double> stage_seconds, int chip_budget);

// The pipeline's period (max over stages of time / replicas) divided by the period it would have
// if its work were spread evenly over all its chips (sum of times / sum of replicas): 1 is a
// perfectly balanced pipeline; without replicas, the slowest stage over the mean stage.
double stage_imbalance(std::span<const double> stage_seconds, std::span<const int> replicas);

// ---------------------------------------------------------------------------------------------
// Measurements

// What one replica of one stage did during a run.
struct ReplicaReport {
  int stage = 0;
  int replica = 0;
  int rank = -1;  // MPI rank (-1 in a thread pipeline)
  int pid = 0;
  int64_t batches = 0;
  double busy_s = 0.0;          // total executor time
  double median_batch_s = 0.0;  // executor time per mini-batch
  int64_t weight_bytes = 0;     // resident weights of the replica's executor (its MemoryAccount)
  int64_t activation_bytes = 0; // peak activations + scratchpad of the replica's executor
};

// ---------------------------------------------------------------------------------------------
// Streams

// A stream of `count` mini-batches, produced one at a time as the pipeline has room for them, so
// that memory does not grow with the stream. `fill` receives the network inputs of one mini-batch
// pre-sized with the graph's input shapes (in graph order) and fills in their values.
struct BatchSource {
  int64_t count = 0;
  std::function<void(int64_t batch, std::vector<HostTensor>& inputs)> fill;
};
// Copies of `batches` (each the network inputs of one mini-batch, in graph order).
BatchSource source_of(std::span<const std::vector<HostTensor>> batches);

// Receives the network outputs (graph order) of each mini-batch, in input order. They are valid
// during the call only.
using BatchSink = std::function<void(int64_t batch, std::span<const HostTensor> outputs)>;

struct PipelineRun {
  // Per mini-batch, in input order: the network outputs in graph order; only from the overloads
  // that take the whole stream as a span.
  std::vector<std::vector<HostTensor>> outputs;
  std::vector<ReplicaReport> replicas;  // stage by stage; on MPI ranks other than 0 only their own
  int64_t batches = 0;
  int64_t images = 0;
  double wall_s = 0.0;  // first input handed in to last output taken out
  double images_per_s() const { return wall_s > 0.0 ? static_cast<double>(images) / wall_s : 0.0; }
};

// Median per stage of the replicas' median_batch_s: the measured time of each stage, unreplicated.
std::vector<double> measured_stage_seconds(const PipelineRun& run, int stages);

struct PipelineOptions {
  StageOptions stage;
  std::vector<int> replicas;  // per stage, >= 1 each; empty: one replica per stage
  StageFactory factory;       // empty: compile_stage(stage_graph, stage)
};

// ---------------------------------------------------------------------------------------------
// In one process

// The stages one after another in the calling thread, mini-batch by mini-batch, with the same
// executors and routes as the pipelines (options.replicas is ignored): the baseline that a pipeline
// must match bit for bit, whatever the executor. Against compile_whole, the fused executor matches
// too; the reference executor rounds differently where a stage cannot keep the whole graph's
// layouts and fusions: after a layout-following op (pooling) on a stage input, at a residual Add
// whose other operand is a stage input, and at a cut between a convolution and the Add it fuses.
PipelineRun run_stages_in_sequence(const Graph& graph, const Plan& plan, const BatchSource& source,
                                   const BatchSink& sink, const PipelineOptions& options);
PipelineRun run_stages_in_sequence(const Graph& graph, const Plan& plan, std::span<const std::vector<HostTensor>> batches,
                                   const PipelineOptions& options);

// One thread per replica.

// Compiles every replica's executor up front (each replica holds its own copy of its stage's
// filters, as a chip would). Between stage k - 1 and stage k is a bounded queue of
// r[k-1] + r[k] mini-batches: a producer waits while it is full (back-pressure), so memory does not
// grow with the stream, and the queue hands mini-batch i to the replica that owns it, so outputs
// come out in input order whatever the replicas' speeds.
class ThreadPipeline {
public:
  ThreadPipeline(const Graph& graph, const Plan& plan, PipelineOptions options);
  ~ThreadPipeline();
  ThreadPipeline(const ThreadPipeline&) = delete;
  ThreadPipeline& operator=(const ThreadPipeline&) = delete;

  // Streams `source` through the stages into `sink`; the source is called from a feeder thread and
  // the sink from the calling thread. If a stage, the source or the sink throws, or a mini-batch's
  // inputs do not have the graph's shapes, every thread stops and this throws an Error naming the
  // stage, replica and mini-batch; the sink has then seen only the mini-batches before the failure.
  PipelineRun run(const BatchSource& source, const BatchSink& sink);
  // The same over a stream held in memory, its outputs returned in PipelineRun::outputs.
  PipelineRun run(std::span<const std::vector<HostTensor>> batches);

  const PipelineLayout& layout() const;
  std::span<const int> replicas() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Across processes and hosts: one MPI rank per replica

// True when this process was started by mpirun (OpenMPI's OMPI_COMM_WORLD_SIZE, or a PMI/PMIx
// launcher's size variable is set): only then may MPI be initialised, so that the plain command
// line works without a launcher.
bool launched_by_mpirun();

// MPI for the lifetime of the object (MPI_THREAD_FUNNELED: only the main thread calls MPI; oneDNN's
// OpenMP threads do not).
class MpiSession {
public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  std::string host() const;
  // Collective: every rank passes its own failure ("" for none). If any rank failed, every rank
  // throws an Error with the message of the lowest failing rank, prefixed by that rank; so a
  // setup error that only one rank sees (a file missing on its host) stops all of them.
  void agree(const std::string& error) const;

private:
  int rank_ = 0;
  int size_ = 1;
};

struct MpiPipelineOptions {
  PipelineOptions pipeline;
  // A rank that waits longer than this for a peer (a stalled or stopped rank) stops the run.
  double stall_timeout_s = 60.0;
  // Called on every stage rank once its executor is compiled, before the stream starts.
  std::function<void(const ReplicaReport&, const StageRoute&)> on_ready;
};

// Collective over MPI_COMM_WORLD. Rank 0 feeds the inputs and collects the outputs; ranks 1.. are
// the replicas, stage after stage (stage 0's replicas first), each compiling only its stage's
// executor and so holding only its partition's filters. Needs 1 + sum(replicas) ranks or more
// (extra ranks stay idle). Boundary bundles travel by non-blocking point-to-point messages; a stage
// rank receives its next mini-batch and sends its previous result while it computes (two receive
// and two send buffers), and rank 0 keeps at most 2 x sum(replicas) mini-batches in flight, so no
// queue grows with the stream. `source` and `sink` are used on rank 0 only (others may pass empty ones).
// `graph` is taken by value so that every rank can drop the weights of the partitions it does not
// run: a stage rank then holds only its partition's filters (its executor's copy, and its stage
// graph's, which the fused executor reads in part while it runs).
// Setup errors are agreed on (see MpiSession::agree). A failure during the stream (an exception,
// or a peer silent for stall_timeout_s) prints "occam: error: rank R (stage S, replica J): ..." to
// stderr and aborts the job with MPI_Abort, the only way to release peers blocked on it; a killed
// rank makes mpirun stop the job and name it.
PipelineRun run_mpi_pipeline(const MpiSession& session, Graph graph, const Plan& plan,
                             const BatchSource& source, const BatchSink& sink, const MpiPipelineOptions& options);

}  // namespace occam
