#include "occam/pipeline.hpp"
#include "pipeline/stage_runner.hpp"

#include <chrono>

namespace occam {

PipelineRun run_stages_in_sequence(const Graph& graph, const Plan& plan, const BatchSource& source,
                                   const BatchSink& sink, const PipelineOptions& options) {
  const PipelineLayout layout = pipeline_layout(graph, plan);
  std::vector<std::unique_ptr<Executor>> executors;
  std::vector<pipeline::StageRunner> runners;
  for (size_t k = 0; k < layout.stages.size(); ++k) {
    executors.push_back(pipeline::compile_replica(options, layout.stages[k], static_cast<int>(k)));
  }
  for (size_t k = 0; k < layout.stages.size(); ++k) runners.emplace_back(*executors[k], layout.stages[k]);

  PipelineRun result;
  std::vector<std::vector<double>> seconds(layout.stages.size());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < source.count; ++i) {
    pipeline::Bundle bundle = pipeline::input_buffers(layout);
    source.fill(i, bundle);
    pipeline::check_inputs(layout, i, bundle);
    for (size_t k = 0; k < layout.stages.size(); ++k) {
      std::vector<HostTensor> outputs = runners[k].output_buffers();
      seconds[k].push_back(runners[k].run(bundle, outputs));
      bundle = runners[k].outgoing(bundle, outputs);
    }
    const pipeline::OutputView view(layout, bundle);
    sink(i, view.outputs());
  }
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (size_t k = 0; k < layout.stages.size(); ++k) {
    result.replicas.push_back(pipeline::replica_report(static_cast<int>(k), 0, *executors[k], seconds[k]));
  }
  result.batches = source.count;
  result.images = source.count * layout.input_shapes.front().n;
  return result;
}

PipelineRun run_stages_in_sequence(const Graph& graph, const Plan& plan, std::span<const std::vector<HostTensor>> batches,
                                   const PipelineOptions& options) {
  std::vector<std::vector<HostTensor>> outputs;
  PipelineRun run = run_stages_in_sequence(graph, plan, source_of(batches), pipeline::collect_into(outputs), options);
  run.outputs = std::move(outputs);
  return run;
}

}  // namespace occam
