// Torchvision models exported by tests/fixtures/export_torchvision.py (at build time, into
// OCCAM_TEST_DATA) must import as exactly the zoo's graphs.
//
// How the comparison stays honest about BatchNorm: torch's default eval export folds every BN into
// its convolution, so the file has a conv bias where torchvision has BN's gamma and beta. The main
// fixtures are therefore exported with BatchNormalization kept (TrainingMode.PRESERVE on an
// eval-mode model); the importer and normalize() fold it exactly as the zoo does, so op kinds,
// shapes, windows, activations, wiring, filter_elements() and source_params() must all be equal.
// resnet18_fused is the default export: there filter_elements() must still be equal op by op, and
// source_params() must fall short of the zoo's by exactly one value per folded BN channel (a
// per-channel bias in place of gamma and beta).
#include "occam/error.hpp"
#include "occam/model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>

namespace occam {
namespace {

namespace fs = std::filesystem;

// Fails (never skips) when the fixture is missing: a build without it must not look green.
void load_fixture(const std::string& fixture, Graph& graph, const ModelOptions& options = {}) {
  const char* dir = std::getenv("OCCAM_TEST_DATA");
  ASSERT_NE(dir, nullptr) << "OCCAM_TEST_DATA is not set; run the tests through ctest";
  const fs::path path = fs::path(dir) / (fixture + ".onnx");
  ASSERT_TRUE(fs::exists(path)) << path << " is missing; it is built by the onnx_fixtures target, which needs "
                                << "/usr/bin/python3 with Debian's python3-torch and python3-torchvision";
  const auto start = std::chrono::steady_clock::now();
  graph = import_onnx(path, options);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  ::testing::Test::RecordProperty("import_seconds", std::to_string(took.count()));
}

// Post-order DFS from the outputs, operands in order: graphs of the same structure get the same op
// order even where their topological orders differ (torch traces a residual block's shortcut after
// its main path; the zoo builds it first).
std::vector<OpId> canonical_order(const Graph& graph) {
  std::vector<OpId> order;
  std::vector<bool> seen(graph.ops.size(), false);
  const std::function<void(TensorId)> visit = [&](TensorId t) {
    const OpId producer = graph.tensor(t).producer;
    if (producer < 0 || seen[static_cast<size_t>(producer)]) return;
    seen[static_cast<size_t>(producer)] = true;
    for (TensorId in : graph.op(producer).inputs) visit(in);
    order.push_back(producer);
  };
  for (TensorId out : graph.outputs) visit(out);
  return order;
}

// Where each operand comes from, in canonical positions (graph inputs are -1). Operands of Add and
// Mul are compared as a set: torchvision writes x + block(x) where the zoo writes block(x) + x.
std::vector<int> operand_sources(const Graph& graph, const Op& op, const std::vector<int>& position) {
  std::vector<int> sources;
  for (TensorId in : op.inputs) {
    const OpId producer = graph.tensor(in).producer;
    sources.push_back(producer < 0 ? -1 : position[static_cast<size_t>(producer)]);
  }
  if (op.kind == OpKind::Add || op.kind == OpKind::Mul) std::sort(sources.begin(), sources.end());
  return sources;
}

std::vector<int> positions(const Graph& graph, const std::vector<OpId>& order) {
  std::vector<int> position(graph.ops.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) position[static_cast<size_t>(order[i])] = static_cast<int>(i);
  return position;
}

enum class BatchNormIn { File, Conv };

void expect_same_as_zoo(const std::string& model, const Graph& imported, BatchNormIn batchnorm) {
  const Graph zoo = zoo_model(model);
  const std::vector<OpId> a = canonical_order(imported), b = canonical_order(zoo);
  ASSERT_EQ(a.size(), imported.ops.size()) << "ops not reachable from the outputs";
  ASSERT_EQ(a.size(), b.size()) << model;
  ASSERT_EQ(imported.tensor(imported.inputs.at(0)).shape, zoo.tensor(zoo.inputs.at(0)).shape);
  const std::vector<int> pos_a = positions(imported, a), pos_b = positions(zoo, b);
  int64_t folded_channels = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const Op& x = imported.op(a[i]);
    const Op& y = zoo.op(b[i]);
    SCOPED_TRACE(fmt::format("{}: op {} \"{}\" vs zoo \"{}\"", model, i, x.name, y.name));
    ASSERT_EQ(x.kind, y.kind);
    EXPECT_EQ(imported.output_of(x).shape, zoo.output_of(y).shape);
    EXPECT_EQ(operand_sources(imported, x, pos_a), operand_sources(zoo, y, pos_b));
    EXPECT_EQ(x.window, y.window);
    EXPECT_EQ(x.groups, y.groups);
    EXPECT_EQ(x.out_channels, y.out_channels);
    EXPECT_EQ(x.activation, y.activation);
    EXPECT_EQ(x.count_include_pad, y.count_include_pad);
    EXPECT_EQ(filter_elements(imported, x), filter_elements(zoo, y));
    if (batchnorm == BatchNormIn::File) {
      EXPECT_EQ(x.has_bias, y.has_bias);
      EXPECT_EQ(x.folded_batchnorm, y.folded_batchnorm);
      EXPECT_EQ(source_params(imported, x), source_params(zoo, y));
    } else {
      // torch turned the BN into a conv bias: one value per channel where the zoo counts two.
      const int64_t channels = y.folded_batchnorm ? y.out_channels : 0;
      EXPECT_FALSE(x.folded_batchnorm);
      EXPECT_EQ(x.has_bias, y.has_bias || y.folded_batchnorm);
      EXPECT_EQ(source_params(imported, x), source_params(zoo, y) - channels);
      folded_channels += channels;
    }
  }
  EXPECT_EQ(total_source_params(imported), total_source_params(zoo) - folded_channels);
  EXPECT_EQ(total_macs(imported), total_macs(zoo));
  EXPECT_TRUE(imported.has_weights());
}

class TorchvisionImport : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchvisionImport, MatchesTheZooOpByOp) {
  Graph imported;
  ASSERT_NO_FATAL_FAILURE(load_fixture(GetParam(), imported));
  expect_same_as_zoo(GetParam(), imported, BatchNormIn::File);
}

// alexnet and vgg16 are the largest files (244 MB and 553 MB) but export and import in seconds.
INSTANTIATE_TEST_SUITE_P(Fixtures, TorchvisionImport,
                         ::testing::Values("resnet18", "resnet50", "mobilenet_v2", "googlenet", "alexnet", "vgg16"),
                         [](const auto& info) { return std::string(info.param); });

TEST(TorchvisionImportFused, BatchNormFoldedByTorchKeepsFilterSizes) {
  Graph imported;
  ASSERT_NO_FATAL_FAILURE(load_fixture("resnet18_fused", imported));
  expect_same_as_zoo("resnet18", imported, BatchNormIn::Conv);
}

// Opset 9 writes Clip's bounds as attributes, later opsets as Constant inputs; everything else
// must come out the same too, weights included (the exports are seeded alike).
TEST(TorchvisionImportOpsets, MobilenetV2ImportsIdenticallyAtOpsets9To17) {
  Graph reference;
  ASSERT_NO_FATAL_FAILURE(load_fixture("mobilenet_v2", reference));  // opset 13
  for (const char* fixture : {"mobilenet_v2_opset9", "mobilenet_v2_opset11", "mobilenet_v2_opset17"}) {
    Graph g;
    ASSERT_NO_FATAL_FAILURE(load_fixture(fixture, g));
    ASSERT_EQ(g.ops.size(), reference.ops.size()) << fixture;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& x = g.ops[i];
      const Op& y = reference.ops[i];
      SCOPED_TRACE(fmt::format("{}: op {} \"{}\"", fixture, i, x.name));
      EXPECT_EQ(x.name, y.name);
      EXPECT_EQ(x.kind, y.kind);
      EXPECT_EQ(x.inputs, y.inputs);
      EXPECT_EQ(g.output_of(x).shape, reference.output_of(y).shape);
      EXPECT_EQ(x.window, y.window);
      EXPECT_EQ(x.groups, y.groups);
      EXPECT_EQ(x.activation, y.activation);
      EXPECT_EQ(x.folded_batchnorm, y.folded_batchnorm);
      ASSERT_EQ(x.weight == nullptr, y.weight == nullptr);
      if (x.weight) {
        EXPECT_EQ(*x.weight, *y.weight);
      }
      ASSERT_EQ(x.bias == nullptr, y.bias == nullptr);
      if (x.bias) {
        EXPECT_EQ(*x.bias, *y.bias);
      }
    }
  }
}

TEST(TorchvisionImportOptions, BatchAndResolutionOverrideTheFile) {
  ModelOptions options;
  options.batch = 2;
  options.resolution = Resolution{320, 256};
  Graph g;
  ASSERT_NO_FATAL_FAILURE(load_fixture("mobilenet_v2", g, options));
  EXPECT_EQ(g.tensor(g.inputs[0]).shape, (Shape{2, 3, 320, 256}));
  EXPECT_EQ(g.output_of(g.ops.back()).shape, (Shape{2, 1000, 1, 1}));
  EXPECT_EQ(total_source_params(g), total_source_params(zoo_model("mobilenet_v2", options)));
  EXPECT_EQ(total_macs(g), total_macs(zoo_model("mobilenet_v2", options)));
}

}  // namespace
}  // namespace occam
