#include "exec/fused_schedule.hpp"

#include "analysis/rows.hpp"
#include "exec/ring.hpp"
#include "occam/error.hpp"

#include <algorithm>
#include <climits>
#include <limits>
#include <map>
#include <numeric>

namespace occam::exec {

int64_t SpanSchedule::ring_bytes() const {
  int64_t total = 0;
  for (const LineBuffer& b : rings) total += b.rows * b.row_bytes;
  return total;
}

namespace {

// Steps, as sorted disjoint closed intervals, between the production of a row and its last read.
using StepIntervals = std::vector<std::pair<int, int>>;

bool intersect(const StepIntervals& a, const StepIntervals& b) {
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    if (a[i].second < b[j].first) {
      ++i;
    } else if (b[j].second < a[i].first) {
      ++j;
    } else {
      return true;
    }
  }
  return false;
}

StepIntervals merged(StepIntervals intervals) {
  std::sort(intervals.begin(), intervals.end());
  StepIntervals out;
  for (const auto& [lo, hi] : intervals) {
    if (!out.empty() && lo <= out.back().second) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.emplace_back(lo, hi);
    }
  }
  return out;
}

// Per tensor with a class >= 0: the steps at which some row of it is live.
std::map<TensorId, StepIntervals> live_steps(const Graph& graph, std::span<const FusedStep> steps, std::span<const int> share_class) {
  const auto shared = [&](TensorId t) { return share_class[static_cast<size_t>(t)] >= 0; };
  std::map<TensorId, std::map<int64_t, std::pair<int, int>>> rows;  // tensor -> row -> (produced, last read)
  const auto produce = [&](TensorId t, int64_t row, int at) {
    if (shared(t)) rows[t].emplace(row, std::pair{at, at});
  };
  const auto read = [&](TensorId t, int64_t row, int at) {
    if (!shared(t)) return;
    const auto found = rows[t].find(row);
    if (found == rows[t].end()) fail("{}: step {} reads row {} of \"{}\" before it is produced", graph.source, at, row, graph.tensor(t).name);
    found->second.second = std::max(found->second.second, at);
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    const FusedStep& step = steps[i];
    const int at = static_cast<int>(i);
    for (int64_t e = step.first; e < step.first + step.count; ++e) {
      if (step.kind == StepKind::Load || step.kind == StepKind::Zero) {
        produce(step.tensor, e, at);
      } else if (step.kind == StepKind::Store) {
        read(step.tensor, e, at);
      } else {
        const Op& op = graph.op(step.op);
        for (size_t k = 0; k < op.inputs.size(); ++k) {
          const rows::Band band = rows::band(graph, op, k, e);
          for (int64_t y = band.first; y <= band.last; ++y) read(op.inputs[k], y, at);
        }
        if (rows::mode_of(graph, op) == rows::Mode::Window) {
          produce(op.output, e, at);
        } else if (e == 0) {  // an accumulated row is live from its first input row on
          produce(op.output, 0, at);
        }
      }
    }
  }
  std::map<TensorId, StepIntervals> live;
  for (const auto& [t, by_row] : rows) {
    StepIntervals intervals;
    for (const auto& [row, span] : by_row) intervals.push_back(span);
    live.emplace(t, merged(std::move(intervals)));
  }
  return live;
}

}  // namespace

ArenaLayout SpanSchedule::packed_rings(const Graph& graph, int64_t alignment, std::span<const int> share_class) const {
  std::map<TensorId, size_t> ring_of;
  for (size_t k = 0; k < rings.size(); ++k) ring_of.emplace(rings[k].tensor, k);
  std::vector<Lifetime> lifetimes(rings.size(), Lifetime{0, INT_MAX, -1});
  const auto touch = [&](TensorId t, int step) {
    const auto found = ring_of.find(t);
    if (found == ring_of.end()) return;
    Lifetime& life = lifetimes[found->second];
    life.first = std::min(life.first, step);
    life.last = std::max(life.last, step);
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    const FusedStep& step = steps[i];
    const int at = static_cast<int>(i);
    if (step.kind == StepKind::Compute) {
      for (const TensorId t : graph.op(step.op).inputs) touch(t, at);
      touch(graph.op(step.op).output, at);
    } else {
      touch(step.tensor, at);
    }
  }
  for (size_t k = 0; k < rings.size(); ++k) {
    lifetimes[k].bytes = (rings[k].rows * rings[k].row_bytes + alignment - 1) / alignment * alignment;
    if (lifetimes[k].last < 0) lifetimes[k] = {lifetimes[k].bytes, 0, static_cast<int>(steps.size())};
  }
  ArenaLayout by_lifetime = plan_arena(lifetimes, alignment);
  if (share_class.empty()) return by_lifetime;
  // Rings of one class whose live steps never meet go into one slot (the largest first, each into
  // the first slot it fits), and the slots are placed like rings, each alive from its members'
  // first step to their last.
  const std::map<TensorId, StepIntervals> live = live_steps(graph, steps, share_class);
  struct Slot {
    int share_class = 0;
    Lifetime life;
    StepIntervals live;
  };
  std::vector<Slot> slots;
  std::vector<size_t> order(rings.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lifetimes[a].bytes > lifetimes[b].bytes; });
  std::vector<size_t> slot_of(rings.size());
  for (size_t k : order) {
    const auto found = live.find(rings[k].tensor);
    if (found == live.end()) {  // never shared so: a slot of its own
      slot_of[k] = slots.size();
      slots.push_back({-1, lifetimes[k], {}});
      continue;
    }
    const int c = share_class[static_cast<size_t>(rings[k].tensor)];
    size_t s = 0;
    while (s < slots.size() && (slots[s].share_class != c || intersect(slots[s].live, found->second))) ++s;
    if (s == slots.size()) {
      slots.push_back({c, lifetimes[k], found->second});
    } else {
      Slot& slot = slots[s];
      slot.life = {std::max(slot.life.bytes, lifetimes[k].bytes), std::min(slot.life.first, lifetimes[k].first),
                   std::max(slot.life.last, lifetimes[k].last)};
      StepIntervals both = slot.live;
      both.insert(both.end(), found->second.begin(), found->second.end());
      slot.live = merged(std::move(both));
    }
    slot_of[k] = s;
  }
  std::vector<Lifetime> slot_lives;
  for (const Slot& slot : slots) slot_lives.push_back(slot.life);
  const ArenaLayout by_slot = plan_arena(slot_lives, alignment);
  ArenaLayout layout{std::vector<int64_t>(rings.size()), by_slot.bytes};
  for (size_t k = 0; k < rings.size(); ++k) layout.offsets[k] = by_slot.offsets[slot_of[k]];
  // Slots join whole lifetimes, which can place worse than the rings one by one (bands of several
  // rows keep most rows live across steps): the smaller of the two.
  return layout.bytes < by_lifetime.bytes ? layout : by_lifetime;
}

namespace {

bool is_caller(const Graph& graph, TensorId t) {
  return graph.is_output(t) || std::find(graph.inputs.begin(), graph.inputs.end(), t) != graph.inputs.end();
}

bool is_ring(TensorRole role) {
  return role == TensorRole::Ring || role == TensorRole::Loaded || role == TensorRole::Stored;
}

class Scheduler {
public:
  Scheduler(const Analysis& analysis, OpId first, OpId last, std::span<const int> band_rows,
            std::span<const TensorRole> roles, std::span<const ZeroRows> zero_rows)
      : graph_(analysis.graph()), analysis_(analysis), first_(first), last_(last), band_rows_(band_rows), roles_(roles),
        zero_rows_(zero_rows) {
    const size_t ops = static_cast<size_t>(last - first + 1);
    if (band_rows.size() != ops) fail("schedule of ops [{}, {}]: {} band sizes for {} ops", first, last, band_rows.size(), ops);
    want_.assign(ops, 0);
    done_.assign(ops, 0);
    total_.resize(ops);
    tensors_.resize(graph_.tensors.size());
    for (OpId o = first; o <= last; ++o) {
      const Op& op = graph_.op(o);
      total_[index(o)] = rows::event_count(graph_, op);
      for (size_t k = 0; k < op.inputs.size(); ++k) {
        Track& t = track(op.inputs[k]);
        t.readers.push_back(marks_.size());
        // The rows of zeros above the tensor are live until every reader has moved past them.
        const int64_t above = zeros(op.inputs[k]).above;
        t.lo = -above;
        marks_.push_back(-above);
      }
      mark_base_.push_back(marks_.size() - op.inputs.size());
      track(op.output).produced_here = true;
    }
  }

  SpanSchedule run() {
    for (const RowEvent& ev : analysis_.span_events(first_, last_)) {
      want_[index(ev.op)] = ev.row + 1;
      while (fire_one()) {
      }
    }
    for (OpId o = first_; o <= last_; ++o) {
      if (done_[index(o)] != total_[index(o)]) {
        fail("{}: the fused schedule of ops [{}, {}] stalls at op \"{}\" ({} of {} events)", graph_.source, first_, last_,
             graph_.op(o).name, done_[index(o)], total_[index(o)]);
      }
    }
    for (TensorId t = 0; t < static_cast<TensorId>(tensors_.size()); ++t) {
      const Track& tr = tensors_[static_cast<size_t>(t)];
      if (is_ring(role(t)) && tr.max_rows > 0) result_.rings.push_back({t, tr.max_rows, row_bytes(t)});
    }
    return std::move(result_);
  }

private:
  struct Track {
    int64_t produced = 0;  // rows complete (readable)
    int64_t hi = 0;        // rows materialised or loaded
    int64_t lo = 0;        // first row a reader still needs
    int64_t max_rows = 0;
    bool produced_here = false;
    std::vector<size_t> readers;  // indices into marks_
  };

  size_t index(OpId o) const { return static_cast<size_t>(o - first_); }
  Track& track(TensorId t) { return tensors_[static_cast<size_t>(t)]; }
  TensorRole role(TensorId t) const { return roles_[static_cast<size_t>(t)]; }
  int64_t row_bytes(TensorId t) const { return analysis_.tensor_bytes(t) / graph_.tensor(t).shape.h; }
  ZeroRows zeros(TensorId t) const { return zero_rows_.empty() ? ZeroRows{} : zero_rows_[static_cast<size_t>(t)]; }

  // The first input row event `e` of `op` needs, counting the rows of zeros above its input k.
  int64_t first_needed(const Op& op, size_t k, int64_t e) const {
    const rows::Band band = rows::band(graph_, op, k, e);
    const int64_t above = zeros(op.inputs[k]).above;
    if (above == 0 || rows::mode_of(graph_, op) != rows::Mode::Window || band.first > 0) return band.first;
    return std::max(-above, rows::window_rows(op, e).first);
  }

  void grow(TensorId t, int64_t hi) {
    Track& tr = track(t);
    tr.hi = std::max(tr.hi, hi);
    tr.max_rows = std::max(tr.max_rows, tr.hi - tr.lo);
  }

  // Readable rows of an input: external tensors held whole or loaded on demand have them all.
  int64_t readable(TensorId t) {
    const Track& tr = track(t);
    if (!tr.produced_here) return graph_.tensor(t).shape.h;
    return tr.produced;
  }

  bool fire_one() {
    for (OpId o = last_; o >= first_; --o) {
      const size_t i = index(o);
      const int64_t pending = want_[i] - done_[i];
      if (pending <= 0) continue;
      const int64_t band = band_rows_[i];
      if (pending < band && want_[i] < total_[i]) continue;  // wait for a whole band
      const int64_t count = std::min(band, pending);
      const Op& op = graph_.op(o);
      bool ready = true;
      for (size_t k = 0; k < op.inputs.size() && ready; ++k) {
        ready = rows::band(graph_, op, k, done_[i] + count - 1).last < readable(op.inputs[k]);
      }
      if (!ready) continue;
      emit(o, done_[i], count);
      return true;
    }
    return false;
  }

  void emit(OpId o, int64_t first, int64_t count) {
    const Op& op = graph_.op(o);
    const size_t i = index(o);
    const int64_t end = first + count;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const TensorId t = op.inputs[k];
      if (role(t) != TensorRole::Loaded) continue;
      const int64_t need = rows::band(graph_, op, k, end - 1).last + 1;
      Track& tr = track(t);
      // Rows every reader has already skipped (strided windows) are not loaded.
      const int64_t from = std::max(tr.hi, tr.lo);
      if (need > from) {
        result_.steps.push_back({StepKind::Load, -1, t, static_cast<int32_t>(from), static_cast<int32_t>(need - from)});
        grow(t, need);
      }
    }
    result_.steps.push_back({StepKind::Compute, o, -1, static_cast<int32_t>(first), static_cast<int32_t>(count)});
    done_[i] = end;
    const bool accumulates = rows::mode_of(graph_, op) == rows::Mode::Accumulate;
    Track& out = track(op.output);
    const int64_t produced_before = out.produced;
    if (accumulates) {
      if (first == 0) grow(op.output, 1);
      if (end == total_[i]) out.produced = 1;
    } else {
      grow(op.output, out.hi + count);
      out.produced += count;
    }
    // Rows of zeros below an input are live from the first window that reaches them.
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const int64_t below = zeros(op.inputs[k]).below;
      const int64_t h = graph_.input_of(op, k).shape.h;
      if (below == 0) continue;
      const int64_t bottom = rows::window_rows(op, end - 1).last;
      if (bottom >= h) grow(op.inputs[k], std::min(bottom, h + below - 1) + 1);
    }
    // Release what this op has moved past.
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      marks_[mark_base_[i] + k] = end < total_[i] ? first_needed(op, k, end) : graph_.input_of(op, k).shape.h;
    }
    for (const TensorId t : op.inputs) {
      Track& tr = track(t);
      int64_t lo = INT64_MAX;
      for (size_t r : tr.readers) lo = std::min(lo, marks_[r]);
      tr.lo = std::max(tr.lo, lo);
    }
    if (out.produced > produced_before && role(op.output) == TensorRole::Stored) {
      result_.steps.push_back({StepKind::Store, -1, op.output, static_cast<int32_t>(produced_before),
                               static_cast<int32_t>(out.produced - produced_before)});
    }
    // Rows no reader in the span waits for leave as soon as they are complete.
    if (out.readers.empty()) out.lo = out.produced;
  }

  const Graph& graph_;
  const Analysis& analysis_;
  OpId first_, last_;
  std::span<const int> band_rows_;
  std::span<const TensorRole> roles_;
  std::span<const ZeroRows> zero_rows_;
  std::vector<int64_t> want_, done_, total_;
  std::vector<Track> tensors_;
  std::vector<int64_t> marks_;
  std::vector<size_t> mark_base_;
  SpanSchedule result_;
};

}  // namespace

SpanSchedule schedule_span(const Analysis& analysis, OpId first, OpId last, std::span<const int> band_rows,
                           std::span<const TensorRole> roles, std::span<const ZeroRows> zero_rows) {
  if (first < 0 || last < first || last >= analysis.op_count()) fail("invalid span [{}, {}]", first, last);
  if (roles.size() != analysis.graph().tensors.size()) fail("schedule: {} roles for {} tensors", roles.size(), analysis.graph().tensors.size());
  if (!zero_rows.empty() && zero_rows.size() != roles.size()) {
    fail("schedule: zero rows for {} of {} tensors", zero_rows.size(), roles.size());
  }
  return Scheduler(analysis, first, last, band_rows, roles, zero_rows).run();
}

std::vector<int> partition_of_ops(const Plan& plan, size_t op_count) {
  std::vector<int> partition_of(op_count, 0);
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    for (OpId o = plan.partitions[p].first_op; o <= plan.partitions[p].last_op; ++o) {
      partition_of[static_cast<size_t>(o)] = static_cast<int>(p);
    }
  }
  return partition_of;
}

std::vector<BoundarySpan> boundary_spans(const Graph& graph, std::span<const int> partition_of) {
  std::vector<BoundarySpan> spans(graph.tensors.size());
  for (TensorId t = 0; t < static_cast<TensorId>(graph.tensors.size()); ++t) {
    const Tensor& tensor = graph.tensor(t);
    if (tensor.producer < 0 || is_caller(graph, t)) continue;
    const int home = partition_of[static_cast<size_t>(tensor.producer)];
    int last = home;
    for (OpId c : tensor.consumers) last = std::max(last, partition_of[static_cast<size_t>(c)]);
    if (last != home) spans[static_cast<size_t>(t)] = {home, last};
  }
  return spans;
}

int64_t live_boundary_bytes(const Analysis& analysis, std::span<const BoundarySpan> boundaries, int p) {
  int64_t live = 0;
  for (size_t t = 0; t < boundaries.size(); ++t) {
    if (boundaries[t].first >= 0 && boundaries[t].first <= p && p <= boundaries[t].last) live += analysis.tensor_bytes(static_cast<TensorId>(t));
  }
  return live;
}

std::vector<TensorRole> partition_roles(const Graph& graph, const Plan& plan, std::span<const BoundarySpan> boundaries,
                                        size_t p) {
  const Partition& part = plan.partitions[p];
  std::vector<TensorRole> roles(graph.tensors.size(), TensorRole::None);
  const auto decide = [&](TensorId t) {
    const Tensor& tensor = graph.tensor(t);
    if (is_caller(graph, t)) {
      if (nhwc_equals_nchw(tensor.shape)) return TensorRole::Whole;
      const bool here = tensor.producer >= part.first_op && tensor.producer <= part.last_op;
      return here && graph.is_output(t) ? TensorRole::Stored : TensorRole::Loaded;
    }
    return boundaries[static_cast<size_t>(t)].first >= 0 ? TensorRole::Whole : TensorRole::Ring;
  };
  for (OpId o = part.first_op; o <= part.last_op; ++o) {
    const Op& op = graph.op(o);
    for (TensorId t : op.inputs) roles[static_cast<size_t>(t)] = decide(t);
    roles[static_cast<size_t>(op.output)] = decide(op.output);
  }
  return roles;
}

namespace {

// Bytes of one event of an op: an output row, or an absorbed input row.
int64_t event_bytes(const Analysis& analysis, const Op& op) {
  const Graph& graph = analysis.graph();
  const bool accumulates = rows::mode_of(graph, op) == rows::Mode::Accumulate;
  const TensorId t = accumulates ? op.inputs[0] : op.output;
  return std::max<int64_t>(1, analysis.tensor_bytes(t) / graph.tensor(t).shape.h);
}

bool row_wise(const Graph& graph, const Op& op) {
  const bool windowed = op.kind == OpKind::Conv || op.kind == OpKind::MaxPool || op.kind == OpKind::AvgPool;
  return !windowed && rows::mode_of(graph, op) == rows::Mode::Window;
}

}  // namespace

std::vector<int> step_bands(const Analysis& analysis, const Plan& plan, int64_t band_bytes, bool filter_bands) {
  const Graph& graph = analysis.graph();
  std::vector<int> bands(graph.ops.size(), 1);
  const auto events = [&](OpId o) { return rows::event_count(graph, graph.op(o)); };
  if (band_bytes > 0) {
    for (OpId o = 0; o < static_cast<OpId>(graph.ops.size()); ++o) {
      bands[static_cast<size_t>(o)] =
          static_cast<int>(std::clamp<int64_t>(band_bytes / event_bytes(analysis, graph.op(o)), 1, events(o)));
    }
    return bands;
  }
  const std::vector<BoundarySpan> boundaries = boundary_spans(graph, partition_of_ops(plan, graph.ops.size()));
  for (size_t p = 0; p < plan.partitions.size(); ++p) {
    const Partition& part = plan.partitions[p];
    // What the executor allocates (a line buffer per tensor, more than the closure's peak of live
    // rows) and the filters must still fit the plan's capacity once banded.
    const int64_t room = part.fallback == Fallback::None ? plan.capacity_bytes - part.filter_bytes - part.stream_buffer_bytes : 0;
    const std::vector<TensorRole> roles = partition_roles(graph, plan, boundaries, p);
    const std::span<int> span(bands.data() + part.first_op, static_cast<size_t>(part.last_op - part.first_op + 1));
    // The line buffers under `banded`, packed by lifetime as the executor allocates them.
    const auto packed_rings = [&](std::span<const int> banded) {
      return schedule_span(analysis, part.first_op, part.last_op, banded, roles).packed_rings(graph, page_bytes()).bytes;
    };
    if (part.fallback == Fallback::StreamWeights) {
      // Filters that do not fit stream from memory once per step: the plan streams them once per
      // image, over the whole input (a single op between boundaries held whole). Whole-tensor steps
      // do that, and cost no line buffers where the op's tensors are held whole anyway.
      std::vector<int> whole(span.size());
      for (OpId o = part.first_op; o <= part.last_op; ++o) whole[static_cast<size_t>(o - part.first_op)] = events(o);
      if (packed_rings(whole) <= packed_rings(span)) std::copy(whole.begin(), whole.end(), span.begin());
      continue;
    }
    if (room <= 0) continue;
    // Uniform bands, the largest that fits: whole tensors, then, where every row is small, 512, 256
    // or 128 KiB a step.
    int64_t widest_row = 0;
    for (OpId o = part.first_op; o <= part.last_op; ++o) widest_row = std::max(widest_row, event_bytes(analysis, graph.op(o)));
    std::vector<int64_t> ladder = {std::numeric_limits<int64_t>::max()};
    if (widest_row <= kSmallRowBytes) ladder.insert(ladder.end(), {int64_t{512} << 10, int64_t{256} << 10, int64_t{128} << 10});
    bool uniform = false;
    for (const int64_t step_bytes : ladder) {
      std::vector<int> banded(span.size());
      for (OpId o = part.first_op; o <= part.last_op; ++o) {
        banded[static_cast<size_t>(o - part.first_op)] =
            static_cast<int>(std::clamp<int64_t>(step_bytes / event_bytes(analysis, graph.op(o)), 1, events(o)));
      }
      if (packed_rings(banded) <= room) {
        std::copy(banded.begin(), banded.end(), span.begin());
        uniform = true;
        break;
      }
    }
    if (uniform || !filter_bands) continue;
    struct Candidate {
      OpId op;
      int rows;
      double ratio;  // filter bytes per output row byte
    };
    std::vector<Candidate> candidates;
    for (OpId o = part.first_op; o <= part.last_op; ++o) {
      const Op& op = graph.op(o);
      if (op.kind != OpKind::Conv || rows::mode_of(graph, op) != rows::Mode::Window) continue;
      const int64_t row = event_bytes(analysis, op), filters = analysis.op(o).filter_bytes;
      const int64_t per_step = kFilterBytesPerOutputByte * row;
      const int64_t rows = std::clamp<int64_t>((filters + per_step - 1) / per_step, 1, events(o));
      if (rows > 1) candidates.push_back({o, static_cast<int>(rows), static_cast<double>(filters) / static_cast<double>(row)});
    }
    if (candidates.empty()) continue;
    std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) { return a.ratio > b.ratio; });
    if (packed_rings(span) >= room) continue;
    std::vector<int> conv_bands(span.size(), 1);
    const auto settle = [&] {
      for (OpId o = part.first_op; o <= part.last_op; ++o) {
        const Op& op = graph.op(o);
        int band = conv_bands[static_cast<size_t>(o - part.first_op)];
        if (row_wise(graph, op)) {
          for (TensorId t : op.inputs) {
            const OpId producer = graph.tensor(t).producer;
            if (producer >= part.first_op && producer < o) band = std::max(band, span[static_cast<size_t>(producer - part.first_op)]);
          }
        }
        span[static_cast<size_t>(o - part.first_op)] = static_cast<int>(std::min<int64_t>(band, events(o)));
      }
    };
    for (const Candidate& c : candidates) {
      // Its whole tensor where that fits (its filters read once per image, the fewest steps), else
      // the band, else one row.
      int& band = conv_bands[static_cast<size_t>(c.op - part.first_op)];
      for (const int rows : {static_cast<int>(events(c.op)), c.rows}) {
        band = rows;
        settle();
        if (packed_rings(span) <= room) break;
        band = 1;
      }
    }
    settle();  // the last candidate may have been taken back
  }
  return bands;
}

}  // namespace occam::exec
