#include "occam/analysis.hpp"

#include "analysis/rows.hpp"
#include "occam/error.hpp"

#include <algorithm>
#include <queue>

namespace occam {

std::string_view to_string(Granularity granularity) {
  return granularity == Granularity::Row ? "row" : "element";
}

Granularity parse_granularity(std::string_view text) {
  if (text == "row") return Granularity::Row;
  if (text == "element") return Granularity::Element;
  fail("granularity \"{}\": expected row or element", text);
}

int64_t SpanClosure::buffer_bytes() const {
  int64_t total = 0;
  for (const LineBuffer& b : buffers) total += b.rows * b.row_bytes;
  return total;
}

namespace {

bool is_view(OpKind kind) { return kind == OpKind::Concat || kind == OpKind::Flatten; }

std::vector<ReceptiveField> receptive_fields(const Graph& graph) {
  std::vector<ReceptiveField> fields(graph.tensors.size());
  for (const Op& op : graph.ops) {
    ReceptiveField rf = fields[static_cast<size_t>(op.inputs[0])];
    // Neighbouring outputs of a broadcast op are as far apart as those of its full-sized operand,
    // not of a per-channel one (a squeeze-and-excitation gate, whose jump is the whole image).
    const Shape& out = graph.output_of(op).shape;
    bool full_seen = false;
    for (TensorId in : op.inputs) {
      const ReceptiveField& f = fields[static_cast<size_t>(in)];
      rf.size_h = std::max(rf.size_h, f.size_h);
      rf.size_w = std::max(rf.size_w, f.size_w);
      const Shape& shape = graph.tensor(in).shape;
      if (shape.h == out.h && shape.w == out.w && (!full_seen || f.jump_h < rf.jump_h)) {
        rf.jump_h = f.jump_h;
        rf.jump_w = f.jump_w;
        full_seen = true;
      }
    }
    const Shape& in = graph.input_of(op).shape;
    switch (op.kind) {
      case OpKind::Conv:
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        rf.size_h += (op.window.extent_h() - 1) * rf.jump_h;
        rf.size_w += (op.window.extent_w() - 1) * rf.jump_w;
        rf.jump_h *= op.window.stride_h;
        rf.jump_w *= op.window.stride_w;
        break;
      case OpKind::AdaptiveAvgPool:
        rf.size_h += (in.h / op.pooled.h) * rf.jump_h;
        rf.size_w += (in.w / op.pooled.w) * rf.jump_w;
        rf.jump_h *= in.h / op.pooled.h;
        rf.jump_w *= in.w / op.pooled.w;
        break;
      case OpKind::GlobalAvgPool:
      case OpKind::Gemm:
      case OpKind::Flatten:
        rf.size_h += (in.h - 1) * rf.jump_h;
        rf.size_w += (in.w - 1) * rf.jump_w;
        rf.jump_h *= in.h;
        rf.jump_w *= in.w;
        break;
      default:
        break;
    }
    fields[static_cast<size_t>(op.output)] = rf;
  }
  return fields;
}

}  // namespace

Analysis::Analysis(const Graph& graph, AnalysisOptions options) : graph_(&graph), options_(options) {
  if (options_.bytes_per_elem != 0 && options_.bytes_per_elem != 1 && options_.bytes_per_elem != 2 &&
      options_.bytes_per_elem != 4) {
    fail("bytes per element must be 1, 2 or 4, got {}", options_.bytes_per_elem);
  }
  const std::vector<ReceptiveField> fields = receptive_fields(graph);
  stats_.reserve(graph.ops.size());
  for (const Op& op : graph.ops) {
    OpStats s;
    s.macs = op_macs(graph, op);
    const int elem = options_.bytes_per_elem != 0 ? options_.bytes_per_elem : graph.output_of(op).elem_bytes;
    s.filter_bytes = filter_elements(graph, op) * elem;
    for (TensorId in : op.inputs) s.input_bytes += tensor_bytes(in);
    s.output_bytes = tensor_bytes(op.output);
    s.receptive_field = fields[static_cast<size_t>(op.output)];
    stats_.push_back(s);
  }

  // The global symbolic schedule: load graph-input rows one at a time; after each, let the
  // deepest op that can produce a row do so, until none can (depth first keeps rows short-lived).
  const size_t op_count = graph.ops.size();
  std::vector<int64_t> available(graph.tensors.size(), 0);  // rows materialised per tensor
  std::vector<int64_t> next_event(op_count, 0);
  std::vector<int64_t> events(op_count);
  int64_t total_events = 0;
  for (size_t o = 0; o < op_count; ++o) {
    events[o] = rows::event_count(graph, graph.ops[o]);
    total_events += events[o];
  }
  schedule_.reserve(static_cast<size_t>(total_events));
  op_events_.assign(op_count, {});

  const auto ready = [&](size_t o) {
    const Op& op = graph.ops[o];
    if (next_event[o] >= events[o]) return false;
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      if (rows::band(graph, op, k, next_event[o]).last >= available[static_cast<size_t>(op.inputs[k])]) return false;
    }
    return true;
  };
  std::priority_queue<size_t> candidates;
  std::vector<bool> queued(op_count, false);
  const auto wake_consumers = [&](TensorId t) {
    for (OpId c : graph.tensor(t).consumers) {
      if (!queued[static_cast<size_t>(c)]) {
        queued[static_cast<size_t>(c)] = true;
        candidates.push(static_cast<size_t>(c));
      }
    }
  };
  size_t input_cursor = 0;
  while (static_cast<int64_t>(schedule_.size()) < total_events) {
    bool fired = false;
    while (!candidates.empty()) {
      const size_t o = candidates.top();
      candidates.pop();
      queued[o] = false;
      if (!ready(o)) continue;
      const Op& op = graph.ops[o];
      const int64_t e = next_event[o]++;
      op_events_[o].push_back(static_cast<int32_t>(schedule_.size()));
      schedule_.push_back({static_cast<OpId>(o), static_cast<int32_t>(e)});
      const bool accumulates = rows::mode_of(graph, op) == rows::Mode::Accumulate;
      if (!accumulates || next_event[o] == events[o]) {
        ++available[static_cast<size_t>(op.output)];
        wake_consumers(op.output);
      }
      queued[o] = true;
      candidates.push(o);
      fired = true;
      break;
    }
    if (fired) continue;
    // Nothing can run: bring in the next row of the least advanced graph input.
    bool loaded = false;
    for (size_t i = 0; i < graph.inputs.size(); ++i) {
      const TensorId t = graph.inputs[(input_cursor + i) % graph.inputs.size()];
      if (available[static_cast<size_t>(t)] < graph.tensor(t).shape.h) {
        ++available[static_cast<size_t>(t)];
        wake_consumers(t);
        input_cursor = (input_cursor + i + 1) % graph.inputs.size();
        loaded = true;
        break;
      }
    }
    if (!loaded) {
      fail("{}: the row schedule stalls after {} of {} row events (an op needs rows that are never produced)",
           graph.source, schedule_.size(), total_events);
    }
  }
}

int64_t Analysis::tensor_bytes(TensorId id) const {
  const Tensor& t = graph_->tensor(id);
  return t.shape.image_elements() * (options_.bytes_per_elem != 0 ? options_.bytes_per_elem : t.elem_bytes);
}

SpanBoundary Analysis::boundary(OpId first, OpId last) const {
  if (first < 0 || last < first || last >= op_count()) fail("invalid span [{}, {}]", first, last);
  SpanBoundary b;
  const auto inside = [&](OpId o) { return o >= first && o <= last; };
  for (OpId o = first; o <= last; ++o) {
    const Op& op = graph_->op(o);
    for (TensorId in : op.inputs) {
      if (!inside(graph_->tensor(in).producer) &&
          std::find(b.inputs.begin(), b.inputs.end(), in) == b.inputs.end()) {
        b.inputs.push_back(in);
        b.input_bytes += tensor_bytes(in);
      }
    }
    const Tensor& out = graph_->tensor(op.output);
    const bool leaves = graph_->is_output(op.output) ||
                        std::any_of(out.consumers.begin(), out.consumers.end(), [&](OpId c) { return !inside(c); });
    if (leaves) {
      b.outputs.push_back(op.output);
      b.output_bytes += tensor_bytes(op.output);
    }
    b.filter_bytes += stats_[static_cast<size_t>(o)].filter_bytes;
    b.macs += stats_[static_cast<size_t>(o)].macs;
  }
  return b;
}

std::vector<int32_t> Analysis::span_positions(OpId first, OpId last) const {
  std::vector<int32_t> order;
  for (OpId o = first; o <= last; ++o) {
    const auto& events = op_events_[static_cast<size_t>(o)];
    order.insert(order.end(), events.begin(), events.end());
  }
  if (first != last) std::sort(order.begin(), order.end());
  return order;
}

std::vector<RowEvent> Analysis::span_events(OpId first, OpId last) const {
  if (first < 0 || last < first || last >= op_count()) fail("invalid span [{}, {}]", first, last);
  std::vector<RowEvent> events;
  for (const int32_t position : span_positions(first, last)) events.push_back(schedule_[static_cast<size_t>(position)]);
  return events;
}

SpanClosure Analysis::closure(OpId first, OpId last) const {
  if (first < 0 || last < first || last >= op_count()) fail("invalid span [{}, {}]", first, last);
  const Graph& g = *graph_;
  const auto inside = [&](OpId o) { return o >= first && o <= last; };

  // Per tensor touched by the span: rows materialised (hi) and the first row any in-span reader
  // still needs (lo); rows [lo, hi) are live. Tensors nobody inside reads are written out at once.
  struct Reader {
    size_t mark;  // index into `marks`
  };
  struct Track {
    int64_t hi = 0;
    int64_t lo = 0;
    int64_t row_bytes = 0;
    int64_t max_rows = 0;
    bool external = false;
    std::vector<Reader> readers;
  };
  std::vector<int> slot(g.tensors.size(), -1);
  std::vector<Track> track;
  std::vector<TensorId> touched;
  const auto touch = [&](TensorId t) -> Track& {
    int& s = slot[static_cast<size_t>(t)];
    if (s < 0) {
      s = static_cast<int>(track.size());
      Track tr;
      tr.row_bytes = tensor_bytes(t) / g.tensor(t).shape.h;
      tr.external = !inside(g.tensor(t).producer);
      track.push_back(std::move(tr));
      touched.push_back(t);
    }
    return track[static_cast<size_t>(s)];
  };
  // marks[mark_base[o - first] + k]: first row of input k that op o still needs.
  std::vector<size_t> mark_base(static_cast<size_t>(last - first + 1));
  std::vector<int64_t> marks;
  for (OpId o = first; o <= last; ++o) {
    const Op& op = g.op(o);
    mark_base[static_cast<size_t>(o - first)] = marks.size();
    for (TensorId in : op.inputs) {
      touch(in).readers.push_back({marks.size()});
      marks.push_back(0);
    }
    touch(op.output);
  }

  int64_t live = 0;
  int64_t peak = 0;
  const auto set_range = [&](Track& tr, int64_t lo, int64_t hi) {
    const int64_t before = std::max<int64_t>(0, tr.hi - tr.lo);
    tr.lo = lo;
    tr.hi = hi;
    const int64_t rows = std::max<int64_t>(0, hi - lo);
    live += (rows - before) * tr.row_bytes;
    tr.max_rows = std::max(tr.max_rows, rows);
  };

  for (const int32_t position : span_positions(first, last)) {
    const RowEvent& ev = schedule_[static_cast<size_t>(position)];
    const Op& op = g.op(ev.op);
    const bool accumulates = rows::mode_of(g, op) == rows::Mode::Accumulate;
    const int64_t count = rows::event_count(g, op);
    // External rows arrive just in time.
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      Track& tr = track[static_cast<size_t>(slot[static_cast<size_t>(op.inputs[k])])];
      if (tr.external) {
        const int64_t need = rows::band(g, op, k, ev.row).last + 1;
        if (need > tr.hi) set_range(tr, tr.lo, need);
      }
    }
    Track& out = track[static_cast<size_t>(slot[static_cast<size_t>(op.output)])];
    if (!accumulates || ev.row == 0) set_range(out, out.lo, out.hi + 1);
    // A view (Concat, Flatten) assembles its row from its input rows in place: it only costs
    // memory where an input row must also survive for another reader.
    const bool view = is_view(op.kind);
    if (!view) peak = std::max(peak, live);
    // Free what this op no longer needs.
    const size_t base = mark_base[static_cast<size_t>(ev.op - first)];
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      marks[base + k] = ev.row + 1 < count ? rows::band(g, op, k, ev.row + 1).first : g.input_of(op, k).shape.h;
    }
    for (const TensorId t : op.inputs) {
      Track& tr = track[static_cast<size_t>(slot[static_cast<size_t>(t)])];
      int64_t lo = INT64_MAX;
      for (const Reader& r : tr.readers) lo = std::min(lo, marks[r.mark]);
      set_range(tr, lo, tr.hi);
    }
    if (view) peak = std::max(peak, live);
    // Rows no in-span op reads are written out as soon as they are complete.
    const bool complete = !accumulates || ev.row + 1 == count;
    if (out.readers.empty() && complete) set_range(out, out.hi, out.hi);
  }

  SpanClosure result;
  const bool element = options_.granularity == Granularity::Element;
  for (TensorId t : touched) {
    const Track& tr = track[static_cast<size_t>(slot[static_cast<size_t>(t)])];
    if (tr.max_rows == 0) continue;
    result.buffers.push_back({t, tr.max_rows, tr.row_bytes});
    if (element) {
      // Element streaming keeps all but the newest row whole; of the row in progress only the
      // widest kernel strip of its in-span readers (one column for a span output) is live.
      int64_t strip_columns = 1;
      for (OpId c : g.tensor(t).consumers) {
        if (inside(c)) strip_columns = std::max<int64_t>(strip_columns, g.op(c).window.extent_w());
      }
      const Shape& shape = g.tensor(t).shape;
      const int64_t column_bytes = tr.row_bytes / shape.w;
      result.bytes += (tr.max_rows - 1) * tr.row_bytes + std::min(strip_columns, shape.w) * column_bytes;
    }
  }
  if (!element) result.bytes = peak;
  return result;
}

namespace {

// Range addition and global maximum over schedule positions. Additions are O(1) on a difference
// array; the maximum is a prefix-sum scan, taken once per span extension. A span extension adds
// hundreds of row intervals but asks for one maximum, so this beats a segment tree several times.
class LiveProfile {
public:
  // Reuses its storage: sweeps start one profile per span start, and at high resolution the
  // schedule has tens of thousands of positions.
  void reset(size_t size) { delta_.assign(size + 1, 0); }

  void add(size_t first, size_t last, int64_t value) {
    delta_[first] += value;
    delta_[last + 1] -= value;
  }
  int64_t max() const {
    int64_t live = 0;
    int64_t peak = 0;
    for (size_t p = 0; p + 1 < delta_.size(); ++p) {
      live += delta_[p];
      peak = std::max(peak, live);
    }
    return peak;
  }

private:
  std::vector<int64_t> delta_;
};

}  // namespace

void Analysis::closures_from(OpId first, const std::function<bool(OpId last, int64_t bytes)>& visit) const {
  if (first < 0 || first >= op_count()) fail("invalid span start {}", first);
  if (options_.granularity != Granularity::Row) {
    for (OpId last = first; last < op_count(); ++last) {
      if (!visit(last, closure(first, last).bytes)) return;
    }
    return;
  }
  const Graph& g = *graph_;
  // Every row is live over [alloc, end] in schedule positions, the same rule as closure(): rows
  // count from their production (or just-in-time load) to the event of their last in-span reader,
  // inclusive, except that a view reader (Concat, Flatten) reuses them in place at its event.
  // end < alloc means the row is never live at once with anything (e.g. skipped by a stride).
  struct Rows {
    std::vector<int32_t> alloc;
    std::vector<int32_t> end;
    int64_t row_bytes = 0;
    bool external = false;
    bool read = false;  // an in-span op reads it (else its rows are written out when produced)
  };
  std::vector<Rows> rows_of(g.tensors.size());
  thread_local LiveProfile profile;
  profile.reset(schedule_.size());
  // Moves a row's live interval, touching the profile only where the old and new intervals differ.
  const auto set_interval = [&](Rows& r, size_t row, int32_t alloc, int32_t end) {
    const int32_t old_alloc = r.alloc[row];
    const int32_t old_end = r.end[row];
    r.alloc[row] = alloc;
    r.end[row] = end;
    const bool was_live = old_alloc <= old_end;
    const bool is_live = alloc <= end;
    const auto add = [&](int32_t first, int32_t last, int64_t bytes) {
      if (first <= last) profile.add(static_cast<size_t>(first), static_cast<size_t>(last), bytes);
    };
    if (was_live && is_live && alloc <= old_end && old_alloc <= end) {
      add(std::min(alloc, old_alloc), std::max(alloc, old_alloc) - 1, alloc < old_alloc ? r.row_bytes : -r.row_bytes);
      add(std::min(end, old_end) + 1, std::max(end, old_end), end > old_end ? r.row_bytes : -r.row_bytes);
      return;
    }
    if (was_live) add(old_alloc, old_end, -r.row_bytes);
    if (is_live) add(alloc, end, r.row_bytes);
  };
  const auto start_rows = [&](TensorId t, bool external) -> Rows& {
    Rows& r = rows_of[static_cast<size_t>(t)];
    if (r.row_bytes == 0) {
      const int64_t h = g.tensor(t).shape.h;
      r.row_bytes = tensor_bytes(t) / h;
      r.external = external;
      r.alloc.assign(static_cast<size_t>(h), INT32_MAX);
      r.end.assign(static_cast<size_t>(h), -1);
    }
    return r;
  };

  for (OpId last = first; last < op_count(); ++last) {
    const Op& op = g.op(last);
    const auto& positions = op_events_[static_cast<size_t>(last)];
    const int64_t count = static_cast<int64_t>(positions.size());
    const bool accumulates = rows::mode_of(g, op) == rows::Mode::Accumulate;
    const bool view = is_view(op.kind);
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const TensorId t = op.inputs[k];
      const Tensor& tensor = g.tensor(t);
      Rows& r = start_rows(t, tensor.producer < first);
      // This reader releases row `row` at the event after which its band has moved past it.
      int64_t released = 0;
      int64_t needed = 0;
      for (int64_t e = 0; e < count; ++e) {
        const int32_t position = positions[static_cast<size_t>(e)];
        if (r.external) {
          const int64_t last_row = rows::band(g, op, k, e).last;
          for (; needed <= last_row; ++needed) {
            const auto row = static_cast<size_t>(needed);
            set_interval(r, row, std::min(r.alloc[row], position), r.end[row]);
          }
        }
        const int64_t mark = e + 1 < count ? rows::band(g, op, k, e + 1).first : tensor.shape.h;
        const int32_t end = view ? position - 1 : position;
        for (; released < mark; ++released) {
          const auto row = static_cast<size_t>(released);
          // The first reader of a produced row replaces its write-out; later readers extend it.
          set_interval(r, row, r.alloc[row], r.read || r.external ? std::max(r.end[row], end) : end);
        }
      }
      r.read = true;
    }
    // The new op's rows are span outputs until a later op in the span reads them: live at their
    // production only (an accumulator from its first to its last event).
    Rows& out = start_rows(op.output, false);
    for (int64_t e = 0; e < count; ++e) {
      const int32_t position = positions[static_cast<size_t>(e)];
      if (accumulates) {
        if (e == 0) set_interval(out, 0, position, positions.back());
      } else {
        set_interval(out, static_cast<size_t>(e), position, position);
      }
    }
    if (!visit(last, profile.max())) return;
  }
}

int64_t Analysis::full_reuse_activation_bytes() const {
  int64_t total = 0;
  for (TensorId t : graph_->inputs) total += tensor_bytes(t);
  for (TensorId t : graph_->outputs) total += tensor_bytes(t);
  return total;
}

int64_t Analysis::total_filter_bytes() const {
  int64_t total = 0;
  for (const OpStats& s : stats_) total += s.filter_bytes;
  return total;
}

int64_t Analysis::base_case_activation_bytes() const {
  int64_t total = 0;
  for (size_t o = 0; o < stats_.size(); ++o) {
    if (!is_view(graph_->ops[o].kind)) total += stats_[o].input_bytes + stats_[o].output_bytes;
  }
  return total;
}

}  // namespace occam
