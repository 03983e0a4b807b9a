// The fused row-streaming executor: its schedule is the analysis' schedule, its outputs are the
// reference executor's (and the naive oracle's) under every partitioning, and its measured memory
// is what the plan says.
#include "analysis/rows.hpp"
#include "exec/fused_schedule.hpp"
#include "exec/ring.hpp"
#include "exec/onednn.hpp"
#include "exec/row_conv.hpp"
#include "exec/op_cases.hpp"
#include "exec/test_graphs.hpp"
#include "occam/error.hpp"
#include "support/graphs.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <tuple>

namespace occam {
namespace {

constexpr double kTolerance = 1e-4;

// Seeded random weights for the weightless graphs of tests/support.
Graph with_weights(Graph graph, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto random = [&](size_t count, float bound) {
    std::uniform_real_distribution<float> u(-bound, bound);
    auto values = std::make_shared<std::vector<float>>(count);
    for (float& v : *values) v = u(rng);
    return values;
  };
  for (Op& op : graph.ops) {
    if (op.kind != OpKind::Conv) continue;
    const int64_t fan_in = graph.input_of(op).shape.c / op.groups * op.window.kernel_h * op.window.kernel_w;
    op.weight = random(static_cast<size_t>(op.out_channels * fan_in), std::sqrt(3.0f / static_cast<float>(fan_in)));
    op.bias = random(static_cast<size_t>(op.out_channels), 0.2f);
  }
  return graph;
}

// Plans from "everything in one partition" down to "every op that fits alone on its own": the
// capacities between the largest single op and the whole network, deduplicated.
std::vector<Plan> plans_across_capacities(const Graph& graph) {
  const Analysis analysis(graph, execution_analysis_options());
  int64_t largest_op = 0;
  for (OpId o = 0; o < analysis.op_count(); ++o) {
    largest_op = std::max(largest_op, analysis.closure(o, o).bytes + analysis.op(o).filter_bytes);
  }
  const int64_t whole = analysis.closure(0, analysis.op_count() - 1).bytes + analysis.total_filter_bytes();
  std::vector<Plan> plans = {single_partition_plan(graph)};
  for (const double f : {0.6, 0.3, 0.1, 0.0}) {
    const auto capacity = static_cast<int64_t>(static_cast<double>(largest_op) + f * static_cast<double>(whole - largest_op));
    Plan plan = plan_for_execution(graph, capacity);
    const bool seen = std::any_of(plans.begin(), plans.end(), [&](const Plan& other) {
      return other.partitions.size() == plan.partitions.size() &&
             std::equal(plan.partitions.begin(), plan.partitions.end(), other.partitions.begin(),
                        [](const Partition& a, const Partition& b) { return a.first_op == b.first_op; });
    });
    if (!seen) plans.push_back(std::move(plan));
  }
  return plans;
}

double worst_error(const std::vector<HostTensor>& got, const std::vector<HostTensor>& expected) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, max_relative_error(got[i], expected[i]));
  return worst;
}

// ---------------------------------------------------------------------------------------------
// The schedule

// Roles under which the closure's accounting and the executor's coincide: every external input
// loaded just in time, every tensor leaving the span stored as soon as produced.
std::vector<exec::TensorRole> closure_roles(const Graph& graph, OpId first, OpId last) {
  std::vector<exec::TensorRole> roles(graph.tensors.size(), exec::TensorRole::None);
  const auto inside = [&](OpId o) { return o >= first && o <= last; };
  for (OpId o = first; o <= last; ++o) {
    for (TensorId t : graph.op(o).inputs) {
      if (!inside(graph.tensor(t).producer)) roles[static_cast<size_t>(t)] = exec::TensorRole::Loaded;
    }
    const TensorId out = graph.op(o).output;
    const auto& readers = graph.tensor(out).consumers;
    const bool leaves = graph.is_output(out) || std::any_of(readers.begin(), readers.end(), [&](OpId c) { return !inside(c); });
    roles[static_cast<size_t>(out)] = leaves ? exec::TensorRole::Stored : exec::TensorRole::Ring;
  }
  return roles;
}

void expect_schedule_is_the_closure(const Graph& graph, const Plan& plan) {
  const Analysis analysis(graph, execution_analysis_options());
  for (const Partition& p : plan.partitions) {
    const std::vector<int> one_row(static_cast<size_t>(p.last_op - p.first_op + 1), 1);
    const auto roles = closure_roles(graph, p.first_op, p.last_op);
    const exec::SpanSchedule schedule = exec::schedule_span(analysis, p.first_op, p.last_op, one_row, roles);
    std::vector<RowEvent> computed;
    for (const exec::FusedStep& s : schedule.steps) {
      if (s.kind == exec::StepKind::Compute) computed.push_back({s.op, s.first});
    }
    const std::vector<RowEvent> events = analysis.span_events(p.first_op, p.last_op);
    ASSERT_EQ(computed.size(), events.size()) << graph.name;
    for (size_t i = 0; i < events.size(); ++i) {
      ASSERT_EQ(computed[i].op, events[i].op) << graph.name << " step " << i;
      ASSERT_EQ(computed[i].row, events[i].row) << graph.name << " step " << i;
    }
    std::map<TensorId, int64_t> expected, got;
    for (const LineBuffer& b : analysis.closure(p.first_op, p.last_op).buffers) expected[b.tensor] = b.rows;
    for (const LineBuffer& b : schedule.rings) got[b.tensor] = b.rows;
    EXPECT_EQ(got, expected) << graph.name << " ops [" << p.first_op << ", " << p.last_op << "]";
  }
}

TEST(FusedSchedule, OneRowStepsAreTheAnalysisScheduleAndItsLineBuffers) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 30; ++i) {
    const Graph graph = i % 2 ? testing::random_dag(rng, 12) : testing::random_chain(rng, 8);
    for (const Plan& plan : plans_across_capacities(graph)) expect_schedule_is_the_closure(graph, plan);
  }
  for (const char* model : {"mobilenet_v2", "googlenet", "resnet18"}) {
    ModelOptions options;
    options.resolution = Resolution{64, 64};
    const Graph graph = zoo_model(model, options);
    expect_schedule_is_the_closure(graph, single_partition_plan(graph));
    expect_schedule_is_the_closure(graph, plan_for_execution(graph, 256 << 10));
  }
}

TEST(FusedSchedule, BandsRunSeveralRowsPerStepAndNeedLongerLineBuffers) {
  ModelOptions options;
  options.resolution = Resolution{64, 64};
  const Graph graph = zoo_model("mobilenet_v2", options);
  const Analysis analysis(graph, execution_analysis_options());
  const OpId last = analysis.op_count() - 1;
  const auto roles = closure_roles(graph, 0, last);
  const std::vector<int> one(static_cast<size_t>(last + 1), 1), four(static_cast<size_t>(last + 1), 4);
  const exec::SpanSchedule by_row = exec::schedule_span(analysis, 0, last, one, roles);
  const exec::SpanSchedule bands = exec::schedule_span(analysis, 0, last, four, roles);
  EXPECT_LT(bands.steps.size() * 3, by_row.steps.size());
  EXPECT_GT(bands.ring_bytes(), by_row.ring_bytes());
  // Every op still produces each of its events exactly once, in order.
  std::map<OpId, int64_t> next;
  for (const exec::FusedStep& s : bands.steps) {
    if (s.kind != exec::StepKind::Compute) continue;
    EXPECT_EQ(s.first, next[s.op]) << graph.op(s.op).name;
    EXPECT_LE(s.count, 4);
    next[s.op] += s.count;
  }
  for (OpId o = 0; o <= last; ++o) EXPECT_EQ(next[o], rows::event_count(graph, graph.op(o))) << graph.op(o).name;
}

// Rows of zeros beyond a tensor's edges (for windows read whole across the padding) live in its
// line buffer like rows: on dncnn's chain of 3x3 convolutions they take the slots the edge windows
// leave free, so neither the steps nor the line buffers change; elsewhere (resnet18's strided windows,
// its tensors of 2 rows) a line buffer grows by its rows of zeros at most.
TEST(FusedSchedule, RowsOfZerosAtTheEdgesFitTheLineBuffers) {
  for (const auto& [model, h, w] : {std::tuple{"dncnn", 48, 64}, std::tuple{"resnet18", 64, 64}}) {
    ModelOptions options;
    options.resolution = Resolution{h, w};
    const Graph graph = zoo_model(model, options);
    const Analysis analysis(graph, execution_analysis_options());
    const OpId last = analysis.op_count() - 1;
    const auto roles = closure_roles(graph, 0, last);
    std::vector<exec::ZeroRows> zeros(graph.tensors.size());
    for (TensorId t = 0; t < static_cast<TensorId>(graph.tensors.size()); ++t) {
      const Tensor& tensor = graph.tensor(t);
      if (tensor.producer < 0 || roles[static_cast<size_t>(t)] != exec::TensorRole::Ring) continue;
      for (OpId c : tensor.consumers) {
        const Op& op = graph.op(c);
        if (op.kind != OpKind::Conv) continue;
        const int64_t bottom = (graph.output_of(op).shape.h - 1) * op.window.stride_h - op.window.pad_top + op.window.extent_h() - 1;
        zeros[static_cast<size_t>(t)].above = std::max<int32_t>(zeros[static_cast<size_t>(t)].above, static_cast<int32_t>(op.window.pad_top));
        zeros[static_cast<size_t>(t)].below =
            std::max<int32_t>(zeros[static_cast<size_t>(t)].below, static_cast<int32_t>(std::max<int64_t>(0, bottom - (tensor.shape.h - 1))));
      }
    }
    const std::vector<int> one(static_cast<size_t>(last + 1), 1);
    const exec::SpanSchedule plain = exec::schedule_span(analysis, 0, last, one, roles);
    const exec::SpanSchedule padded = exec::schedule_span(analysis, 0, last, one, roles, zeros);
    EXPECT_THROW(exec::schedule_span(analysis, 0, last, one, roles, std::vector<exec::ZeroRows>(1)), Error);
    ASSERT_EQ(plain.steps.size(), padded.steps.size()) << model;
    for (size_t i = 0; i < plain.steps.size(); ++i) {
      EXPECT_EQ(plain.steps[i].op, padded.steps[i].op) << model << " step " << i;
      EXPECT_EQ(plain.steps[i].first, padded.steps[i].first) << model << " step " << i;
    }
    ASSERT_EQ(plain.rings.size(), padded.rings.size()) << model;
    for (size_t k = 0; k < plain.rings.size(); ++k) {
      const auto& a = plain.rings[k];
      const auto& b = padded.rings[k];
      const exec::ZeroRows& z = zeros[static_cast<size_t>(a.tensor)];
      const std::string name = graph.tensor(a.tensor).name;
      if (z.above == 0 && z.below == 0) {
        EXPECT_EQ(b.rows, a.rows) << model << " " << name;
        continue;
      }
      // Every window of a consumer is whole now: the buffer holds at least a kernel's rows.
      for (OpId c : graph.tensor(a.tensor).consumers) EXPECT_GE(b.rows, graph.op(c).window.extent_h()) << model << " " << name;
      EXPECT_LE(b.rows, a.rows + z.above + z.below) << model << " " << name;
      if (std::string_view(model) == "dncnn") {
        EXPECT_EQ(b.rows, a.rows) << model << " " << name;
      }
    }
  }
}

// Automatic bands: where filters are large beside output rows, and only while the banded line
// buffers and the filters fit the plan's capacity; none where the plan has none to spare.
TEST(FusedSchedule, AutomaticBandsAmortiseLargeFiltersWithinThePlansSpareCapacity) {
  ModelOptions options;
  options.resolution = Resolution{224, 224};
  for (const char* model : {"resnet18", "mobilenet_v2"}) {
    const Graph graph = zoo_model(model, options);
    const Analysis analysis(graph, execution_analysis_options());
    const std::vector<int> none = exec::step_bands(analysis, single_partition_plan(graph), 0);
    EXPECT_TRUE(std::all_of(none.begin(), none.end(), [](int b) { return b == 1; })) << model;
    for (const int64_t capacity : {int64_t{2} << 20, int64_t{32} << 20}) {
      const Plan plan = plan_for_execution(graph, capacity);
      const std::vector<int> bands = exec::step_bands(analysis, plan, 0);
      const auto boundaries = exec::boundary_spans(graph, exec::partition_of_ops(plan, graph.ops.size()));
      int banded = 0, streamed = 0;
      for (size_t p = 0; p < plan.partitions.size(); ++p) {
        const Partition& part = plan.partitions[p];
        const auto roles = exec::partition_roles(graph, plan, boundaries, p);
        const std::vector<int> one(static_cast<size_t>(part.last_op - part.first_op + 1), 1);
        const std::span<const int> span(bands.data() + part.first_op, one.size());
        const exec::SpanSchedule schedule = exec::schedule_span(analysis, part.first_op, part.last_op, span, roles);
        if (schedule.ring_bytes() != exec::schedule_span(analysis, part.first_op, part.last_op, one, roles).ring_bytes()) {
          EXPECT_LE(std::min(schedule.ring_bytes(), schedule.packed_rings(graph, exec::page_bytes()).bytes) +
                        part.filter_bytes + part.stream_buffer_bytes,
                    plan.capacity_bytes)
              << model << " partition " << p;
        }
        bool whole = true;
        for (OpId o = part.first_op; o <= part.last_op; ++o) {
          const int band = bands[static_cast<size_t>(o)];
          EXPECT_GE(band, 1);
          EXPECT_LE(band, rows::event_count(graph, graph.op(o)));
          banded += band > 1 ? 1 : 0;
          whole = whole && band == rows::event_count(graph, graph.op(o));
        }
        // At 32 MiB mobilenet_v2 is one partition whose whole tensors fit beside its 13 MiB of filters.
        if (capacity == (int64_t{32} << 20) && std::string_view(model) == "mobilenet_v2") {
          EXPECT_TRUE(whole);
        }
        streamed += whole ? 0 : 1;
      }
      // At 2 MiB the early partitions' 112x112 tensors cannot be held whole.
      if (capacity == (int64_t{2} << 20)) {
        EXPECT_GT(streamed, 0) << model;
      }
      if (capacity == (int64_t{32} << 20)) {
        EXPECT_GT(banded, 0) << model;
      }
    }
  }
  // resnet18's last 3x3 convolution (9 MiB of filters, 14 KiB output rows) runs its 7 rows at once
  // when the plan leaves room for it (here, within whole tensors).
  const Graph graph = zoo_model("resnet18", options);
  const Analysis analysis(graph, execution_analysis_options());
  const std::vector<int> bands = exec::step_bands(analysis, plan_for_execution(graph, int64_t{32} << 20), 0);
  OpId last_conv = -1;
  for (OpId o = 0; o < analysis.op_count(); ++o) {
    if (graph.op(o).kind == OpKind::Conv && graph.op(o).window.kernel_h == 3) last_conv = o;
  }
  EXPECT_EQ(bands[static_cast<size_t>(last_conv)], 7);
  // At 4 MiB whole tensors fit only the later partitions; the earlier ones still band the
  // convolutions whose filters are large beside their rows, without holding whole tensors.
  // A convolution whose whole tensor fits beside the partition's line buffers takes it, though the
  // partition's other ops stream rows (densenet121 at 224: 0.96 -> 0.99x the reference).
  const Plan small = plan_for_execution(graph, int64_t{4} << 20);
  const std::vector<int> partly = exec::step_bands(analysis, small, 0);
  bool amortised = false, whole_among_rows = false;
  for (const Partition& part : small.partitions) {
    bool streams = false, whole_conv = false;
    for (OpId o = part.first_op; o <= part.last_op; ++o) {
      const int band = partly[static_cast<size_t>(o)];
      const int64_t events = rows::event_count(graph, graph.op(o));
      amortised = amortised || (band > 1 && band < events);
      streams = streams || band < events;
      whole_conv = whole_conv || (graph.op(o).kind == OpKind::Conv && events > 1 && band == events);
    }
    whole_among_rows = whole_among_rows || (streams && whole_conv);
  }
  EXPECT_TRUE(amortised);
  EXPECT_TRUE(whole_among_rows);
}

// ---------------------------------------------------------------------------------------------
// Numerics on small graphs

struct Banding {
  const char* name;
  int64_t band_bytes;
};
const Banding kBandings[] = {{"rows", 0}, {"bands", 2048}};

class FusedOps : public ::testing::TestWithParam<std::tuple<testing::OpCase, Banding>> {};

TEST_P(FusedOps, MatchOracleUnderEveryPartitioning) {
  const auto& [c, banding] = GetParam();
  const Graph graph = c.build();
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> expected = naive::run(graph, inputs);
  for (const Plan& plan : plans_across_capacities(graph)) {
    const auto executor = compile_fused(graph, plan, {0, banding.band_bytes});
    EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance)
        << plan.partitions.size() << " partitions: " << executor->describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, FusedOps, ::testing::Combine(::testing::ValuesIn(testing::kOpCases), ::testing::ValuesIn(kBandings)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).name;
                         });

TEST(Fused, RandomChainsAndDagsMatchTheReferenceUnderEveryPartitioning) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 24; ++i) {
    const Graph graph = with_weights(i % 2 ? testing::random_dag(rng, 14) : testing::random_chain(rng, 10), 100 + i);
    const std::vector<HostTensor> inputs = testing::random_inputs(graph);
    const std::vector<HostTensor> expected = compile_reference(graph)->run(inputs);
    for (const Plan& plan : plans_across_capacities(graph)) {
      for (const int64_t band_bytes : {int64_t{0}, int64_t{1024}}) {
        const auto executor = compile_fused(graph, plan, {0, band_bytes});
        EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance)
            << "graph " << i << ", " << plan.partitions.size() << " partitions, bands of " << band_bytes << " bytes";
      }
    }
  }
}


// A convolution on stacked (row-blocked) rows whose output rows are NHWC writes each blocked row to
// a staging row and converts it; when the threads take turns at its rows (a straddled cut, forced
// here by the op costs) both convert at the same time, and must not share the staging row.
TEST(Fused, ThreadsTakingTurnsAtAConvertedRowKeepTheirOwnStaging) {
  const Graph graph = with_weights(testing::chain({{3, 1, 16}, {3, 1, 1}}, {1, 1, 96, 64}), 41);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> expected = compile_reference(graph)->run(inputs);
  FusedOptions options;
  options.threads = 2;
  options.sharing = ThreadSharing::Pipeline;
  options.pipeline_share = 0.5;
  options.op_costs = {1.0, 3.0};  // the cut leaves 25%/75%: the threads share the second op's rows
  options.layout = FusedLayout::Blocked;
  const auto executor = compile_fused(graph, single_partition_plan(graph), options);
  ASSERT_NE(executor->describe().find("(1 row-blocked,"), std::string::npos) << executor->describe();
  ASSERT_NE(executor->describe().find("(kernel time 50%/50%"), std::string::npos) << executor->describe();
  for (int run = 0; run < 20; ++run) EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance) << "run " << run;
}

// The threads' split comes from measured kernel times, so a loaded machine picks other cuts than a
// quiet one (a reduction split across threads once summed wrongly only under load). Random op
// costs walk through many cuts, and through ops shared row by row between the threads where a cut
// leaves them unequal.
TEST(Fused, EveryThreadSplitMatchesTheReference) {
  std::mt19937_64 rng(17);
  int balanced = 0;
  const auto check = [&](const Graph& graph, const std::vector<HostTensor>& inputs, const std::vector<HostTensor>& expected,
                         const std::string& what) {
    for (const Plan& plan : plans_across_capacities(graph)) {
      for (int split = 0; split < 4; ++split) {
        FusedOptions options;
        options.threads = 2;
        options.sharing = ThreadSharing::Pipeline;
        options.pipeline_share = split % 2 ? 0.5 : 0.05;  // room for straddled cuts, or not
        std::uniform_real_distribution<double> cost(0.1, 10.0);
        for (size_t o = 0; o < graph.ops.size(); ++o) options.op_costs.push_back(cost(rng));
        const auto executor = compile_fused(graph, plan, options);
        balanced += executor->describe().find("(kernel time 50%/50%") != std::string::npos ? 1 : 0;
        for (int run = 0; run < 2; ++run) {
          EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance)
              << what << ", " << plan.partitions.size() << " partitions, split " << split << ": " << executor->describe();
        }
      }
    }
  };
  for (int i = 0; i < 12; ++i) {
    const Graph graph = with_weights(i % 2 ? testing::random_dag(rng, 14) : testing::random_chain(rng, 10), 300 + i);
    const std::vector<HostTensor> inputs = testing::random_inputs(graph);
    check(graph, inputs, compile_reference(graph)->run(inputs), "random graph " + std::to_string(i));
  }
  // Reductions, broadcasts, concats, pools: every op kind the executor has a kernel for.
  for (const testing::OpCase& c : testing::kOpCases) {
    const Graph graph = c.build();
    const std::vector<HostTensor> inputs = testing::random_inputs(graph);
    check(graph, inputs, naive::run(graph, inputs), c.name);
  }
  EXPECT_GT(balanced, 0) << "no cut was ever evened out by sharing an op's rows";
}

// Each pipeline thread reports the time its last run spent waiting for the other, within that run.
TEST(Fused, PipelineThreadsReportTheirWaitsOfTheLastRun) {
  const Graph graph = with_weights(testing::chain({{3, 1, 16}, {3, 1, 16}, {3, 1, 16}}, {2, 8, 64, 48}), 43);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  FusedOptions options;
  options.threads = 2;
  options.sharing = ThreadSharing::Pipeline;
  options.op_costs = {1.0, 1.0, 1.0};
  const auto pipeline = compile_fused(graph, single_partition_plan(graph), options);
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    pipeline->run(inputs);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::vector<double> waits = pipeline->thread_waits();
    ASSERT_EQ(waits.size(), 2u) << pipeline->describe();
    for (const double w : waits) {
      EXPECT_GE(w, 0.0);
      EXPECT_LE(w, seconds) << "run " << run << ": a wait longer than the run (waits of earlier runs kept?)";
    }
  }
  options.threads = 1;
  const auto serial = compile_fused(graph, single_partition_plan(graph), options);
  serial->run(inputs);
  EXPECT_TRUE(serial->thread_waits().empty());
  options.threads = 2;
  options.sharing = ThreadSharing::Kernels;
  const auto kernels = compile_fused(graph, single_partition_plan(graph), options);
  kernels->run(inputs);
  EXPECT_TRUE(kernels->thread_waits().empty()) << "oneDNN's kernels share their own work";
}

// Squeeze-and-excitation blocks hold their expanded input whole until its global pool completes.
Graph squeeze_excitation_chain(int blocks) {
  testing::TestNet net;
  TensorId x = net.conv(net.input({2, 8, 24, 20}), 16, Window::square(3, 1, 1), 1, true, Activation::relu());
  for (int b = 0; b < blocks; ++b) {
    const TensorId expanded = net.conv(x, 32, Window::square(3, 1, 1), 1, true, {ActKind::Swish});
    const TensorId pooled = net.op(OpKind::GlobalAvgPool, {expanded});
    const TensorId squeezed = net.conv(pooled, 8, Window::square(1), 1, true, Activation::relu());
    const TensorId gate = net.conv(squeezed, 32, Window::square(1), 1, true, {ActKind::Sigmoid});
    const TensorId excited = net.op(OpKind::Mul, {expanded, gate});
    x = net.op(OpKind::Add, {net.conv(excited, 16, Window::square(1)), x});
  }
  return std::move(net).finish({x});
}

// Those whole-tensor line buffers live one block at a time, so they share bytes; whichever thread
// touches shared bytes next waits for the other's last use of them.
TEST(Fused, LineBuffersNeverAliveTogetherShareBytes) {
  const Graph graph = squeeze_excitation_chain(6);
  const Plan plan = single_partition_plan(graph);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> expected = naive::run(graph, inputs);
  std::mt19937_64 rng(5);
  for (int split = 0; split < 8; ++split) {
    FusedOptions options;
    options.threads = split == 0 ? 1 : 2;
    options.sharing = ThreadSharing::Pipeline;
    std::uniform_real_distribution<double> cost(0.1, 10.0);
    for (size_t o = 0; split > 1 && o < graph.ops.size(); ++o) options.op_costs.push_back(cost(rng));
    const auto fused = compile_fused(graph, plan, options);
    for (int run = 0; run < 3; ++run) {
      EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << "split " << split << ": " << fused->describe();
    }
    const Analysis analysis(graph, execution_analysis_options());
    const std::vector<int> bands = exec::step_bands(analysis, plan, 0);
    const auto boundaries = exec::boundary_spans(graph, exec::partition_of_ops(plan, graph.ops.size()));
    const int64_t unshared = exec::schedule_span(analysis, 0, analysis.op_count() - 1, bands,
                                                 exec::partition_roles(graph, plan, boundaries, 0))
                                 .ring_bytes();
    EXPECT_LT(2 * fused->memory().peak_bytes(MemoryUse::Activations), unshared)
        << "split " << split << ": six whole 24x20x32 tensors, one alive at a time";
  }
}

TEST(Fused, OpCostsMustCoverEveryOp) {
  const Graph graph = with_weights(testing::chain({{3, 1, 8}, {3, 1, 8}}, Shape{1, 4, 16, 16}), 1);
  FusedOptions options;
  options.threads = 2;
  options.sharing = ThreadSharing::Pipeline;
  options.op_costs = {1.0, 2.0, 3.0};
  EXPECT_THROW(compile_fused(graph, single_partition_plan(graph), options), Error);
}


// ---------------------------------------------------------------------------------------------
// Zoo nets: numerics and memory

struct ZooCase {
  const char* model;
  int64_t h, w;
  int64_t capacity;  // 0: one partition
  friend void PrintTo(const ZooCase& c, std::ostream* os) { *os << c.model << " " << c.h << "x" << c.w; }
};

Graph zoo(const char* model, int64_t h, int64_t w, int64_t batch = 1) {
  ModelOptions options;
  options.resolution = Resolution{h, w};
  options.batch = batch;
  options.with_weights = true;
  return zoo_model(model, options);
}

// Measured peak activation bytes against what the plan says (line buffers + live boundaries, the
// caller's tensors not counted on either side) plus the share of line buffers reserved for pipeline
// rows between threads: the executor's own buffers within 10% of that with each line buffer in
// whole pages (they are mapped twice; rows of a few KiB, as in ShuffleNet at 224x224, round up by a
// third), and, `exact`, within 10% without the rounding. oneDNN's scratchpad comes on top; it is
// counted in the peak and reported, but the plan cannot know it (alexnet's 11x11 stride-4 first
// convolution runs as im2col + GEMM: 152 KB per output row).
void expect_memory_as_planned(const Graph& graph, const Plan& plan, const Executor& fused,
                              const FusedOptions& options = {}, bool exact = true) {
  const PlanMemory planned = plan_memory(graph, plan);
  const int64_t buffers = fused.memory().peak_bytes(MemoryUse::Activations);
  const int64_t scratchpad = fused.memory().peak_bytes(MemoryUse::Scratchpad);
  const double reserve = options.pipeline_share * static_cast<double>(planned.line_buffer_bytes);
  ::testing::Test::RecordProperty("fused_buffer_bytes", std::to_string(buffers));
  ::testing::Test::RecordProperty("fused_scratchpad_bytes", std::to_string(scratchpad));
  ::testing::Test::RecordProperty("plan_peak_bytes", std::to_string(planned.peak_bytes));
  EXPECT_LE(static_cast<double>(buffers), 1.1 * (static_cast<double>(planned.page_peak_bytes) + reserve))
      << graph.name << ": " << plan.partitions.size() << " partitions, line buffers " << planned.line_buffer_bytes
      << " + boundaries " << planned.boundary_bytes << ", in whole pages " << planned.page_peak_bytes;
  if (exact) {
    EXPECT_LE(static_cast<double>(buffers), 1.1 * (static_cast<double>(planned.peak_bytes) + reserve))
        << graph.name << ": " << plan.partitions.size() << " partitions, line buffers " << planned.line_buffer_bytes
        << " + boundaries " << planned.boundary_bytes;
  }
  EXPECT_EQ(fused.memory().activation_peak_bytes(), buffers + scratchpad);
}

class FusedZoo : public ::testing::TestWithParam<ZooCase> {};

TEST_P(FusedZoo, MatchesTheReferenceWithThePlannedMemory) {
  const ZooCase& c = GetParam();
  const Graph graph = zoo(c.model, c.h, c.w);
  const Plan plan = c.capacity == 0 ? single_partition_plan(graph) : plan_for_execution(graph, c.capacity);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const std::vector<HostTensor> expected =
      compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(inputs);
  const auto fused = compile_fused(graph, plan);
  const double error = worst_error(fused->run(inputs), expected);
  RecordProperty("max_relative_error", std::to_string(error));
  EXPECT_LE(error, kTolerance) << fused->describe();
  expect_memory_as_planned(graph, plan, *fused);
}

constexpr int64_t kMiB = 1 << 20;

// dncnn's 17 convolutions of equal cost cannot be cut into two equal groups (8 against 9); the
// partition reserves the pipeline rows for sharing the middle one's rows, whatever the measured
// times, so that the threads balance.
TEST(Fused, EqualOpsThatNoCutBalancesShareTheMiddleOnesRows) {
  const Graph graph = zoo("dncnn", 64, 64);
  const Plan plan = single_partition_plan(graph);
  FusedOptions options;
  options.threads = 2;
  options.sharing = ThreadSharing::Pipeline;
  options.op_costs.assign(graph.ops.size(), 1.0);
  const auto fused = compile_fused(graph, plan, options);
  EXPECT_NE(fused->describe().find("(kernel time 50%/50%"), std::string::npos) << fused->describe();
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const auto expected = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(inputs);
  for (int run = 0; run < 2; ++run) EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance);
}

// describe() names the partitions that run whole tensors per step; a classifier partition of
// one-row tensors is not one of them, so one row per step says none.
TEST(Fused, DescribesWholeTensorStepsOnlyWhereTheyAreChosen) {
  const Graph graph = zoo("resnet50", 224, 224);
  const Plan plan = plan_for_execution(graph, 32 * kMiB);
  ASSERT_EQ(graph.tensor(graph.ops.back().inputs[0]).shape.h, 1);
  EXPECT_NE(compile_fused(graph, plan)->describe().find("with whole tensors per step"), std::string::npos);
  const std::string rows = compile_fused(graph, plan, {0, 1})->describe();
  EXPECT_EQ(rows.find("whole tensors"), std::string::npos) << rows;
  EXPECT_NE(rows.find("one row per step"), std::string::npos) << rows;
}

// A zoo net at size x size under a plan for `capacity`, seeded inputs and the reference's outputs.
struct PlannedNet {
  Graph graph;
  Plan plan;
  std::vector<HostTensor> inputs, expected;
};
PlannedNet planned_net(const char* model, int64_t size, int64_t capacity) {
  PlannedNet net{zoo(model, size, size), {}, {}, {}};
  net.plan = plan_for_execution(net.graph, capacity);
  net.inputs = testing::random_inputs(net.graph);
  net.expected = compile_reference(net.graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(net.inputs);
  return net;
}

FusedOptions sharing_options(int threads, ThreadSharing sharing, FusedLayout layout = FusedLayout::Blocked) {
  FusedOptions options;
  options.threads = threads;
  options.sharing = sharing;
  options.layout = layout;
  return options;
}

// Steps of several rows shared by two threads (each a contiguous part of the rows, with its own
// primitive): same numbers as the reference, same memory as the plan says.
TEST(Fused, TwoThreadsShareTheBandsOfLargeFilters) {
  const auto [graph, plan, inputs, expected] = planned_net("resnet18", 224, 32 * kMiB);
  const FusedOptions options = sharing_options(2, ThreadSharing::Pipeline);
  const auto fused = compile_fused(graph, plan, options);
  EXPECT_EQ(fused->describe().find("one row per step"), std::string::npos) << fused->describe();
  for (int run = 0; run < 3; ++run) EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << "run " << run;
  expect_memory_as_planned(graph, plan, *fused, options);
}

// One thread runs the steps in order and oneDNN splits each kernel over the threads: the
// reference's numbers, memory as planned (no pipeline rows), several partitions with boundaries.
TEST(Fused, KernelsOnAllThreadsMatchTheReference) {
  for (const auto& [model, capacity] : {std::pair{"resnet18", 4 * kMiB}, std::pair{"mobilenet_v2", 32 * kMiB}}) {
    const auto [graph, plan, inputs, expected] = planned_net(model, 96, capacity);
    const auto fused = compile_fused(graph, plan, sharing_options(2, ThreadSharing::Kernels));
    EXPECT_NE(fused->describe().find("oneDNN's kernels on 2 threads"), std::string::npos) << fused->describe();
    for (int run = 0; run < 2; ++run) EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << model << ", run " << run;
    expect_memory_as_planned(graph, plan, *fused, sharing_options(1, ThreadSharing::Pipeline));
  }
}

// Measured sharing keeps one of the two ways, says which and what the other measured, and holds no
// more activation memory than the pipeline (the bound plan_under_memory_limit measures).
TEST(Fused, MeasuredSharingKeepsTheFasterWayWithinThePipelinesMemory) {
  const Graph graph = zoo("resnet18", 96, 96);
  const Plan plan = plan_for_execution(graph, 4 * kMiB);
  // The bound as plan_under_memory_limit measures it: the other measured choices pinned to the ways
  // that hold the most (left to timing, a compile could keep one row per step and hold less).
  FusedOptions pipeline;
  pipeline.threads = 2;
  pipeline.sharing = ThreadSharing::Pipeline;
  pipeline.row_kernels = RowKernels::OneDnn;
  pipeline.layout = FusedLayout::Blocked;
  pipeline.filter_bands = FilterBands::On;
  FusedOptions measured;
  measured.threads = 2;
  measured.sharing = ThreadSharing::Measure;
  const auto kept = compile_fused(graph, plan, measured);
  const std::string text = kept->describe();
  EXPECT_NE(text.find(" ms per image against "), std::string::npos) << text;
  EXPECT_TRUE(text.find("2-thread pipeline") != std::string::npos || text.find("oneDNN's kernels on 2 threads") != std::string::npos) << text;
  EXPECT_LE(kept->memory().activation_peak_bytes(), compile_fused(graph, plan, pipeline)->memory().activation_peak_bytes());
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  EXPECT_LE(worst_error(kept->run(inputs), compile_reference(graph)->run(inputs)), kTolerance);
}

// The number just before `suffix` in a fused executor's description (-1 if the text is absent).
int described_number(const Executor& fused, std::string_view suffix) {
  const std::string text = fused.describe();
  const size_t at = text.find(suffix);
  if (at == std::string::npos || at == 0) return -1;
  const size_t begin = text.find_last_not_of("0123456789", at - 1) + 1;
  return begin == at ? -1 : std::stoi(text.substr(begin, at - begin));
}

int channel_blocked_tensors(const Executor& fused) { return described_number(fused, " whole channel-blocked)"); }
int row_blocked_tensors(const Executor& fused) { return described_number(fused, " row-blocked,"); }
int described_steps(const Executor& fused) { return described_number(fused, " steps ("); }

// Tensors that whole-tensor steps write and read at once take oneDNN's channel-blocked layout, and
// two threads share such a step by output channel blocks, each writing a part of every row: the
// reference's numbers on every run, memory as planned. Where the blocks would not split evenly
// (mobilenet_v2's 24 channels: 3 blocks of 8 with AVX2), two threads keep NHWC rows and split them;
// one thread takes the blocked layout there too. With AVX-512's blocks of 16 mobilenet_v2's 24
// channels are no whole number of blocks: those tensors stay NHWC, and since oneDNN 2.6 has no JIT
// kernel from NHWC to blocked, neither do the expansions and depthwise convolutions they feed.
TEST(Fused, WholeTensorStepsTakeTheChannelBlockedLayout) {
  for (const char* model : {"resnet18", "mobilenet_v2"}) {
    const auto [graph, plan, inputs, expected] = planned_net(model, 96, 32 * kMiB);
    for (int threads : {1, 2}) {
      const FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
      const auto fused = compile_fused(graph, plan, options);
      const int blocked = channel_blocked_tensors(*fused);
      if (std::string(model) == "mobilenet_v2" && (threads == 2 || 24 % exec::channel_block() != 0)) {
        EXPECT_EQ(blocked, 0) << fused->describe();
      } else {
        EXPECT_GE(blocked, 20) << fused->describe();
      }
      for (int run = 0; run < 3; ++run) {
        EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << model << ", " << threads << " threads, run " << run;
      }
      expect_memory_as_planned(graph, plan, *fused, options);
    }
  }
}

// FusedLayout::Nhwc keeps every tensor in NHWC rows where Blocked puts whole tensors (resnet18) and
// the rows of a dense convolution chain (dncnn, one row per step) in channel blocks: the same
// numbers either way, on one thread and on two. Measure keeps one of the two, says which and how
// each timed, and holds no more activation memory than the blocked program.
TEST(Fused, NhwcLayoutHoldsNoChannelBlocksAndGivesTheSameNumbers) {
  // dncnn just above its one-partition footprint runs one row per step (StackedRowsKeepOneCopy...).
  const int64_t tight = single_partition_plan(zoo("dncnn", 64, 64)).partitions[0].on_chip_bytes() + 4096;
  for (const auto& [model, size, capacity] : {std::tuple{"resnet18", 96, 32 * kMiB}, std::tuple{"dncnn", 64, tight}}) {
    const auto [graph, plan, inputs, expected] = planned_net(model, size, capacity);
    for (const int threads : {1, 2}) {
      const auto blocked = compile_fused(graph, plan, sharing_options(threads, ThreadSharing::Pipeline, FusedLayout::Blocked));
      const auto nhwc = compile_fused(graph, plan, sharing_options(threads, ThreadSharing::Pipeline, FusedLayout::Nhwc));
      EXPECT_GT(std::max(channel_blocked_tensors(*blocked), row_blocked_tensors(*blocked)), 0) << blocked->describe();
      EXPECT_EQ(channel_blocked_tensors(*nhwc), 0) << nhwc->describe();
      EXPECT_EQ(row_blocked_tensors(*nhwc), 0) << nhwc->describe();
      for (Executor* fused : {blocked.get(), nhwc.get()}) {
        for (int run = 0; run < 2; ++run) {
          EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << model << ", " << threads << " threads: " << fused->describe();
        }
      }
      const auto measured = compile_fused(graph, plan, sharing_options(threads, ThreadSharing::Pipeline, FusedLayout::Measure));
      const std::string what = measured->describe();
      EXPECT_TRUE(what.find("NHWC measured") != std::string::npos || what.find("channel blocks measured") != std::string::npos) << what;
      EXPECT_LE(measured->memory().activation_peak_bytes(), blocked->memory().activation_peak_bytes()) << what;
      EXPECT_LE(worst_error(measured->run(inputs), expected), kTolerance) << what;
    }
  }
}

// FilterBands::On runs convolutions whose filters are large beside their rows several rows per
// step, Off one row per step (resnet18 96x96 planned for 2 MiB: its layer3 and layer4 partitions
// stream rows): fewer steps with the bands, no more memory without them, the reference's numbers
// either way, on one thread and on two; Measure says which it kept and what the other measured.
TEST(Fused, FilterBandsOnOrOffGiveTheSameNumbers) {
  const auto [graph, plan, inputs, expected] = planned_net("resnet18", 96, 2 * kMiB);
  for (const int threads : {1, 2}) {
    FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
    options.filter_bands = FilterBands::On;
    const auto on = compile_fused(graph, plan, options);
    options.filter_bands = FilterBands::Off;
    const auto off = compile_fused(graph, plan, options);
    EXPECT_LT(described_steps(*on), described_steps(*off)) << on->describe() << "\n" << off->describe();
    EXPECT_LE(off->memory().activation_peak_bytes(), on->memory().activation_peak_bytes());
    for (Executor* fused : {on.get(), off.get()}) {
      EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << threads << " threads: " << fused->describe();
    }
    options.filter_bands = FilterBands::Measure;
    const auto measured = compile_fused(graph, plan, options);
    EXPECT_NE(measured->describe().find("for heavy filters measured"), std::string::npos) << measured->describe();
    EXPECT_LE(worst_error(measured->run(inputs), expected), kTolerance) << measured->describe();
  }
}

// mobilenet_v2's depthwise 3x3 windows over its expanded tensors' 3-row line buffers wrap in 2 of
// 3 positions (one row per step at 512x512, where most rows are whole pages).
// Rotated kernel rows read them from the buffer's start: the reference's numbers, on one thread and
// two, and on one thread fewer pages touched through the buffers' second mappings than when every
// window reads one band (what a virtually tagged cache simulator would count twice).
TEST(Fused, WrappingDepthwiseWindowsReadTheirBufferInPlaceWithRotatedKernelRows) {
  const PlannedNet net = planned_net("mobilenet_v2", 512, 32 * kMiB);
  const auto second_mapping_bytes = [&](const FusedOptions& options) {
    const auto fused = compile_fused(net.graph, net.plan, options);  // the only executor alive: the pages are its
    EXPECT_LE(worst_error(fused->run(net.inputs), net.expected), kTolerance) << fused->describe();
    const bool rotates = fused->describe().find("rotated kernel rows") != std::string::npos;
    EXPECT_EQ(rotates, options.rotate_wrapping_windows) << fused->describe();
    return touched_line_buffer_pages().second_bytes;
  };
  for (const int threads : {1, 2}) {
    FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
    options.band_bytes = 1;
    const int64_t rotated = second_mapping_bytes(options);
    options.rotate_wrapping_windows = false;
    const int64_t banded = second_mapping_bytes(options);
    if (threads == 1) {
      EXPECT_GT(banded, 0);
      EXPECT_LT(rotated, banded / 2) << rotated << " bytes of second mappings touched against " << banded;
    }
  }
}

// In row streaming every tensor is in use the whole image, but a one-row line buffer holds a row
// only from its producer's step to its reader's: mobilenet_v2 at 256x256, one row per step, shares
// the bytes of such buffers whose live steps never meet (2.0 of mobilenet_v2 1024's 8.5 MiB): less
// memory on one thread, the reference's numbers on one thread and two.
TEST(Fused, LineBuffersShareBytesBetweenTheRowsTheyHold) {
  const PlannedNet net = planned_net("mobilenet_v2", 256, 32 * kMiB);
  std::map<bool, int64_t> peak;
  for (const int threads : {1, 2}) {
    for (const bool share : {true, false}) {
      FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
      options.band_bytes = 1;
      options.share_idle_line_buffers = share;
      const auto fused = compile_fused(net.graph, net.plan, options);
      for (int run = 0; run < 2; ++run) {
        EXPECT_LE(worst_error(fused->run(net.inputs), net.expected), kTolerance) << threads << " threads: " << fused->describe();
      }
      if (threads == 1) peak[share] = fused->memory().activation_peak_bytes();
    }
  }
  EXPECT_LT(static_cast<double>(peak[true]), 0.85 * static_cast<double>(peak[false])) << peak[true] << " bytes against " << peak[false];
}

// The program is read once per image, so it streams through the cache like a tensor does: 16 bytes
// per step, and one list of operand addresses for all the steps whose line-buffer rows come round
// again (a caller tensor's steps take the image and find their row from the step). At 256x256 some
// rows are not whole pages and come round less often; two threads add their waits. A step with
// its own 16-byte addresses took 68 bytes or more.
TEST(Fused, StepsTakeSixteenBytesAndShareTheirOperandLists) {
  const PlannedNet net = planned_net("mobilenet_v2", 256, 32 * kMiB);
  for (const int threads : {1, 2}) {
    FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
    options.band_bytes = 1;
    const auto fused = compile_fused(net.graph, net.plan, options);
    EXPECT_LE(worst_error(fused->run(net.inputs), net.expected), kTolerance) << threads << " threads";
    const int64_t steps = described_steps(*fused);
    const int64_t program = fused->memory().peak_bytes(MemoryUse::Program);
    EXPECT_GE(program, 16 * steps);
    EXPECT_LE(program, 28 * steps) << threads << " threads, " << steps << " steps: " << program << " bytes";
  }
}

// A classifier takes its weights' blocks in the opposite order to the previous image's (a cache
// that the image's stream fills keeps the blocks read last); the images of a batch of one image
// repeated still come out bit for bit the same.
TEST(FusedZoo, RepeatedImagesGiveTheSameBits) {
  const Graph single = zoo("mobilenet_v2", 96, 96, 1);
  const Graph graph = zoo("mobilenet_v2", 96, 96, 3);
  const HostTensor image = testing::random_inputs(single)[0];
  std::vector<HostTensor> inputs(1, HostTensor(graph.tensor(graph.inputs[0]).shape));
  for (size_t n = 0; n < 3; ++n) std::copy(image.values.begin(), image.values.end(), inputs[0].values.begin() + static_cast<std::ptrdiff_t>(n * image.values.size()));
  const auto expected = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(inputs);
  for (const int threads : {1, 2}) {
    const auto fused = compile_fused(graph, plan_for_execution(graph, 32 * kMiB), sharing_options(threads, ThreadSharing::Pipeline));
    for (int run = 0; run < 2; ++run) {
      const std::vector<HostTensor> outputs = fused->run(inputs);
      EXPECT_LE(worst_error(outputs, expected), kTolerance) << threads << " threads";
      const std::vector<float>& y = outputs[0].values;
      const size_t per_image = y.size() / 3;
      for (size_t n = 1; n < 3; ++n) {
        EXPECT_TRUE(std::equal(y.begin(), y.begin() + static_cast<std::ptrdiff_t>(per_image), y.begin() + static_cast<std::ptrdiff_t>(n * per_image)))
            << threads << " threads, run " << run << ": image " << n << " differs from image 0";
      }
    }
  }
}

// A convolution whose filters exceed the plan's capacity streams them from memory; the plan counts
// them once per image, which one step over all its rows does (a step per row read them once per
// row). Its tensors are boundaries held whole, so the step costs no line buffers.
TEST(Fused, FiltersBeyondTheCapacityStreamOncePerImage) {
  const auto [graph, plan, inputs, expected] = planned_net("resnet18", 96, 4 * kMiB);
  const Analysis analysis(graph, execution_analysis_options());
  const std::vector<int> bands = exec::step_bands(analysis, plan, 0);
  int streaming = 0;
  for (const Partition& part : plan.partitions) {
    if (part.fallback != Fallback::StreamWeights) continue;
    ++streaming;
    for (OpId o = part.first_op; o <= part.last_op; ++o) {
      EXPECT_EQ(bands[static_cast<size_t>(o)], rows::event_count(graph, graph.op(o))) << graph.op(o).name;
    }
  }
  ASSERT_GT(streaming, 0) << "resnet18's 3x3 convolutions of 512 channels (9 MiB of filters) do not fit 4 MiB";
  for (const int threads : {1, 2}) {
    FusedOptions options = sharing_options(threads, ThreadSharing::Pipeline);
    const auto automatic = compile_fused(graph, plan, options);
    options.band_bytes = 1;
    const auto rows = compile_fused(graph, plan, options);
    EXPECT_LT(described_steps(*automatic), described_steps(*rows));
    EXPECT_NE(automatic->describe().find("stream their filters from memory once per image"), std::string::npos) << automatic->describe();
    EXPECT_LE(worst_error(automatic->run(inputs), expected), kTolerance) << threads << " threads: " << automatic->describe();
  }
}

// The times a measured choice reports, "KEPT measured X ms per image against Y ms ...": X for the
// program kept, Y for the other; nullopt where the description has no such choice.
std::optional<std::pair<double, double>> measured_times(const std::string& description, const std::string& kept) {
  const size_t at = description.find(kept + " measured ");
  if (at == std::string::npos) return std::nullopt;
  std::istringstream in(description.substr(at + kept.size() + std::string(" measured ").size()));
  double x = 0, y = 0;
  std::string ms, per, image, against;
  in >> x >> ms >> per >> image >> against >> y;
  if (!in || against != "against") return std::nullopt;
  return std::pair{x, y};
}

// Whichever program a measured choice keeps, it is the faster of the two it timed, within the
// choice's margin: a comparison turned around keeps the slower one (it once kept resnet18's
// channel blocks at 9.50 ms against 8.07 in NHWC). The times come from the same interleaved rounds
// that decided, so this holds whatever the machine's noise. The layout and the sharing may keep a
// slower program that holds less memory; the row kernels and the filter bands may not.
TEST(Fused, MeasuredChoicesKeepTheFasterProgram) {
  const auto [graph, plan, inputs, expected] = planned_net("resnet18", 96, 2 * kMiB);
  for (const int threads : {1, 2}) {
    const auto fused = compile_fused(graph, plan, FusedOptions{threads});
    const std::string text = fused->describe();
    const auto each_alone = measured_times(text, "row kernels chosen per convolution timed alone");
    const auto own = measured_times(text, "own row kernels wherever they apply");
    ASSERT_TRUE(each_alone || own) << text;
    const auto [kept, other] = each_alone ? *each_alone : *own;
    EXPECT_LE(kept, other) << text;
    const auto bands = measured_times(text, "bands for heavy filters");
    const auto one_row = measured_times(text, "one row per step for heavy filters");
    ASSERT_TRUE(bands || one_row) << text;
    if (bands) {
      EXPECT_LT(bands->first, bands->second) << text;  // kept only where 3% faster
    } else {
      EXPECT_LE(one_row->first * 0.97, one_row->second) << text;
    }
    EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << text;
  }
}

// A two-thread pipeline fills (the second thread waits for the first rows) and drains (the first
// has nothing left while the second finishes the last rows); the steps there run as a pipeline of
// their own, passing rows between the threads where the main cut passes none. The reference's
// numbers on every run, in the line buffers the plan gives (the rows these steps pass come from the
// pipeline reserve). mobilenet_v2 streams rows; dncnn's middle convolution is straddled, and
// keeps its interleaved steps.
TEST(Fused, PipelinesShareTheirFillingAndDraining) {
  for (const char* model : {"mobilenet_v2", "dncnn"}) {
    const auto [graph, plan, inputs, expected] = planned_net(model, 128, 32 * kMiB);
    FusedOptions options = sharing_options(2, ThreadSharing::Pipeline);
    options.band_bytes = 1;  // one row per step: a pipeline of rows whatever the capacity
    const auto fused = compile_fused(graph, plan, options);
    EXPECT_GT(described_number(*fused, " steps of its filling and draining on the other thread"), 0) << fused->describe();
    for (int run = 0; run < 3; ++run) EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance) << model << ": " << fused->describe();
    expect_memory_as_planned(graph, plan, *fused, options);
    options.threads = 1;
    EXPECT_EQ(compile_fused(graph, plan, options)->describe().find("filling and draining"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, FusedZoo,
    ::testing::Values(ZooCase{"alexnet", 224, 224, 0}, ZooCase{"vgg16", 224, 224, 0}, ZooCase{"resnet18", 224, 224, 0},
                      ZooCase{"resnet50", 224, 224, 0}, ZooCase{"mobilenet_v2", 224, 224, 0},
                      ZooCase{"googlenet", 224, 224, 0}, ZooCase{"dncnn", 224, 224, 0},
                      // Several partitions: boundaries in the arena, line buffers reused between partitions.
                      ZooCase{"resnet18", 224, 224, 4 * kMiB}, ZooCase{"mobilenet_v2", 224, 224, 2 * kMiB},
                      ZooCase{"googlenet", 224, 224, 3 * kMiB}, ZooCase{"vgg16", 224, 224, 64 * kMiB},
                      // The large inputs.
                      ZooCase{"dncnn", 512, 512, 0}, ZooCase{"mobilenet_v2", 1024, 1024, 0}),
    [](const auto& info) {
      return fmt::format("{}_{}_{}", info.param.model, info.param.h,
                         info.param.capacity == 0 ? std::string("one_partition") : fmt::format("{}MiB", info.param.capacity / kMiB));
    });

TEST(FusedZoo, BatchesStreamImageByImage) {
  const Graph graph = zoo("mobilenet_v2", 96, 96, 3);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const auto expected = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(inputs);
  const Plan plan = plan_for_execution(graph, kMiB);
  ASSERT_GT(plan.partitions.size(), 1u);
  // One way of sharing, of banding and of laying out for both, which measured choices would not promise.
  FusedOptions options;
  options.sharing = ThreadSharing::Pipeline;
  options.filter_bands = FilterBands::On;
  options.layout = FusedLayout::Blocked;
  const auto fused = compile_fused(graph, plan, options);
  EXPECT_LE(worst_error(fused->run(inputs), expected), kTolerance);
  // Boundaries hold one image, not the batch: the peak is that of a batch of one.
  const Graph single = zoo("mobilenet_v2", 96, 96, 1);
  EXPECT_EQ(fused->memory().activation_peak_bytes(),
            compile_fused(single, plan_for_execution(single, kMiB), options)->memory().activation_peak_bytes());
}

// The bar: >= 10x less activation memory than the reference at high resolution. Compiling
// allocates every buffer, so the peaks are known without running the (slow) reference.
TEST(FusedZoo, NeedsATenthOfTheReferenceMemoryAtHighResolution) {
  for (const auto& [model, h, w] : {std::tuple{"mobilenet_v2", 1024, 1024}, std::tuple{"dncnn", 1080, 1920}}) {
    const Graph graph = zoo(model, h, w);
    const Plan plan = single_partition_plan(graph);
    const auto fused = compile_fused(graph, plan);
    const int64_t reference = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})
                                  ->memory()
                                  .activation_peak_bytes();
    const int64_t measured = fused->memory().activation_peak_bytes();
    RecordProperty(fmt::format("{}_reference_over_fused", model), std::to_string(static_cast<double>(reference) / static_cast<double>(measured)));
    EXPECT_GE(reference, 10 * measured) << model << ": reference " << reference << ", fused " << measured;
    expect_memory_as_planned(graph, plan, *fused);
  }
}

// Nets imported from torchvision's ONNX exports (tests/fixtures, exported by the build into
// $OCCAM_TEST_DATA): a missing fixture fails, never skips.
class FusedOnnx : public ::testing::TestWithParam<const char*> {};

TEST_P(FusedOnnx, MatchesTheReference) {
  const char* dir = std::getenv("OCCAM_TEST_DATA");
  ASSERT_NE(dir, nullptr) << "OCCAM_TEST_DATA is not set; run the tests through ctest";
  const std::filesystem::path path = std::filesystem::path(dir) / (std::string(GetParam()) + ".onnx");
  ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing; the onnx_fixtures target builds it";
  const Graph graph = import_onnx(path);
  const Plan plan = plan_for_execution(graph, 4 * kMiB);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const auto expected = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked})->run(inputs);
  const auto fused = compile_fused(graph, plan);
  const double error = worst_error(fused->run(inputs), expected);
  RecordProperty("max_relative_error", std::to_string(error));
  EXPECT_LE(error, kTolerance) << plan.partitions.size() << " partitions";
  expect_memory_as_planned(graph, plan, *fused, {}, !std::string_view(GetParam()).starts_with("shufflenet"));
}

INSTANTIATE_TEST_SUITE_P(Torchvision, FusedOnnx,
                         ::testing::Values("resnet18", "resnet18_fused", "resnet50", "mobilenet_v2", "googlenet",
                                           "alexnet", "vgg16", "densenet121", "mnasnet1_0", "efficientnet_b0",
                                           "mobilenet_v3_small", "squeezenet1_1", "regnet_y_400mf", "shufflenet_v2_x0_5",
                                           "inception_v3"),
                         [](const auto& info) { return std::string(info.param); });

// ---------------------------------------------------------------------------------------------
// Sub-graphs, plans and errors

TEST(Fused, RunsAPipelineStageExtractedFromTheGraph) {
  const Graph graph = zoo("resnet18", 64, 64);
  const Plan plan = plan_for_execution(graph, kMiB);
  ASSERT_GT(plan.partitions.size(), 2u);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const auto reference = compile_reference(graph, {0, ConvAlgorithm::Direct, ActivationLayout::Blocked});
  // Stage by stage: each stage's outputs are the next stage's inputs, matched by tensor name.
  std::map<std::string, HostTensor> values = {{graph.tensor(graph.inputs[0]).name, inputs[0]}};
  for (const Partition& p : plan.partitions) {
    const Graph stage = extract_span(graph, p.first_op, p.last_op);
    std::vector<HostTensor> stage_inputs;
    for (TensorId t : stage.inputs) stage_inputs.push_back(values.at(stage.tensor(t).name));
    const auto outputs = compile_fused(stage, single_partition_plan(stage))->run(stage_inputs);
    for (size_t k = 0; k < outputs.size(); ++k) values[stage.tensor(stage.outputs[k]).name] = outputs[k];
  }
  const auto expected = reference->run(inputs);
  EXPECT_LE(max_relative_error(values.at(graph.tensor(graph.outputs[0]).name), expected[0]), kTolerance);
}

// Gives every parameter of `graph` a buffer of its own, returned writable so that a test can
// overwrite the graph's copy.
std::vector<std::shared_ptr<std::vector<float>>> own_parameters(Graph& graph) {
  std::vector<std::shared_ptr<std::vector<float>>> parameters;
  for (Op& op : graph.ops) {
    for (Buffer* buffer : {&op.weight, &op.bias}) {
      if (!*buffer) continue;
      parameters.push_back(std::make_shared<std::vector<float>>(**buffer));
      *buffer = parameters.back();
    }
  }
  return parameters;
}

// A pipeline rank drops its graph's weights once its executor is compiled: running must read only
// the executor's own copies (host kernels included: BatchNorm, fully connected). Every parameter
// of the graph is overwritten with NaN after compiling.
TEST(Fused, KeepsItsOwnCopyOfEveryParameter) {
  for (const testing::OpCase& c : testing::kOpCases) {
    if (c.name != std::string_view("batchnorm_concat_activations") && c.name != std::string_view("classifier_head")) continue;
    const Graph original = c.build();
    const std::vector<HostTensor> inputs = testing::random_inputs(original);
    const std::vector<HostTensor> expected = naive::run(original, inputs);
    for (const Plan& plan : plans_across_capacities(original)) {
      Graph graph = original;
      const auto parameters = own_parameters(graph);
      const auto executor = compile_fused(graph, plan);
      for (const auto& values : parameters) std::fill(values->begin(), values->end(), std::nanf(""));
      EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance) << c.name << ", " << plan.partitions.size() << " partitions";
    }
  }
}

// Stacked rows read the padding as rows of zeros, so one reordered copy of the filters serves every
// window: the weights the executor keeps are the plan's filters whatever capacity is left over, plus
// oneDNN's padding of channel counts to its vector block (dncnn's last convolution, 64 -> 1
// channels, keeps 8 output channels: 16 KiB, under 2% of the filters). At a capacity just above its
// one-partition footprint dncnn runs all its 64-channel rows blocked (with room to spare, automatic
// bands of 2 rows take their place).
TEST(Fused, StackedRowsKeepOneCopyOfTheFiltersAtAnyCapacity) {
  const Graph graph = zoo("dncnn", 48, 64);
  const int64_t footprint = single_partition_plan(graph).partitions[0].on_chip_bytes();
  for (const int64_t capacity : {footprint + 4096, 64 * kMiB}) {
    const Plan plan = plan_for_execution(graph, capacity);
    ASSERT_EQ(plan.partitions.size(), 1u);
    FusedOptions options;
    options.layout = FusedLayout::Blocked;
    const auto fused = compile_fused(graph, plan, options);
    const int64_t growth = fused->memory().peak_bytes(MemoryUse::Weights) - plan.partitions[0].filter_bytes;
    EXPECT_LE(growth, plan.partitions[0].filter_bytes / 50) << fused->describe();
    if (capacity < 64 * kMiB) {
      EXPECT_NE(fused->describe().find("(16 row-blocked,"), std::string::npos) << fused->describe();
    }
  }
}

// Stacked windows of row-blocked rows (one row per step) and bands of NHWC rows run on occam's own
// micro-kernel (RowConv) or on oneDNN's; both give the reference's numbers, on one thread and on two
// sharing the rows, with
// kernels of 3 and 5 rows and columns, a ReLU and a ReLU6 (clipped in registers), output rows that
// are row-blocked (into the next convolution) or NHWC (converted: the last one), and dncnn. (The 5x5
// layer found that a line buffer's second row of zeros below was written over a row its last
// windows still read; both kernels failed alike.)
TEST(Fused, OwnRowKernelsMatchTheReference) {
  GraphBuilder b("own_row_kernels", "test");
  TensorId x = b.input("x", {1, 1, 40, 70});
  const std::vector<std::pair<int, Activation>> layers = {
      {3, Activation::relu()}, {5, Activation::relu6()}, {3, Activation{}}, {3, Activation::relu()}};
  for (size_t i = 0; i < layers.size(); ++i) {
    Op op = testing::conv_op("conv" + std::to_string(i), x, i == 1 ? 32 : 16, layers[i].first);
    op.activation = layers[i].second;
    x = b.add(std::move(op));
  }
  b.mark_output(x);
  const Graph chain = with_weights(std::move(b).finish(), 47);
  const bool own_supported = exec::row_conv_supported({16, 16, 70, 70, 3, 3, 1, exec::channel_block(), exec::channel_block(), Activation::relu()});
  for (const Graph& graph : {chain, zoo("dncnn", 48, 64)}) {
    const std::vector<HostTensor> inputs = testing::random_inputs(graph);
    const std::vector<HostTensor> expected = compile_reference(graph)->run(inputs);
    for (const RowKernels kernels : {RowKernels::Own, RowKernels::OneDnn}) {
      for (const int threads : {1, 2}) {
        for (const int64_t band_bytes : {int64_t{0}, int64_t{3 * 70 * 16 * 4}}) {  // one row per step (row-blocked), or NHWC bands of 3 rows
          FusedOptions options;
          options.threads = threads;
          options.band_bytes = band_bytes;
          options.sharing = ThreadSharing::Pipeline;
          options.row_kernels = kernels;
          const auto executor = compile_fused(graph, single_partition_plan(graph), options);
          const std::string what = executor->describe();
          EXPECT_EQ(what.find("own AVX2 row kernel") != std::string::npos, kernels == RowKernels::Own && own_supported) << what;
          for (int run = 0; run < 3; ++run) EXPECT_LE(worst_error(executor->run(inputs), expected), kTolerance) << what;
        }
      }
    }
  }
}

TEST(Fused, RepeatedRunsGiveIdenticalResultsAndLeaveInputsAlone) {
  const Graph graph = zoo("googlenet", 64, 64);
  const std::vector<HostTensor> inputs = testing::random_inputs(graph);
  const auto fused = compile_fused(graph, plan_for_execution(graph, 2 * kMiB), {0, 4096});
  const auto first = fused->run(inputs);
  const auto second = fused->run(inputs);
  EXPECT_EQ(first[0].values, second[0].values);
  EXPECT_EQ(inputs[0].values, testing::random_inputs(graph)[0].values);
}

void expect_error(const std::function<void()>& action, const std::string& culprit) {
  try {
    action();
    ADD_FAILURE() << "no error; expected one mentioning " << culprit;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(culprit), std::string::npos) << e.what();
  }
}

TEST(Fused, RejectsPlansThatDoNotFitTheModelOrTheMachine) {
  const Graph graph = zoo("resnet18", 64, 64);
  const Graph other = zoo("mobilenet_v2", 64, 64);
  expect_error([&] { compile_fused(graph, single_partition_plan(other)); }, "resnet18");
  const Analysis two_bytes(graph, {2, Granularity::Row});
  const Plan plan16 = plan_optimal(two_bytes, {kMiB, 1, {2, Granularity::Row}});
  expect_error([&] { compile_fused(graph, plan16); }, "4-byte");
  ModelOptions weightless;
  weightless.resolution = Resolution{64, 64};
  const Graph no_weights = zoo_model("resnet18", weightless);
  expect_error([&] { compile_fused(no_weights, single_partition_plan(no_weights)); }, "no weights");
  const auto fused = compile_fused(graph, single_partition_plan(graph));
  expect_error([&] { fused->run(testing::random_inputs(zoo("resnet18", 32, 32))); }, "expected 1x3x64x64");
}

TEST(Fused, MemoryLimitPicksAFittingPlanOrNamesTheSmallestPeak) {
  const Graph graph = zoo("mobilenet_v2", 128, 128);
  // Peaks under a limit are measured as a pipeline, blocked, with the filter bands and oneDNN's
  // kernels, which bounds what the measured choices keep.
  FusedOptions pipeline;
  pipeline.sharing = ThreadSharing::Pipeline;
  pipeline.row_kernels = RowKernels::OneDnn;
  pipeline.layout = FusedLayout::Blocked;
  pipeline.filter_bands = FilterBands::On;
  const int64_t one_partition = compile_fused(graph, single_partition_plan(graph), pipeline)->memory().activation_peak_bytes();
  // Generous: the least-traffic plan, one partition.
  const MemoryLimitedPlan generous = plan_under_memory_limit(graph, 64 * kMiB);
  EXPECT_EQ(generous.plan.partitions.size(), 1u);
  EXPECT_LE(generous.peak_bytes, 64 * kMiB);
  // Just enough for the single partition still gets it; its measured peak is what a compile gives.
  const MemoryLimitedPlan tight = plan_under_memory_limit(graph, one_partition);
  EXPECT_EQ(tight.peak_bytes, compile_fused(graph, tight.plan, pipeline)->memory().activation_peak_bytes());
  EXPECT_LE(compile_fused(graph, tight.plan)->memory().activation_peak_bytes(), tight.peak_bytes);
  EXPECT_LE(tight.peak_bytes, one_partition);
  // Far too little: an error naming the smallest peak any plan reaches.
  expect_error([&] { plan_under_memory_limit(graph, 1024); }, "smallest measured peak");
  // The least-traffic plan is still chosen under a limit that only its one-row-per-step execution
  // fits: the automatic bands give way, not the traffic (resnet18 at 64x64 bands its large filters).
  const Graph small = zoo("resnet18", 64, 64);
  const MemoryLimitedPlan best = plan_under_memory_limit(small, int64_t{1} << 40);
  EXPECT_EQ(best.band_bytes, 0);
  FusedOptions rows = pipeline;
  rows.band_bytes = 1;
  const int64_t rows_peak = compile_fused(small, best.plan, rows)->memory().activation_peak_bytes();
  ASSERT_LT(rows_peak, best.peak_bytes);
  const MemoryLimitedPlan streamed = plan_under_memory_limit(small, rows_peak);
  EXPECT_EQ(streamed.plan.partitions.size(), best.plan.partitions.size());
  EXPECT_EQ(streamed.plan.traffic_bytes, best.plan.traffic_bytes);
  EXPECT_EQ(streamed.band_bytes, 1);
  EXPECT_EQ(streamed.peak_bytes, rows_peak);
}

}  // namespace
}  // namespace occam
