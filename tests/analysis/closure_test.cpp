#include "occam/analysis.hpp"
#include "occam/error.hpp"
#include "occam/model.hpp"
#include "support/graphs.hpp"

#include <gtest/gtest.h>

#include <map>

namespace occam {
namespace {

using testing::ChainLayer;

AnalysisOptions one_byte(Granularity granularity = Granularity::Row) { return {1, granularity}; }

// Steady state of a stride-1 chain under the depth-first row schedule: every layer keeps K-1 rows
// of its input; the layer producing a row additionally holds its newest input row and the new
// output row. closure = sum_l (K_l - 1) R_{l-1} + max_j (R_{j-1} + R_j).
int64_t chain_row_closed_form(const Graph& g) {
  int64_t retained = 0;
  int64_t transient = 0;
  for (const Op& op : g.ops) {
    const int64_t in_row = g.input_of(op).shape.c * g.input_of(op).shape.w;
    const int64_t out_row = g.output_of(op).shape.c * g.output_of(op).shape.w;
    retained += (op.window.kernel_h - 1) * in_row;
    transient = std::max(transient, in_row + out_row);
  }
  return retained + transient;
}

// Element streaming: each layer keeps K-1 whole input rows plus a K_w-wide strip of the row in
// progress ((K-1) W C + K_w C); the final output is written one column at a time.
int64_t chain_element_closed_form(const Graph& g) {
  int64_t total = 0;
  for (const Op& op : g.ops) {
    const Shape& in = g.input_of(op).shape;
    total += (op.window.kernel_h - 1) * in.w * in.c + op.window.kernel_w * in.c;
  }
  return total + g.output_of(g.ops.back()).shape.c;
}

TEST(Closure, SymbolicScheduleEqualsClosedFormOnStrideOneChains) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<ChainLayer> layers;
    const int depth = std::uniform_int_distribution<int>(1, 8)(rng);
    for (int l = 0; l < depth; ++l) {
      layers.push_back({std::array{1, 3, 5, 7}[std::uniform_int_distribution<size_t>(0, 3)(rng)], 1,
                        std::uniform_int_distribution<int64_t>(1, 32)(rng)});
    }
    // Tall enough for every layer to reach its steady state at once.
    const Graph g = testing::chain(layers, {1, std::uniform_int_distribution<int64_t>(1, 8)(rng), 96,
                                            std::uniform_int_distribution<int64_t>(7, 40)(rng)});
    const Analysis row(g, one_byte());
    EXPECT_EQ(row.closure(0, depth - 1).bytes, chain_row_closed_form(g)) << "trial " << trial;
    const Analysis element(g, one_byte(Granularity::Element));
    EXPECT_EQ(element.closure(0, depth - 1).bytes, chain_element_closed_form(g)) << "trial " << trial;
  }
}

TEST(Closure, StridedChainsLieBetweenTheirLineBufferBounds) {
  // With strides the per-layer windows fill at different phases, so the peak is bracketed by
  // "every layer holds K - S rows" and "every layer holds K rows plus one output row".
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<ChainLayer> layers;
    const int depth = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int l = 0; l < depth; ++l) {
      layers.push_back({std::array{3, 5}[std::uniform_int_distribution<size_t>(0, 1)(rng)],
                        std::uniform_int_distribution<int>(1, 2)(rng), std::uniform_int_distribution<int64_t>(1, 8)(rng)});
    }
    const Graph g = testing::chain(layers, {1, 3, 128, 16});
    const Analysis a(g, one_byte());
    int64_t lower = 0;
    int64_t upper = 0;
    for (const Op& op : g.ops) {
      const int64_t in_row = g.input_of(op).shape.c * g.input_of(op).shape.w;
      lower += (op.window.kernel_h - op.window.stride_h) * in_row;
      upper += op.window.kernel_h * in_row;
    }
    upper += g.output_of(g.ops.back()).shape.c * g.output_of(g.ops.back()).shape.w;
    const int64_t closure = a.closure(0, depth - 1).bytes;
    EXPECT_GE(closure, lower);
    EXPECT_LE(closure, upper);
  }
}

// x (1 channel, 8 rows, 1 column, 1 byte per element) -> a = conv3x3(x) -> b = conv3x3(a) -> y = b + x.
// Worked by hand (see docs/closure.md): in steady state, when b produces row r, x holds rows
// r..r+2 for the skip (the add needs x[r] while conv a has already read x[r+2]), a holds r..r+2,
// and b's new row: 3 + 3 + 1 = 7 bytes.
TEST(Closure, ResidualBlockByHand) {
  GraphBuilder b("residual", "test");
  const TensorId x = b.input("x", {1, 1, 8, 1});
  const TensorId a = b.add(testing::conv_op("a", x, 1, 3));
  const TensorId c = b.add(testing::conv_op("b", a, 1, 3));
  b.mark_output(b.add(testing::nary_op("add", OpKind::Add, {c, x})));
  const Graph g = std::move(b).finish();
  const Analysis analysis(g, one_byte());
  const SpanClosure closure = analysis.closure(0, 2);
  EXPECT_EQ(closure.bytes, 7);
  // Line buffers: x needs 3 rows for the skip, a 3 rows for conv b, b and the output 1 row each.
  std::map<std::string, int64_t> rows;
  for (const LineBuffer& lb : closure.buffers) rows[g.tensor(lb.tensor).name] = lb.rows;
  EXPECT_EQ(rows["x"], 3);
  EXPECT_EQ(rows["a"], 3);
  EXPECT_EQ(rows["b"], 1);
  // Without the skip, the two convolutions alone hold 2 + 2 rows between events + 1 + 1 in flight.
  EXPECT_EQ(analysis.closure(0, 1).bytes, 6);
  // Scaling the channels scales the closure.
  GraphBuilder wide("residual", "test");
  const TensorId wx = wide.input("x", {1, 4, 8, 5});
  const TensorId wa = wide.add(testing::conv_op("a", wx, 4, 3));
  const TensorId wc = wide.add(testing::conv_op("b", wa, 4, 3));
  wide.mark_output(wide.add(testing::nary_op("add", OpKind::Add, {wc, wx})));
  const Graph wg = std::move(wide).finish();
  EXPECT_EQ(Analysis(wg, one_byte()).closure(0, 2).bytes, 7 * 4 * 5);
}

// Inception-style block on x (1 channel, 8 rows, 1 column, 1 byte): c1 = conv1x1(x),
// c2 = conv3x3(x), p3 = maxpool3x3(x), c3 = conv1x1(p3), y = concat(c1, c2, c3); the concat
// assembles its rows in place from the branch rows. Worked by hand: in the steady state, when c3
// produces row r, x holds r-1..r+1 (c2 and the pool still need them), c1 holds row r+1 (it ran
// ahead), p3 row r, c3 row r: 3 + 1 + 1 + 1 = 6 bytes. At the bottom edge the padded pool needs no
// new input row for its last output, so the pool branch runs a row ahead of c2: when c3 produces
// row 7, x holds rows 5..7 for c2's row 6, c1 row 6, p3 row 7 and c3 rows 6 and 7: 7 bytes.
TEST(Closure, InceptionBlockByHand) {
  GraphBuilder b("inception", "test");
  const TensorId x = b.input("x", {1, 1, 8, 1});
  const TensorId c1 = b.add(testing::conv_op("c1", x, 1, 1));
  const TensorId c2 = b.add(testing::conv_op("c2", x, 1, 3));
  const TensorId p3 = b.add(testing::pool_op("p3", x, OpKind::MaxPool, 3, 1, 1));
  const TensorId c3 = b.add(testing::conv_op("c3", p3, 1, 1));
  b.mark_output(b.add(testing::nary_op("concat", OpKind::Concat, {c1, c2, c3})));
  const Graph g = std::move(b).finish();
  const Analysis analysis(g, one_byte());
  EXPECT_EQ(analysis.closure(0, 4).bytes, 7);
  std::map<std::string, int64_t> rows;
  for (const LineBuffer& lb : analysis.closure(0, 4).buffers) rows[g.tensor(lb.tensor).name] = lb.rows;
  EXPECT_EQ(rows["x"], 3);
  EXPECT_EQ(rows["c1"], 1);
  EXPECT_EQ(rows["c3"], 2);
}

TEST(Closure, GrowsWithTheSpan) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    const Graph g = testing::random_dag(rng, 10);
    const Analysis a(g, one_byte());
    const int n = a.op_count();
    for (int i = 0; i < n; ++i) {
      for (int j = i; j < n; ++j) {
        const int64_t here = a.closure(i, j).bytes;
        if (j + 1 < n) {
          EXPECT_LE(here, a.closure(i, j + 1).bytes) << "trial " << trial << " span " << i << ".." << j;
        }
        if (i > 0) {
          EXPECT_LE(here, a.closure(i - 1, j).bytes) << "trial " << trial << " span " << i << ".." << j;
        }
      }
    }
  }
}

TEST(Closure, BuffersCoverThePeak) {
  const Graph g = zoo_model("resnet18");
  const Analysis a(g, {2, Granularity::Row});
  const SpanClosure whole = a.closure(0, a.op_count() - 1);
  EXPECT_GE(whole.buffer_bytes(), whole.bytes);
  EXPECT_GT(whole.bytes, 0);
}

TEST(Analysis, BaseCaseAndFullReuseOnAChain) {
  const Graph g = testing::chain({{3, 1, 4}, {3, 1, 2}}, {1, 1, 10, 10});
  const Analysis a(g, one_byte());
  // Layer by layer: conv0 reads 100 and writes 400; conv1 reads 400 and writes 200.
  EXPECT_EQ(a.base_case_activation_bytes(), 100 + 400 + 400 + 200);
  EXPECT_EQ(a.full_reuse_activation_bytes(), 100 + 200);
  EXPECT_EQ(a.total_filter_bytes(), (4 * 9 + 4) + (2 * 4 * 9 + 2));
}

TEST(Analysis, ScheduleCoversEveryRowOnce) {
  const Graph g = zoo_model("googlenet");
  const Analysis a(g);
  int64_t expected = 0;
  for (const Op& op : g.ops) {
    const bool accumulates = (op.kind == OpKind::Gemm || op.kind == OpKind::GlobalAvgPool) && g.input_of(op).shape.h > 1;
    expected += accumulates ? g.input_of(op).shape.h : g.output_of(op).shape.h;
  }
  EXPECT_EQ(static_cast<int64_t>(a.schedule().size()), expected);
}

TEST(Analysis, ReceptiveFieldOfVggStages) {
  const Graph g = zoo_model("vgg16");
  const Analysis a(g);
  // conv1_1, conv1_2: 3 then 5 rows of the image; after pool1 and conv2_1: 5 + 1 + 2*2 = 10.
  EXPECT_EQ(a.op(0).receptive_field.size_h, 3);
  EXPECT_EQ(a.op(1).receptive_field.size_h, 5);
  EXPECT_EQ(a.op(2).receptive_field.size_h, 6);
  EXPECT_EQ(a.op(3).receptive_field.size_h, 10);
  EXPECT_EQ(a.op(3).receptive_field.jump_h, 2);
}

// Squeeze-and-excitation: Mul(gate, x) with the per-channel gate first (as torch exports
// `scale * input`). The product's neighbouring rows are x's, one image row apart, not the gate's
// whole image; taking the gate's jump multiplied it by the height at every block and overflowed
// int64 in efficientnet_b0 (UBSan).
TEST(Analysis, BroadcastGatesKeepTheFullOperandsJump) {
  GraphBuilder b("se_chain", "test");
  TensorId x = b.input("x", {1, 8, 64, 64});
  for (int block = 0; block < 24; ++block) {
    x = b.add(testing::conv_op(fmt::format("conv{}", block), x, 8, 3));
    const TensorId gate = b.add(testing::nary_op(fmt::format("squeeze{}", block), OpKind::GlobalAvgPool, {x}));
    x = b.add(testing::nary_op(fmt::format("excite{}", block), OpKind::Mul, {gate, x}));
  }
  b.mark_output(x);
  const Graph g = std::move(b).finish();
  const Analysis a(g);
  for (OpId o = 0; o < a.op_count(); ++o) {
    const ReceptiveField& rf = a.op(o).receptive_field;
    if (g.op(o).kind == OpKind::GlobalAvgPool) {
      EXPECT_EQ(rf.jump_h, 64) << g.op(o).name;
    } else {
      EXPECT_EQ(rf.jump_h, 1) << g.op(o).name;
    }
    EXPECT_LT(rf.size_h, 64 * 64 * 24) << g.op(o).name;
  }
}

TEST(Analysis, RejectsBadElementSizes) {
  const Graph g = zoo_model("alexnet");
  EXPECT_THROW(Analysis(g, {3, Granularity::Row}), Error);
  EXPECT_THROW(parse_granularity("pixel"), Error);
}

}  // namespace
}  // namespace occam

namespace occam {
namespace {

void expect_incremental_matches_direct(const Analysis& a, const std::string& what) {
  for (OpId first = 0; first < a.op_count(); ++first) {
    a.closures_from(first, [&](OpId last, int64_t bytes) {
      EXPECT_EQ(bytes, a.closure(first, last).bytes) << what << " span " << first << ".." << last;
      return true;
    });
  }
}

TEST(Closure, IncrementalSweepEqualsDirectSimulation) {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < 60; ++trial) {
    const Graph g = trial % 2 ? testing::random_dag(rng, 12) : testing::random_chain(rng, 12);
    expect_incremental_matches_direct(Analysis(g, one_byte()), "trial " + std::to_string(trial));
  }
  for (const char* name : {"resnet18", "googlenet", "mobilenet_v2"}) {
    const Graph g = zoo_model(name, {.resolution = Resolution{96, 96}});
    expect_incremental_matches_direct(Analysis(g, {2, Granularity::Row}), name);
  }
}

TEST(Closure, IncrementalSweepStopsWhenAsked) {
  const Graph g = zoo_model("vgg16");
  const Analysis a(g);
  int visited = 0;
  a.closures_from(3, [&](OpId last, int64_t) {
    ++visited;
    return last < 6;
  });
  EXPECT_EQ(visited, 4);
}

}  // namespace
}  // namespace occam

namespace occam {
namespace {

TEST(Analysis, SpanEventsFollowTheScheduleAndRespectDependences) {
  const Graph g = zoo_model("resnet18", {.resolution = Resolution{64, 64}});
  const Analysis a(g);
  const std::vector<RowEvent> events = a.span_events(2, 7);
  std::vector<int64_t> produced(g.tensors.size(), 0);
  int64_t expected = 0;
  for (OpId o = 2; o <= 7; ++o) expected += g.output_of(g.op(o)).shape.h;
  EXPECT_EQ(static_cast<int64_t>(events.size()), expected);
  for (const RowEvent& ev : events) {
    ASSERT_GE(ev.op, 2);
    ASSERT_LE(ev.op, 7);
    EXPECT_EQ(produced[static_cast<size_t>(g.op(ev.op).output)]++, ev.row);  // rows in order
    for (TensorId in : g.op(ev.op).inputs) {
      const OpId producer = g.tensor(in).producer;
      if (producer >= 2 && producer <= 7) {
        // Row ev.row of a stride-1 3x3 conv needs its input up to ev.row + 1 (or the last row).
        const int64_t need = std::min<int64_t>(ev.row + 1, g.tensor(in).shape.h - 1);
        EXPECT_GT(produced[static_cast<size_t>(in)], need - (g.op(ev.op).window.kernel_h == 1 ? 1 : 0));
      }
    }
  }
}

}  // namespace
}  // namespace occam
