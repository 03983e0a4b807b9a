// The in-process pipeline. Equality tests compare with single-process runs of the executor kind the
// stages use: by default the fused executor with one thread (StageOptions' defaults), on the whole
// graph running every partition of the plan in turn (compile_whole; max relative error <= 1e-6, in
// fact 0), and on the same stages one after another (run_stages_in_sequence; bit for bit). The
// reference executor (oneDNN layer by layer, one thread, blocked layout) is tested as well.
#include "occam/error.hpp"
#include "pipeline/pipeline_test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>

namespace occam {
namespace {

using testing::random_stream;
using testing::single_process_outputs;
using testing::worst_relative_error;

// A stage's executor may run its partition with other kernels than the one-process executor does
// (a stage's boundary tensors are caller tensors in NCHW, where the whole reference executor keeps
// them channel-blocked; fused stages run NHWC throughout, as StageOptions says, and agree), so sums
// are rounded in another order; the stages run in sequence must match exactly. A fused executor's
// depthwise window that wraps in a line buffer of exactly its rows sums its kernel rows in the
// buffer's order (FusedOptions::rotate_wrapping_windows), which depends on the buffers' sizes, and
// those differ between a stage and the whole graph: mobilenet_v2 64x64's by 1.7e-5 so.
constexpr double kTolerance = 1e-4;

// Wraps a stage's executor to observe or disturb each run.
class Instrumented final : public Executor {
public:
  Instrumented(std::unique_ptr<Executor> inner, std::function<void()> before, std::function<void()> after = {})
      : inner_(std::move(inner)), before_(std::move(before)), after_(std::move(after)) {}

  using Executor::run;
  void run(std::span<const HostTensor> inputs, std::span<HostTensor> outputs) override {
    before_();
    inner_->run(inputs, outputs);
    if (after_) after_();
  }
  const MemoryAccount& memory() const override { return inner_->memory(); }
  std::string describe() const override { return inner_->describe(); }
  std::span<const Shape> input_shapes() const override { return inner_->input_shapes(); }
  std::span<const Shape> output_shapes() const override { return inner_->output_shapes(); }

private:
  std::unique_ptr<Executor> inner_;
  std::function<void()> before_, after_;
};

// One copy of the stage's filters per replica, and for a fused stage's depthwise convolutions a
// copy per rotation of their kernel rows (FusedOptions::rotate_wrapping_windows: for a 3x3 kernel
// two for the middle windows and one for each edge).
void expect_weights_are_partition_filters(const ThreadPipeline& pipeline, const PipelineRun& run) {
  for (const ReplicaReport& r : run.replicas) {
    const StageRoute& stage = pipeline.layout().stages[static_cast<size_t>(r.stage)];
    int64_t depthwise = 0;
    for (const Op& op : stage.graph.ops) {
      const bool rotates = op.kind == OpKind::Conv && op.groups > 1 && op.groups == stage.graph.input_of(op).shape.c && op.window.kernel_h > 1;
      if (rotates) depthwise += static_cast<int64_t>(op.weight->size() * sizeof(float)) * 2 * (op.window.kernel_h - 1);
    }
    const auto filters = static_cast<double>(stage.filter_bytes);
    EXPECT_GE(static_cast<double>(r.weight_bytes), 0.95 * filters) << "stage " << r.stage << " replica " << r.replica;
    EXPECT_LE(static_cast<double>(r.weight_bytes), 1.05 * filters + static_cast<double>(depthwise))
        << "stage " << r.stage << " replica " << r.replica;
  }
}

TEST(ThreadPipeline, RoutingNetWithReplicasEqualsSingleProcess) {
  const Graph graph = testing::routing_net();
  const Plan plan = testing::plan_with_starts(graph, {0, 1, 2, 3});
  const auto batches = random_stream(graph, 16);
  PipelineOptions options;
  options.replicas = {1, 2, 1, 3};
  ThreadPipeline pipeline(graph, plan, options);
  const PipelineRun run = pipeline.run(batches);
  EXPECT_LE(worst_relative_error(run.outputs, single_process_outputs(graph, plan, options.stage, batches)), kTolerance);
  EXPECT_EQ(worst_relative_error(run.outputs, run_stages_in_sequence(graph, plan, batches, options).outputs), 0.0);
  ASSERT_EQ(run.replicas.size(), 7u);
  // Replica j of a stage with r replicas takes mini-batches j, j + r, ...: 16 split as 6, 5, 5 over three.
  EXPECT_EQ(run.replicas[4].batches, 6);
  EXPECT_EQ(run.replicas[5].batches, 5);
  EXPECT_EQ(run.replicas[6].batches, 5);
  EXPECT_EQ(run.images, 16);
}

TEST(ThreadPipeline, Resnet18SixtyFourImagesEqualSingleProcessWithAndWithoutStap) {
  const Graph graph = testing::zoo_net("resnet18", 64);
  const Plan plan = testing::plan_at(graph, int64_t{24} << 20);
  ASSERT_GE(plan.partitions.size(), 2u);
  ASSERT_LE(plan.partitions.size(), 4u);
  const auto batches = random_stream(graph, 64);
  const auto expected = single_process_outputs(graph, plan, StageOptions{}, batches);

  ThreadPipeline plain(graph, plan, {});
  const PipelineRun run = plain.run(batches);
  EXPECT_LE(worst_relative_error(run.outputs, expected), kTolerance);
  expect_weights_are_partition_filters(plain, run);

  PipelineOptions stap;
  const auto stages = static_cast<int>(plan.partitions.size());
  stap.replicas = choose_replicas(predict_stage_seconds(graph, plan, cpu_core_hardware(), 1), stages + 2);
  ASSERT_GT(std::accumulate(stap.replicas.begin(), stap.replicas.end(), 0), stages);
  ThreadPipeline replicated(graph, plan, stap);
  const PipelineRun replicated_run = replicated.run(batches);
  EXPECT_LE(worst_relative_error(replicated_run.outputs, expected), kTolerance);
  expect_weights_are_partition_filters(replicated, replicated_run);
}

TEST(ThreadPipeline, MobilenetMiniBatchesOfFourEqualSingleProcess) {
  const Graph graph = testing::zoo_net("mobilenet_v2", 64, 4);
  const Plan plan = testing::plan_at(graph, int64_t{4} << 20);
  ASSERT_GE(plan.partitions.size(), 2u);
  const auto batches = random_stream(graph, 16);
  PipelineOptions options;
  options.replicas.assign(plan.partitions.size(), 1);
  options.replicas[0] = 2;
  ThreadPipeline pipeline(graph, plan, options);
  const PipelineRun run = pipeline.run(batches);
  EXPECT_EQ(run.images, 64);
  EXPECT_LE(worst_relative_error(run.outputs, single_process_outputs(graph, plan, options.stage, batches)), kTolerance);
  expect_weights_are_partition_filters(pipeline, run);
}

StageOptions reference_stages() {
  StageOptions options;
  options.executor = StageExecutor::Reference;
  return options;
}

// Cuts where the reference executor computes every stage exactly as it computes the same ops inside
// the whole graph; stage 0 passes the skip of layer2.0 to stage 1 beside its main path.
TEST(ThreadPipeline, ReferenceStagesEqualTheWholeGraphAtCutsThatKeepItsKernels) {
  const Graph graph = testing::zoo_net("resnet18", 64);
  const Plan plan = testing::plan_cut_before(graph, {"layer2.0.conv2", "layer4.0.conv1"});
  const auto batches = random_stream(graph, 16);
  PipelineOptions options;
  options.stage = reference_stages();
  options.replicas = {2, 1, 1};
  ThreadPipeline pipeline(graph, plan, options);
  ASSERT_EQ(pipeline.layout().stages[0].outgoing.size(), 2u);
  const PipelineRun run = pipeline.run(batches);
  EXPECT_LE(worst_relative_error(run.outputs, single_process_outputs(graph, plan, options.stage, batches)), kTolerance);
  expect_weights_are_partition_filters(pipeline, run);
}

// At other cuts the reference executor rounds a stage differently from the whole graph (see
// run_stages_in_sequence); whatever the cuts and the executor, the pipeline itself must add
// nothing: its outputs equal those of the same stages run in sequence, bit for bit.
TEST(ThreadPipeline, AnyCutIsBitExactAgainstTheSameStagesInSequence) {
  const Graph resnet = testing::zoo_net("resnet18", 64);
  const Graph mobilenet = testing::zoo_net("mobilenet_v2", 64, 2);
  struct Case {
    const Graph& graph;
    Plan plan;
    std::vector<int> replicas;
  };
  const Case cases[] = {
      {resnet, testing::plan_cut_before(resnet, {"maxpool", "layer4.0.add"}), {1, 2, 2}},
      {resnet, testing::plan_at(resnet, int64_t{24} << 20), {}},
      {mobilenet, testing::plan_at(mobilenet, int64_t{4} << 20), {}},
  };
  for (const StageOptions& stage : {StageOptions{}, reference_stages()}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(fmt::format("{} in {} partitions, {} stages", c.graph.name, c.plan.partitions.size(),
                               to_string(stage.executor)));
      const auto batches = random_stream(c.graph, 8);
      PipelineOptions options;
      options.stage = stage;
      options.replicas = c.replicas;
      ThreadPipeline pipeline(c.graph, c.plan, options);
      const PipelineRun run = pipeline.run(batches);
      EXPECT_EQ(worst_relative_error(run.outputs, run_stages_in_sequence(c.graph, c.plan, batches, options).outputs),
                0.0);
      expect_weights_are_partition_filters(pipeline, run);
    }
  }
}

TEST(ThreadPipeline, BoundedQueuesHoldBackAFastStage) {
  const Graph graph = testing::routing_net();
  std::atomic<int> started_first{0}, finished_second{0}, furthest_ahead{0};
  PipelineOptions options;
  options.factory = [&](const Graph& stage_graph, int stage) -> std::unique_ptr<Executor> {
    auto inner = compile_stage(stage_graph, StageOptions{});
    if (stage == 0) {
      return std::make_unique<Instrumented>(std::move(inner), [&] {
        const int ahead = ++started_first - finished_second.load();
        int seen = furthest_ahead.load();
        while (ahead > seen && !furthest_ahead.compare_exchange_weak(seen, ahead)) {
        }
      });
    }
    return std::make_unique<Instrumented>(
        std::move(inner), [] { std::this_thread::sleep_for(std::chrono::milliseconds(2)); }, [&] { ++finished_second; });
  };
  ThreadPipeline pipeline(graph, testing::plan_with_starts(graph, {0, 3}), options);
  pipeline.run(random_stream(graph, 40));
  // Stage 0 may start mini-batch i only once i - 1 is in the queue of 2 (r0 + r1), which holds only
  // mini-batches below (lowest not taken by stage 1) + 2: at most 4 runs ahead of stage 1's finished ones.
  EXPECT_LE(furthest_ahead.load(), 4);
  EXPECT_GE(furthest_ahead.load(), 3);  // and it does run ahead as far as the queue lets it
  EXPECT_EQ(finished_second.load(), 40);
}

TEST(ThreadPipeline, FailingStageStopsEveryStageAndNamesItself) {
  const Graph graph = testing::routing_net();
  std::atomic<int> runs{0};
  PipelineOptions options;
  options.replicas = {2, 1};
  options.factory = [&](const Graph& stage_graph, int stage) -> std::unique_ptr<Executor> {
    auto inner = compile_stage(stage_graph, StageOptions{});
    if (stage != 1) return inner;
    return std::make_unique<Instrumented>(std::move(inner), [&] {
      if (++runs == 5) fail("injected fault");
    });
  };
  ThreadPipeline pipeline(graph, testing::plan_with_starts(graph, {0, 3}), options);
  const auto start = std::chrono::steady_clock::now();
  try {
    pipeline.run(random_stream(graph, 200));
    ADD_FAILURE() << "a failing stage must make the run throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("stage 1 (Add3 .. Conv4), replica 0, mini-batch 4: injected fault"), std::string::npos)
        << message;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  EXPECT_EQ(runs.load(), 5);  // stage 1 ran nothing after the failure
}

TEST(ThreadPipeline, BadInputStopsTheRunAndNamesTheMiniBatch) {
  const Graph graph = testing::routing_net();
  auto batches = random_stream(graph, 6);
  batches[3][0] = random_input({1, 3, 12, 12});
  ThreadPipeline pipeline(graph, testing::plan_with_starts(graph, {0, 3}), {});
  int64_t delivered = 0;
  try {
    pipeline.run(source_of(batches), [&](int64_t batch, std::span<const HostTensor>) { delivered = batch + 1; });
    ADD_FAILURE() << "a wrong input shape must stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mini-batch 3 input 0 has shape 1x3x12x12 (432 values), expected 1x4x12x12"),
              std::string::npos)
        << e.what();
  }
  EXPECT_LE(delivered, 3);  // nothing at or after the bad mini-batch came out
}

TEST(ThreadPipeline, StreamsFromASourceIntoASinkInInputOrder) {
  const Graph graph = testing::routing_net();
  PipelineOptions options;
  options.replicas = {3, 2};
  const Plan plan = testing::plan_with_starts(graph, {0, 2});
  ThreadPipeline pipeline(graph, plan, options);
  const auto executor = compile_whole(graph, plan, options.stage);
  std::vector<int64_t> order;
  double worst = 0.0;
  const BatchSource source{50, [](int64_t batch, std::vector<HostTensor>& inputs) {
                             inputs[0] = random_input(inputs[0].shape, static_cast<uint64_t>(batch));
                           }};
  const PipelineRun run = pipeline.run(source, [&](int64_t batch, std::span<const HostTensor> outputs) {
    order.push_back(batch);
    const std::vector<HostTensor> expected = executor->run(std::vector{random_input({1, 4, 12, 12}, static_cast<uint64_t>(batch))});
    for (size_t o = 0; o < expected.size(); ++o) worst = std::max(worst, max_relative_error(outputs[o], expected[o]));
  });
  std::vector<int64_t> expected_order(50);
  std::iota(expected_order.begin(), expected_order.end(), int64_t{0});
  EXPECT_EQ(order, expected_order);
  EXPECT_LE(worst, kTolerance);
  EXPECT_TRUE(run.outputs.empty());
  EXPECT_EQ(run.batches, 50);
}

TEST(ThreadPipeline, ReplicaCountsMustMatchTheStages) {
  const Graph graph = testing::routing_net();
  PipelineOptions options;
  options.replicas = {1};
  EXPECT_THROW(ThreadPipeline(graph, testing::plan_with_starts(graph, {0, 3}), options), Error);
  options.replicas = {1, 0};
  EXPECT_THROW(ThreadPipeline(graph, testing::plan_with_starts(graph, {0, 3}), options), Error);
}

TEST(ThreadPipeline, RunsAgainWithTheSameResidentStages) {
  const Graph graph = testing::routing_net();
  ThreadPipeline pipeline(graph, testing::plan_with_starts(graph, {0, 2, 4}), {});
  const auto batches = random_stream(graph, 5);
  const PipelineRun first = pipeline.run(batches);
  const PipelineRun second = pipeline.run(batches);
  EXPECT_EQ(worst_relative_error(second.outputs, first.outputs), 0.0);
  EXPECT_TRUE(pipeline.run({}).outputs.empty());
}

}  // namespace
}  // namespace occam
