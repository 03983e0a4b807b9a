#include "pipeline/stage_runner.hpp"

#include "occam/error.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <numeric>

namespace occam::pipeline {

std::vector<int> resolve_replicas(const PipelineLayout& layout, const std::vector<int>& requested) {
  const size_t stages = layout.stages.size();
  if (requested.empty()) return std::vector<int>(stages, 1);
  if (requested.size() != stages) {
    fail("{}: {} replica counts given for a pipeline of {} stages", layout.model, requested.size(), stages);
  }
  for (size_t k = 0; k < stages; ++k) {
    if (requested[k] < 1) fail("{}: stage {} has {} replicas, expected at least 1", layout.model, k, requested[k]);
  }
  return requested;
}

std::vector<HostTensor> input_buffers(const PipelineLayout& layout) {
  std::vector<HostTensor> inputs;
  for (const Shape& shape : layout.input_shapes) inputs.emplace_back(shape);
  return inputs;
}

void check_inputs(const PipelineLayout& layout, int64_t batch, std::span<const HostTensor> inputs) {
  if (inputs.size() != layout.input_shapes.size()) {
    fail("{}: mini-batch {} has {} input tensors, expected {}", layout.model, batch, inputs.size(),
         layout.input_shapes.size());
  }
  for (size_t k = 0; k < inputs.size(); ++k) {
    const HostTensor& t = inputs[k];
    const Shape& expected = layout.input_shapes[k];
    if (t.shape != expected || t.values.size() != static_cast<size_t>(expected.elements())) {
      fail("{}: mini-batch {} input {} has shape {} ({} values), expected {}", layout.model, batch, k, t.shape.str(),
           t.values.size(), expected.str());
    }
  }
}

BatchSink collect_into(std::vector<std::vector<HostTensor>>& outputs) {
  return [&outputs](int64_t, std::span<const HostTensor> batch) { outputs.emplace_back(batch.begin(), batch.end()); };
}

std::unique_ptr<Executor> compile_replica(const PipelineOptions& options, const StageRoute& route, int stage) {
  return options.factory ? options.factory(route.graph, stage) : compile_stage(route.graph, options.stage);
}

double StageRunner::run(Bundle& incoming, std::vector<HostTensor>& outputs) {
  for (size_t q = 0; q < arguments_.size(); ++q) arguments_[q] = std::move(incoming[static_cast<size_t>(route_.inputs[q])]);
  const auto start = std::chrono::steady_clock::now();
  executor_.run(arguments_, outputs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t q = 0; q < arguments_.size(); ++q) incoming[static_cast<size_t>(route_.inputs[q])] = std::move(arguments_[q]);
  return seconds;
}

std::vector<HostTensor> StageRunner::output_buffers() const {
  std::vector<HostTensor> buffers;
  for (TensorId t : route_.graph.outputs) buffers.emplace_back(route_.graph.tensor(t).shape);
  return buffers;
}

Bundle StageRunner::outgoing(Bundle& incoming, std::vector<HostTensor>& outputs) const {
  Bundle bundle;
  bundle.reserve(route_.outgoing.size());
  for (const StageRoute::Source& source : route_.outgoing) {
    bundle.push_back(std::move(source.carried ? incoming[static_cast<size_t>(source.index)]
                                              : outputs[static_cast<size_t>(source.index)]));
  }
  return bundle;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

ReplicaReport replica_report(int stage, int replica, const Executor& executor, const std::vector<double>& batch_seconds) {
  ReplicaReport report;
  report.stage = stage;
  report.replica = replica;
  report.pid = static_cast<int>(getpid());
  report.batches = static_cast<int64_t>(batch_seconds.size());
  report.busy_s = std::accumulate(batch_seconds.begin(), batch_seconds.end(), 0.0);
  report.median_batch_s = median(batch_seconds);
  report.weight_bytes = executor.memory().peak_bytes(MemoryUse::Weights);
  report.activation_bytes = executor.memory().activation_peak_bytes();
  return report;
}

}  // namespace occam::pipeline

namespace occam {

BatchSource source_of(std::span<const std::vector<HostTensor>> batches) {
  return {static_cast<int64_t>(batches.size()),
          [batches](int64_t batch, std::vector<HostTensor>& inputs) { inputs = batches[static_cast<size_t>(batch)]; }};
}

}  // namespace occam
