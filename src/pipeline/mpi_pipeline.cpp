// The distributed pipeline: rank 0 feeds and collects, every other rank is one replica of one stage.
//
// Messages: one per bundle entry, tagged with the entry's index. Between two ranks, bundles of one
// kind only travel one way (stage k to stage k + 1, rank 0 to stage 0, the last stage to rank 0),
// and MPI keeps messages of one (source, tag) in order, so the n-th receive a rank posts for a
// source gets that source's n-th bundle: no sequence numbers are needed.
//
// Waiting: ranks poll their requests and sleep between polls (2 us doubling to 200 us) instead of
// blocking in MPI_Wait, which OpenMPI implements as a busy loop: with more ranks than cores (rank 0
// and STAP replicas on a 2-core machine) a spinning rank would take a core from a computing one.
// Polling also bounds every wait by the stall timeout.
#include "occam/error.hpp"
#include "occam/pipeline.hpp"
#include "pipeline/stage_runner.hpp"

#include <fmt/ranges.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <thread>

namespace occam {

bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0) fail("MPI is already initialised in this process: only one MpiSession may exist");
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() { MPI_Finalize(); }

std::string MpiSession::host() const {
  char name[MPI_MAX_PROCESSOR_NAME];
  int length = 0;
  MPI_Get_processor_name(name, &length);
  return std::string(name, static_cast<size_t>(length));
}

void MpiSession::agree(const std::string& error) const {
  const int mine = error.empty() ? size_ : rank_;
  int first = size_;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == size_) return;
  int length = rank_ == first ? static_cast<int>(error.size()) : 0;
  MPI_Bcast(&length, 1, MPI_INT, first, MPI_COMM_WORLD);
  std::string message = rank_ == first ? error : std::string(static_cast<size_t>(length), ' ');
  MPI_Bcast(message.data(), length, MPI_CHAR, first, MPI_COMM_WORLD);
  fail("rank {}: {}", first, message);
}

namespace {

using pipeline::Bundle;

// What a rank does in the pipeline.
struct Role {
  int stage = -1;  // -1: rank 0 (feeder and collector) or an idle rank
  int replica = 0;
};

// One replica's report as it travels to rank 0.
struct WireReport {
  int32_t stage = -1, replica = 0, rank = 0, pid = 0;
  int64_t batches = 0;
  double busy_s = 0.0, median_batch_s = 0.0;
  int64_t weight_bytes = 0, activation_bytes = 0;
};

class Topology {
public:
  explicit Topology(const std::vector<int>& replicas) : replicas_(replicas) {
    int rank = 1;
    for (int r : replicas) {
      first_rank_.push_back(rank);
      rank += r;
    }
    ranks_needed_ = rank;
  }
  int ranks_needed() const { return ranks_needed_; }
  int stages() const { return static_cast<int>(replicas_.size()); }
  int replicas(int stage) const { return replicas_[static_cast<size_t>(stage)]; }
  // The rank of the replica of `stage` that runs mini-batch `batch`.
  int rank_of(int stage, int64_t batch) const {
    return first_rank_[static_cast<size_t>(stage)] + static_cast<int>(batch % replicas(stage));
  }
  Role role_of(int rank) const {
    for (int k = stages() - 1; k >= 0; --k) {
      if (rank >= first_rank_[static_cast<size_t>(k)] && rank < ranks_needed_) {
        return {k, rank - first_rank_[static_cast<size_t>(k)]};
      }
    }
    return {};
  }

private:
  std::vector<int> replicas_;
  std::vector<int> first_rank_;
  int ranks_needed_ = 1;
};

std::string describe_rank(const Topology& topology, const PipelineLayout& layout, int rank) {
  if (rank == 0) return "rank 0 (feeder and collector)";
  const Role role = topology.role_of(rank);
  if (role.stage < 0) return fmt::format("rank {} (idle)", rank);
  return fmt::format("rank {} (stage {} [{}], replica {})", rank, role.stage,
                     layout.stages[static_cast<size_t>(role.stage)].label, role.replica);
}

int element_count(const HostTensor& tensor, const std::string& what) {
  if (tensor.values.size() > static_cast<size_t>(INT_MAX)) {
    fail("{}: a tensor of {} values is more than one MPI message can carry ({})", what, tensor.values.size(), INT_MAX);
  }
  return static_cast<int>(tensor.values.size());
}

void post_receive(Bundle& bundle, std::vector<MPI_Request>& requests, int source) {
  requests.resize(bundle.size());
  for (size_t e = 0; e < bundle.size(); ++e) {
    MPI_Irecv(bundle[e].values.data(), static_cast<int>(bundle[e].values.size()), MPI_FLOAT, source,
              static_cast<int>(e), MPI_COMM_WORLD, &requests[e]);
  }
}

// Polls `requests` until all complete; after `timeout_s` throws an Error saying what was awaited.
template <typename Describe>
void wait_all(std::vector<MPI_Request>& requests, double timeout_s, const Describe& describe) {
  if (requests.empty()) return;
  const auto start = std::chrono::steady_clock::now();
  auto pause = std::chrono::microseconds(2);
  for (;;) {
    int done = 0;
    MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done != 0) return;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_s) fail("{} after {:.0f} s: that rank failed, stalled or was stopped", describe(), waited);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(200));
  }
}

Bundle bundle_of(std::span<const Shape> shapes) {
  Bundle bundle;
  for (const Shape& shape : shapes) bundle.emplace_back(shape);
  return bundle;
}

// Stage replica: receive a bundle, run the stage, send the result on; two of each buffer so that
// the next receive and the previous send overlap the computation.
std::vector<double> run_stage_rank(const Topology& topology, const PipelineLayout& layout, const Role role,
                                   Executor& executor, int64_t count, double timeout_s) {
  const int stage = role.stage;
  const StageRoute& route = layout.stages[static_cast<size_t>(stage)];
  const bool first = stage == 0;
  const bool last = stage == topology.stages() - 1;
  const std::span<const Shape> incoming_shapes =
      first ? std::span<const Shape>(layout.input_shapes) : std::span<const Shape>(layout.stages[static_cast<size_t>(stage) - 1].outgoing_shapes);
  const auto source = [&](int64_t batch) { return first ? 0 : topology.rank_of(stage - 1, batch); };
  const auto destination = [&](int64_t batch) { return last ? 0 : topology.rank_of(stage + 1, batch); };
  const int replicas = topology.replicas(stage);
  const int64_t mine = count > role.replica ? (count - role.replica + replicas - 1) / replicas : 0;
  const auto batch_of = [&](int64_t n) { return role.replica + n * replicas; };

  struct Inbox {
    Bundle bundle;
    std::vector<MPI_Request> requests;
  };
  struct Outbox {
    std::vector<HostTensor> outputs;  // the executor's
    Bundle carried;                   // copies of carried entries, at their outgoing positions
    std::vector<MPI_Request> requests;
  };
  pipeline::StageRunner runner(executor, route);
  Inbox inbox[2];
  Outbox outbox[2];
  for (int s = 0; s < 2; ++s) {
    inbox[s].bundle = bundle_of(incoming_shapes);
    outbox[s].outputs = runner.output_buffers();
    outbox[s].carried.resize(route.outgoing.size());
  }
  for (const HostTensor& t : inbox[0].bundle) element_count(t, layout.model);
  for (const HostTensor& t : outbox[0].outputs) element_count(t, layout.model);
  for (int64_t n = 0; n < std::min<int64_t>(mine, 2); ++n) {
    post_receive(inbox[n].bundle, inbox[n].requests, source(batch_of(n)));
  }

  std::vector<double> seconds;
  for (int64_t n = 0; n < mine; ++n) {
    const int64_t batch = batch_of(n);
    Inbox& in = inbox[n % 2];
    Outbox& out = outbox[n % 2];
    wait_all(in.requests, timeout_s, [&] {
      return fmt::format("no mini-batch {} from {}", batch, describe_rank(topology, layout, source(batch)));
    });
    wait_all(out.requests, timeout_s, [&] {
      return fmt::format("mini-batch {} not taken by {}", batch - 2 * replicas,
                         describe_rank(topology, layout, destination(batch - 2 * replicas)));
    });
    seconds.push_back(runner.run(in.bundle, out.outputs));
    out.requests.resize(route.outgoing.size());
    for (size_t e = 0; e < route.outgoing.size(); ++e) {
      const StageRoute::Source& from = route.outgoing[e];
      HostTensor* tensor = &out.outputs[static_cast<size_t>(from.index)];
      if (from.carried) {
        out.carried[e] = in.bundle[static_cast<size_t>(from.index)];
        tensor = &out.carried[e];
      }
      MPI_Isend(tensor->values.data(), static_cast<int>(tensor->values.size()), MPI_FLOAT, destination(batch),
                static_cast<int>(e), MPI_COMM_WORLD, &out.requests[e]);
    }
    if (n + 2 < mine) post_receive(in.bundle, in.requests, source(batch_of(n + 2)));
  }
  for (Outbox& out : outbox) {
    wait_all(out.requests, timeout_s, [&] {
      return std::string("last mini-batches not taken downstream");
    });
  }
  return seconds;
}

// Rank 0: fills and sends inputs at most `window` mini-batches ahead of the outputs it has received
// back, from `window` input and output buffers used in turn.
void run_feeder(const Topology& topology, const PipelineLayout& layout, const BatchSource& source,
                const BatchSink& sink, int window, double timeout_s) {
  const int last = topology.stages() - 1;
  struct Slot {
    Bundle inputs, outputs;
    std::vector<MPI_Request> sends, receives;
  };
  std::vector<Slot> slots(static_cast<size_t>(window));
  for (Slot& slot : slots) {
    slot.inputs = pipeline::input_buffers(layout);
    slot.outputs = bundle_of(layout.stages.back().outgoing_shapes);
  }
  const auto slot_of = [&](int64_t batch) -> Slot& { return slots[static_cast<size_t>(batch % window)]; };
  int64_t sent = 0;
  for (int64_t i = 0; i < source.count; ++i) {
    for (; sent < source.count && sent < i + window; ++sent) {
      Slot& slot = slot_of(sent);
      wait_all(slot.sends, timeout_s, [&] {
        return fmt::format("input of mini-batch {} not taken by {}", sent - window,
                           describe_rank(topology, layout, topology.rank_of(0, sent - window)));
      });
      source.fill(sent, slot.inputs);
      pipeline::check_inputs(layout, sent, slot.inputs);
      slot.sends.resize(slot.inputs.size());
      for (size_t e = 0; e < slot.inputs.size(); ++e) {
        MPI_Isend(slot.inputs[e].values.data(), element_count(slot.inputs[e], layout.model), MPI_FLOAT,
                  topology.rank_of(0, sent), static_cast<int>(e), MPI_COMM_WORLD, &slot.sends[e]);
      }
      post_receive(slot.outputs, slot.receives, topology.rank_of(last, sent));
    }
    Slot& slot = slot_of(i);
    wait_all(slot.receives, timeout_s, [&] {
      return fmt::format("no output of mini-batch {} from {}", i, describe_rank(topology, layout, topology.rank_of(last, i)));
    });
    const pipeline::OutputView view(layout, slot.outputs);
    sink(i, view.outputs());
  }
  for (Slot& slot : slots) {
    wait_all(slot.sends, timeout_s, [&] { return std::string("last inputs not taken by stage 0"); });
  }
}

// Weights are shared between a graph and its spans; an executor keeps its own (reordered) copy, so
// once a rank's executor is compiled no stage graph needs them: the rank then holds only its
// partition's filters, once.
void drop_weights(Graph& graph) {
  for (Op& op : graph.ops) {
    op.weight.reset();
    op.bias.reset();
  }
}

[[noreturn]] void abort_job(const std::string& who, const std::exception& e) {
  std::fprintf(stderr, "occam: error: %s: %s\n", who.c_str(), e.what());
  std::fflush(stderr);
  std::fflush(stdout);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace

PipelineRun run_mpi_pipeline(const MpiSession& session, Graph graph, const Plan& plan,
                             const BatchSource& source, const BatchSink& sink, const MpiPipelineOptions& options) {
  const int rank = session.rank();
  PipelineLayout layout;
  std::vector<int> replicas;
  std::unique_ptr<Executor> executor;
  Role role;
  std::string error;
  try {
    if (!(options.stall_timeout_s > 0.0)) fail("the stall timeout must be positive, got {} s", options.stall_timeout_s);
    layout = pipeline_layout(graph, plan);
    replicas = pipeline::resolve_replicas(layout, options.pipeline.replicas);
    const Topology topology(replicas);
    if (session.size() < topology.ranks_needed()) {
      fail("{}: the pipeline needs {} MPI ranks (rank 0 feeds and collects, then {} stage replicas: {}), but "
           "mpirun started {}; run mpirun -np {}",
           layout.model, topology.ranks_needed(), topology.ranks_needed() - 1, fmt::join(replicas, " + "),
           session.size(), topology.ranks_needed());
    }
    role = topology.role_of(rank);
    if (role.stage >= 0) {
      executor = pipeline::compile_replica(options.pipeline, layout.stages[static_cast<size_t>(role.stage)], role.stage);
    }
    graph = Graph{};
    for (auto& stage : layout.stages) drop_weights(stage.graph);
  } catch (const std::exception& e) {
    error = e.what();
  }
  session.agree(error);

  const Topology topology(replicas);
  int64_t count = rank == 0 ? source.count : 0;
  MPI_Bcast(&count, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  if (executor && options.on_ready) {
    ReplicaReport ready = pipeline::replica_report(role.stage, role.replica, *executor, {});
    ready.rank = rank;
    options.on_ready(ready, layout.stages[static_cast<size_t>(role.stage)]);
  }
  std::fflush(stdout);
  MPI_Barrier(MPI_COMM_WORLD);

  PipelineRun result;
  result.batches = count;
  WireReport mine;
  mine.rank = rank;
  mine.pid = static_cast<int32_t>(getpid());
  try {
    if (rank == 0) {
      const int in_flight = 2 * std::accumulate(replicas.begin(), replicas.end(), 0);
      const auto start = std::chrono::steady_clock::now();
      run_feeder(topology, layout, source, sink, in_flight, options.stall_timeout_s);
      result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      result.images = count * layout.input_shapes.front().n;
    } else if (role.stage >= 0) {
      const std::vector<double> seconds =
          run_stage_rank(topology, layout, role, *executor, count, options.stall_timeout_s);
      const ReplicaReport report = pipeline::replica_report(role.stage, role.replica, *executor, seconds);
      mine = {role.stage, role.replica, rank, report.pid, report.batches, report.busy_s, report.median_batch_s,
              report.weight_bytes, report.activation_bytes};
    }
  } catch (const std::exception& e) {
    abort_job(describe_rank(topology, layout, rank), e);
  }

  std::vector<WireReport> all(rank == 0 ? static_cast<size_t>(session.size()) : 0);
  MPI_Gather(&mine, sizeof(WireReport), MPI_BYTE, all.data(), sizeof(WireReport), MPI_BYTE, 0, MPI_COMM_WORLD);
  const auto to_report = [](const WireReport& w) {
    return ReplicaReport{w.stage, w.replica, w.rank, w.pid, w.batches, w.busy_s, w.median_batch_s, w.weight_bytes,
                         w.activation_bytes};
  };
  if (rank == 0) {
    for (const WireReport& w : all) {
      if (w.stage >= 0) result.replicas.push_back(to_report(w));
    }
  } else if (mine.stage >= 0) {
    result.replicas.push_back(to_report(mine));
  }
  return result;
}

}  // namespace occam
