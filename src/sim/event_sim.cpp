// Discrete-event simulation of mini-batches flowing through a replicated pipeline.
//
// Events are replica completions, kept in a time-ordered heap. A replica starts its next batch
// (its batches are k, k+r, k+2r, ...) as soon as three things hold: it is idle, the batch has left
// the previous stage, and its output buffer has room. Starting a batch frees a slot in the
// producing replica's buffer, which may in turn let that replica start. No deadlock is possible
// with a buffer of at least one batch: the smallest batch not yet started by stage s+1 is always
// either being produced or producible, because its producer holds no older unconsumed batch.
#include "occam/error.hpp"
#include "occam/sim.hpp"

#include <algorithm>
#include <cmath>
#include <queue>

namespace occam {
namespace {

struct Completion {
  double time_s;
  int stage;
  int replica;
  int64_t batch;
  bool operator>(const Completion& other) const { return time_s > other.time_s; }
};

struct Replica {
  int64_t next_batch = 0;
  int waiting_outputs = 0;  // finished batches the next stage has not started yet
  bool busy = false;
  double busy_s = 0.0;
};

class PipelineSim {
public:
  PipelineSim(std::span<const double> stage_times, std::span<const int> replicas, const SimOptions& options)
      : times_(stage_times), options_(options), stages_(static_cast<int>(stage_times.size())) {
    replicas_.resize(stage_times.size());
    done_.resize(stage_times.size());
    for (size_t s = 0; s < stage_times.size(); ++s) {
      replicas_[s].resize(static_cast<size_t>(replicas[s]));
      for (int k = 0; k < replicas[s]; ++k) replicas_[s][static_cast<size_t>(k)].next_batch = k;
      done_[s].assign(static_cast<size_t>(options.batches), 0);
    }
    first_start_.assign(static_cast<size_t>(options.batches), 0.0);
  }

  SimResult run() {
    for (int k = 0; k < static_cast<int>(replicas_[0].size()); ++k) try_start(0, k, 0.0);
    while (!events_.empty()) {
      const Completion event = events_.top();
      events_.pop();
      finish(event);
    }
    return summarise();
  }

private:
  Replica& replica(int stage, int k) { return replicas_[static_cast<size_t>(stage)][static_cast<size_t>(k)]; }
  int replica_count(int stage) const { return static_cast<int>(replicas_[static_cast<size_t>(stage)].size()); }

  void try_start(int stage, int k, double now) {
    Replica& self = replica(stage, k);
    const int64_t batch = self.next_batch;
    if (self.busy || batch >= options_.batches) return;
    if (stage > 0 && !done_[static_cast<size_t>(stage - 1)][static_cast<size_t>(batch)]) return;
    if (stage + 1 < stages_ && self.waiting_outputs >= options_.buffer_batches) return;
    self.busy = true;
    self.next_batch += replica_count(stage);
    const double end = now + times_[static_cast<size_t>(stage)];
    events_.push({end, stage, k, batch});
    if (options_.trace) result_.trace.push_back({stage, k, batch, now, end});
    if (stage == 0) {
      first_start_[static_cast<size_t>(batch)] = now;
    } else {
      const int producer = static_cast<int>(batch % replica_count(stage - 1));
      --replica(stage - 1, producer).waiting_outputs;
      try_start(stage - 1, producer, now);
    }
  }

  void finish(const Completion& event) {
    Replica& self = replica(event.stage, event.replica);
    self.busy = false;
    self.busy_s += times_[static_cast<size_t>(event.stage)];
    done_[static_cast<size_t>(event.stage)][static_cast<size_t>(event.batch)] = 1;
    if (event.stage + 1 < stages_) {
      ++self.waiting_outputs;
      try_start(event.stage + 1, static_cast<int>(event.batch % replica_count(event.stage + 1)), event.time_s);
    } else {
      completions_.push_back(event.time_s);
      const double latency = event.time_s - first_start_[static_cast<size_t>(event.batch)];
      latency_sum_ += latency;
      result_.latency_max_s = std::max(result_.latency_max_s, latency);
    }
    try_start(event.stage, event.replica, event.time_s);
  }

  SimResult summarise() {
    const auto n = static_cast<int64_t>(completions_.size());
    std::sort(completions_.begin(), completions_.end());
    result_.makespan_s = completions_.back();
    result_.latency_mean_s = latency_sum_ / static_cast<double>(n);
    // Steady state: skip the first quarter of completions, which include the pipeline filling.
    const int64_t first = n / 4;
    result_.period_s = n - 1 > first ? (completions_.back() - completions_[static_cast<size_t>(first)]) /
                                           static_cast<double>(n - 1 - first)
                                     : result_.makespan_s / static_cast<double>(n);
    for (const auto& stage : replicas_) {
      auto& row = result_.utilisation.emplace_back();
      for (const Replica& r : stage) row.push_back(result_.makespan_s > 0.0 ? r.busy_s / result_.makespan_s : 0.0);
    }
    return std::move(result_);
  }

  std::span<const double> times_;
  SimOptions options_;
  int stages_;
  std::vector<std::vector<Replica>> replicas_;
  std::vector<std::vector<char>> done_;  // [stage][batch]: the batch has left the stage
  std::vector<double> first_start_;
  std::vector<double> completions_;
  double latency_sum_ = 0.0;
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> events_;
  SimResult result_;
};

}  // namespace

SimResult simulate_pipeline(std::span<const double> stage_times, std::span<const int> replicas,
                            const SimOptions& options) {
  if (stage_times.empty()) fail("pipeline simulation: the pipeline has no stages");
  if (stage_times.size() != replicas.size()) {
    fail("pipeline simulation: {} stage times but {} replica counts", stage_times.size(), replicas.size());
  }
  if (options.batches < 1) fail("pipeline simulation: {} mini-batches; expected at least 1", options.batches);
  if (options.buffer_batches < 1) {
    fail("pipeline simulation: output buffers of {} mini-batches; expected at least 1", options.buffer_batches);
  }
  for (size_t s = 0; s < stage_times.size(); ++s) {
    if (!std::isfinite(stage_times[s]) || stage_times[s] < 0.0) {
      fail("pipeline simulation: stage {} takes {} s; expected a non-negative time", s, stage_times[s]);
    }
    if (replicas[s] < 1) fail("pipeline simulation: stage {} has {} replicas; expected at least 1", s, replicas[s]);
  }
  return PipelineSim(stage_times, replicas, options).run();
}

}  // namespace occam
