// What the thread and MPI pipelines share: checking inputs, building replicas and running one
// stage on one bundle.
#pragma once

#include "occam/pipeline.hpp"

#include <memory>
#include <span>
#include <vector>

namespace occam::pipeline {

// The tensors crossing one cut for one mini-batch, in the order of StageRoute::outgoing.
using Bundle = std::vector<HostTensor>;

// Replicas per stage: `requested` checked against the layout, or one each when it is empty.
std::vector<int> resolve_replicas(const PipelineLayout& layout, const std::vector<int>& requested);

// Network inputs of one mini-batch, sized with the graph's input shapes.
std::vector<HostTensor> input_buffers(const PipelineLayout& layout);
// Throws an Error naming the mini-batch and input when `inputs` are not the network's inputs.
void check_inputs(const PipelineLayout& layout, int64_t batch, std::span<const HostTensor> inputs);
// A sink that appends copies of every mini-batch's outputs to `outputs`.
BatchSink collect_into(std::vector<std::vector<HostTensor>>& outputs);
// The network outputs (graph order) moved out of the last bundle, for a sink, and back.
class OutputView {
public:
  OutputView(const PipelineLayout& layout, Bundle& last) : layout_(layout), last_(last) {
    for (int index : layout.outputs) outputs_.push_back(std::move(last[static_cast<size_t>(index)]));
  }
  ~OutputView() {
    for (size_t o = 0; o < outputs_.size(); ++o) last_[static_cast<size_t>(layout_.outputs[o])] = std::move(outputs_[o]);
  }
  OutputView(const OutputView&) = delete;
  OutputView& operator=(const OutputView&) = delete;
  std::span<const HostTensor> outputs() const { return outputs_; }

private:
  const PipelineLayout& layout_;
  Bundle& last_;
  std::vector<HostTensor> outputs_;
};

std::unique_ptr<Executor> compile_replica(const PipelineOptions& options, const StageRoute& route, int stage);

// One stage's work on one mini-batch. The bundle's entries that the executor reads are moved into
// place and back, so nothing is copied; `outputs` is pre-sized with the stage graph's outputs.
class StageRunner {
public:
  StageRunner(Executor& executor, const StageRoute& route) : executor_(executor), route_(route) {
    arguments_.resize(route.inputs.size());
  }
  // Returns the executor's wall time in seconds.
  double run(Bundle& incoming, std::vector<HostTensor>& outputs);
  std::vector<HostTensor> output_buffers() const;
  // The bundle for the next stage, moved out of `incoming` (carried entries) and `outputs`.
  Bundle outgoing(Bundle& incoming, std::vector<HostTensor>& outputs) const;

private:
  Executor& executor_;
  const StageRoute& route_;
  std::vector<HostTensor> arguments_;
};

double median(std::vector<double> values);

// The report of one replica from its executor and per-mini-batch times.
ReplicaReport replica_report(int stage, int replica, const Executor& executor, const std::vector<double>& batch_seconds);

}  // namespace occam::pipeline
