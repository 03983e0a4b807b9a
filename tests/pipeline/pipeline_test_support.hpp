// Models, plans and streams shared by the pipeline tests.
#pragma once

#include "exec/test_graphs.hpp"
#include "occam/pipeline.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace occam::testing {

// A small DAG whose cuts exercise every routing case: a skip tensor (a) crossing two cuts, a network
// output (b) produced in the second of four stages and carried to the end, and network outputs
// listed in an order other than the bundle's.
//   x -> a = conv -> b = conv -> c = conv -> d = a + c -> f = conv 1x1;  outputs {f, b}
inline Graph routing_net(int64_t batch = 1) {
  TestNet net;
  const TensorId x = net.input({batch, 4, 12, 12});
  const TensorId a = net.conv(x, 8, Window::square(3, 1, 1), 1, true, Activation::relu());
  const TensorId b = net.conv(a, 8, Window::square(3, 1, 1), 1, true, Activation::relu());
  const TensorId c = net.conv(b, 8, Window::square(3, 1, 1));
  const TensorId d = net.op(OpKind::Add, {a, c});
  const TensorId f = net.conv(d, 4, Window::square(1));
  return std::move(net).finish({f, b});
}

// Partition i = ops [starts[i], starts[i + 1]), accounted at FP32 with a capacity that fits them.
inline Plan plan_with_starts(const Graph& graph, const std::vector<OpId>& starts) {
  PlanOptions options;
  options.capacity_bytes = int64_t{1} << 30;
  options.analysis.bytes_per_elem = 4;
  const Analysis analysis(graph, options.analysis);
  return plan_from_starts(analysis, options, starts, "test");
}

// Partitions starting at op 0 and at each named op.
inline Plan plan_cut_before(const Graph& graph, const std::vector<std::string>& names) {
  std::vector<OpId> starts = {0};
  for (const std::string& name : names) {
    for (OpId o = 0; o < static_cast<OpId>(graph.ops.size()); ++o) {
      if (graph.op(o).name == name) starts.push_back(o);
    }
  }
  EXPECT_EQ(starts.size(), names.size() + 1) << "an op name is not in " << graph.name;
  return plan_with_starts(graph, starts);
}

// The optimal plan at `capacity` bytes per chip, as executors need it (FP32, row granularity).
inline Plan plan_at(const Graph& graph, int64_t capacity) { return plan_for_execution(graph, capacity); }

inline Graph zoo_net(const char* name, int64_t side, int64_t batch = 1) {
  ModelOptions options;
  options.resolution = Resolution{side, side};
  options.batch = batch;
  options.with_weights = true;
  return zoo_model(name, options);
}

// `count` mini-batches of distinct seeded inputs.
inline std::vector<std::vector<HostTensor>> random_stream(const Graph& graph, int count) {
  std::vector<std::vector<HostTensor>> batches;
  for (int i = 0; i < count; ++i) batches.push_back(random_inputs(graph, kInputSeed + 100 * static_cast<uint64_t>(i)));
  return batches;
}

// Outputs of the executor kind the stages use, run on the whole graph in one process, mini-batch by
// mini-batch (compile_whole: the fused executor runs every partition of `plan` in turn).
inline std::vector<std::vector<HostTensor>> single_process_outputs(const Graph& graph, const Plan& plan,
                                                                   const StageOptions& options,
                                                                   const std::vector<std::vector<HostTensor>>& batches) {
  const auto executor = compile_whole(graph, plan, options);
  std::vector<std::vector<HostTensor>> outputs;
  for (const auto& inputs : batches) outputs.push_back(executor->run(inputs));
  return outputs;
}

inline double worst_relative_error(const std::vector<std::vector<HostTensor>>& got,
                                   const std::vector<std::vector<HostTensor>>& expected) {
  EXPECT_EQ(got.size(), expected.size());
  double worst = 0.0;
  for (size_t i = 0; i < got.size() && i < expected.size(); ++i) {
    EXPECT_EQ(got[i].size(), expected[i].size()) << "mini-batch " << i;
    for (size_t o = 0; o < got[i].size() && o < expected[i].size(); ++o) {
      const double error = max_relative_error(got[i][o], expected[i][o]);
      worst = std::isnan(error) ? error : std::max(worst, error);
    }
  }
  return worst;
}

}  // namespace occam::testing
