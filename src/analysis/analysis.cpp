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
    for (TensorId in : op.inputs) {
      rf.size_h = std::max(rf.size_h, fields[static_cast<size_t>(in)].size_h);
      rf.size_w = std::max(rf.size_w, fields[static_cast<size_t>(in)].size_w);
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
  first_event_.assign(op_count, -1);
  last_event_.assign(op_count, -1);

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
      if (first_event_[o] < 0) first_event_[o] = static_cast<int32_t>(schedule_.size());
      last_event_[o] = static_cast<int32_t>(schedule_.size());
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

SpanClosure Analysis::closure(OpId first, OpId last) const {
  if (first < 0 || last < first || last >= op_count()) fail("invalid span [{}, {}]", first, last);
  const Graph& g = *graph_;
  const auto inside = [&](OpId o) { return o >= first && o <= last; };

  // Per tensor touched by the span: rows materialised (hi) and the first row any in-span consumer
  // still needs (lo); rows [lo, hi) are live. Tensors nobody inside reads are written out at once.
  struct Track {
    int64_t hi = 0;
    int64_t lo = 0;
    int64_t row_bytes = 0;
    int64_t max_rows = 0;
    int readers = 0;  // in-span consumers
    bool external = false;
  };
  std::vector<Track> track(g.tensors.size());
  std::vector<TensorId> touched;
  // watermark[o - first][k]: first row of input k that op o still needs.
  std::vector<std::vector<int64_t>> watermark(static_cast<size_t>(last - first + 1));
  const auto touch = [&](TensorId t, bool external) {
    Track& tr = track[static_cast<size_t>(t)];
    if (tr.row_bytes == 0) {
      const Tensor& tensor = g.tensor(t);
      tr.row_bytes = tensor_bytes(t) / tensor.shape.h;
      tr.external = external;
      touched.push_back(t);
    }
    return &tr;
  };
  int32_t begin = first_event_[static_cast<size_t>(first)];
  int32_t end = last_event_[static_cast<size_t>(first)];
  for (OpId o = first; o <= last; ++o) {
    const Op& op = g.op(o);
    for (TensorId in : op.inputs) {
      Track* tr = touch(in, !inside(g.tensor(in).producer));
      ++tr->readers;
    }
    touch(op.output, false);
    watermark[static_cast<size_t>(o - first)].assign(op.inputs.size(), 0);
    begin = std::min(begin, first_event_[static_cast<size_t>(o)]);
    end = std::max(end, last_event_[static_cast<size_t>(o)]);
  }
  // An input read twice by the same op (x + x) counts once.
  for (OpId o = first; o <= last; ++o) {
    const Op& op = g.op(o);
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      for (size_t m = 0; m < k; ++m) {
        if (op.inputs[m] == op.inputs[k]) --track[static_cast<size_t>(op.inputs[k])].readers;
      }
    }
  }

  int64_t live = 0;
  int64_t peak = 0;
  const auto set_lo = [&](Track& tr, int64_t lo) {
    const int64_t before = std::max<int64_t>(0, tr.hi - tr.lo);
    tr.lo = lo;
    live += (std::max<int64_t>(0, tr.hi - tr.lo) - before) * tr.row_bytes;
  };
  const auto set_hi = [&](Track& tr, int64_t hi) {
    const int64_t before = std::max<int64_t>(0, tr.hi - tr.lo);
    tr.hi = hi;
    const int64_t rows = std::max<int64_t>(0, tr.hi - tr.lo);
    live += (rows - before) * tr.row_bytes;
    tr.max_rows = std::max(tr.max_rows, rows);
  };

  for (int32_t i = begin; i <= end; ++i) {
    const RowEvent& ev = schedule_[static_cast<size_t>(i)];
    if (!inside(ev.op)) continue;
    const Op& op = g.op(ev.op);
    const bool accumulates = rows::mode_of(g, op) == rows::Mode::Accumulate;
    const int64_t count = rows::event_count(g, op);
    // External rows arrive just in time.
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      Track& tr = track[static_cast<size_t>(op.inputs[k])];
      if (tr.external) {
        const int64_t need = rows::band(g, op, k, ev.row).last + 1;
        if (need > tr.hi) set_hi(tr, need);
      }
    }
    Track& out = track[static_cast<size_t>(op.output)];
    if (!accumulates || ev.row == 0) set_hi(out, out.hi + 1);
    // A view (Concat, Flatten) assembles its row from its input rows in place: it only costs
    // memory where an input row must also survive for another reader.
    const bool view = is_view(op.kind);
    if (!view) peak = std::max(peak, live);
    // Free what this op no longer needs.
    auto& marks = watermark[static_cast<size_t>(ev.op - first)];
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      marks[k] = ev.row + 1 < count ? rows::band(g, op, k, ev.row + 1).first : g.input_of(op, k).shape.h;
    }
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const TensorId t = op.inputs[k];
      int64_t lo = INT64_MAX;
      for (OpId c : g.tensor(t).consumers) {
        if (!inside(c)) continue;
        const Op& consumer = g.op(c);
        for (size_t m = 0; m < consumer.inputs.size(); ++m) {
          if (consumer.inputs[m] == t) lo = std::min(lo, watermark[static_cast<size_t>(c - first)][m]);
        }
      }
      set_lo(track[static_cast<size_t>(t)], lo);
    }
    if (view) peak = std::max(peak, live);
    // Rows no in-span op reads are written out as soon as they are complete.
    const bool complete = !accumulates || ev.row + 1 == count;
    if (out.readers == 0 && complete) set_lo(out, out.hi);
  }

  SpanClosure result;
  const bool element = options_.granularity == Granularity::Element;
  for (TensorId t : touched) {
    const Track& tr = track[static_cast<size_t>(t)];
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
