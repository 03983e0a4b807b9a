// The in-process pipeline: one thread per replica, bounded ordered queues between stages.
#include "occam/error.hpp"
#include "occam/pipeline.hpp"
#include "pipeline/stage_runner.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace occam {
namespace {

using pipeline::Bundle;

// Thrown by a queue once the run has been stopped, to unwind every thread blocked on it.
struct Stopped {};

// A bounded queue between two stages that hands mini-batch i to whoever asks for i. Mini-batch i
// may be put only while i < (lowest mini-batch not yet taken) + capacity, so the queue never holds
// more than `capacity` bundles and a fast producer waits for the slowest consumer (back-pressure).
// It cannot deadlock: the lowest mini-batch not yet taken always has a free slot, and every replica
// works through its own mini-batches in increasing order.
class BatchQueue {
public:
  explicit BatchQueue(int capacity) : slots_(static_cast<size_t>(capacity)) {}

  void put(int64_t batch, Bundle bundle) {
    std::unique_lock lock(mutex_);
    space_.wait(lock, [&] { return stopped_ || batch < next_ + capacity(); });
    if (stopped_) throw Stopped{};
    Slot& slot = slot_of(batch);
    slot.batch = batch;
    slot.state = State::Full;
    slot.bundle = std::move(bundle);
    lock.unlock();
    ready_.notify_all();
  }

  Bundle take(int64_t batch) {
    std::unique_lock lock(mutex_);
    Slot& slot = slot_of(batch);
    ready_.wait(lock, [&] { return stopped_ || (slot.state == State::Full && slot.batch == batch); });
    if (stopped_) throw Stopped{};
    Bundle bundle = std::move(slot.bundle);
    slot.state = State::Taken;
    while (slot_of(next_).state == State::Taken && slot_of(next_).batch == next_) {
      slot_of(next_).state = State::Free;
      ++next_;
    }
    lock.unlock();
    space_.notify_all();
    return bundle;
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    space_.notify_all();
    ready_.notify_all();
  }

private:
  enum class State : uint8_t { Free, Full, Taken };
  struct Slot {
    int64_t batch = -1;
    State state = State::Free;
    Bundle bundle;
  };
  int64_t capacity() const { return static_cast<int64_t>(slots_.size()); }
  Slot& slot_of(int64_t batch) { return slots_[static_cast<size_t>(batch % capacity())]; }

  std::mutex mutex_;
  std::condition_variable space_, ready_;
  std::vector<Slot> slots_;
  int64_t next_ = 0;
  bool stopped_ = false;
};

// The first failure of a run, and stopping every queue when it happens.
class RunState {
public:
  explicit RunState(std::vector<std::unique_ptr<BatchQueue>>& queues) : queues_(queues) {}

  void fail(std::string message) {
    {
      std::lock_guard lock(mutex_);
      if (error_.empty()) error_ = std::move(message);
    }
    for (auto& queue : queues_) queue->stop();
  }
  std::string error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }

private:
  std::vector<std::unique_ptr<BatchQueue>>& queues_;
  mutable std::mutex mutex_;
  std::string error_;
};

}  // namespace

struct ThreadPipeline::Impl {
  struct Replica {
    int stage = 0;
    int index = 0;
    std::unique_ptr<Executor> executor;
  };
  PipelineLayout layout;
  std::vector<int> replicas;
  std::vector<Replica> workers;
};

ThreadPipeline::ThreadPipeline(const Graph& graph, const Plan& plan, PipelineOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->layout = pipeline_layout(graph, plan);
  impl_->replicas = pipeline::resolve_replicas(impl_->layout, options.replicas);
  for (size_t k = 0; k < impl_->layout.stages.size(); ++k) {
    for (int j = 0; j < impl_->replicas[k]; ++j) {
      impl_->workers.push_back(
          {static_cast<int>(k), j, pipeline::compile_replica(options, impl_->layout.stages[k], static_cast<int>(k))});
    }
  }
}

ThreadPipeline::~ThreadPipeline() = default;

const PipelineLayout& ThreadPipeline::layout() const { return impl_->layout; }
std::span<const int> ThreadPipeline::replicas() const { return impl_->replicas; }

PipelineRun ThreadPipeline::run(const BatchSource& source, const BatchSink& sink) {
  const PipelineLayout& layout = impl_->layout;
  const std::vector<int>& replicas = impl_->replicas;
  const int64_t count = source.count;
  const size_t stages = layout.stages.size();

  // Queue k feeds stage k; queue `stages` holds finished mini-batches. Room for one bundle per
  // producing and per consuming replica: each producer can park a result while each consumer works.
  std::vector<std::unique_ptr<BatchQueue>> queues;
  for (size_t k = 0; k <= stages; ++k) {
    const int producers = k == 0 ? 1 : replicas[k - 1];
    const int consumers = k == stages ? 1 : replicas[k];
    queues.push_back(std::make_unique<BatchQueue>(producers + consumers));
  }
  RunState state(queues);
  std::vector<std::vector<double>> batch_seconds(impl_->workers.size());

  const auto feed = [&] {
    int64_t batch = 0;
    try {
      for (; batch < count; ++batch) {
        Bundle inputs = pipeline::input_buffers(layout);
        source.fill(batch, inputs);
        pipeline::check_inputs(layout, batch, inputs);
        queues[0]->put(batch, std::move(inputs));
      }
    } catch (const Stopped&) {
    } catch (const std::exception& e) {
      state.fail(fmt::format("{}: the input of mini-batch {}: {}", layout.model, batch, e.what()));
    }
  };
  const auto work = [&](size_t w) {
    const Impl::Replica& replica = impl_->workers[w];
    const auto k = static_cast<size_t>(replica.stage);
    const StageRoute& route = layout.stages[k];
    int64_t batch = replica.index;
    try {
      pipeline::StageRunner runner(*replica.executor, route);
      for (; batch < count; batch += replicas[k]) {
        Bundle incoming = queues[k]->take(batch);
        std::vector<HostTensor> outputs = runner.output_buffers();
        batch_seconds[w].push_back(runner.run(incoming, outputs));
        queues[k + 1]->put(batch, runner.outgoing(incoming, outputs));
      }
    } catch (const Stopped&) {
    } catch (const std::exception& e) {
      state.fail(fmt::format("{}: stage {} ({}), replica {}, mini-batch {}: {}", layout.model, k, route.label,
                             replica.index, batch, e.what()));
    }
  };

  PipelineRun result;
  result.batches = count;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  try {
    threads.emplace_back(feed);
    for (size_t w = 0; w < impl_->workers.size(); ++w) threads.emplace_back(work, w);
  } catch (const std::exception& e) {
    state.fail(fmt::format("{}: starting the pipeline's threads: {}", layout.model, e.what()));
  }
  int64_t batch = 0;
  try {
    for (; batch < count; ++batch) {
      Bundle finished = queues[stages]->take(batch);
      const pipeline::OutputView view(layout, finished);
      sink(batch, view.outputs());
    }
  } catch (const Stopped&) {
  } catch (const std::exception& e) {
    state.fail(fmt::format("{}: the output of mini-batch {}: {}", layout.model, batch, e.what()));
  }
  for (std::thread& thread : threads) thread.join();
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (const std::string error = state.error(); !error.empty()) throw Error(error);

  for (size_t w = 0; w < impl_->workers.size(); ++w) {
    const Impl::Replica& replica = impl_->workers[w];
    result.replicas.push_back(pipeline::replica_report(replica.stage, replica.index, *replica.executor, batch_seconds[w]));
  }
  result.images = count * layout.input_shapes.front().n;
  return result;
}

PipelineRun ThreadPipeline::run(std::span<const std::vector<HostTensor>> batches) {
  std::vector<std::vector<HostTensor>> outputs;
  PipelineRun run = this->run(source_of(batches), pipeline::collect_into(outputs));
  run.outputs = std::move(outputs);
  return run;
}

}  // namespace occam
