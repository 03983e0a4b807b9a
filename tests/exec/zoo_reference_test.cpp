// Every zoo net, with its seeded weights, on the reference executor against the naive oracle at a
// small resolution (the smallest at which the net's pooling still fits, 224 for AlexNet and VGG).
#include "exec/test_graphs.hpp"

#include <gtest/gtest.h>

namespace occam {
namespace {

struct ZooCase {
  const char* model;
  int64_t side;
  int64_t batch;
  ConvAlgorithm algorithm;
  double tolerance;
  friend void PrintTo(const ZooCase& c, std::ostream* os) { *os << c.model << " " << c.side; }
};

class ZooReference : public ::testing::TestWithParam<ZooCase> {};

TEST_P(ZooReference, MatchesNaiveOracle) {
  const ZooCase& c = GetParam();
  ModelOptions options;
  options.resolution = Resolution{c.side, c.side};
  options.batch = c.batch;
  options.with_weights = true;
  const Graph graph = zoo_model(c.model, options);
  const double error = testing::error_vs_oracle(graph, {0, c.algorithm, ActivationLayout::Measure});
  RecordProperty("max_relative_error", std::to_string(error));
  EXPECT_LE(error, c.tolerance) << c.model;
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, ZooReference,
    ::testing::Values(ZooCase{"alexnet", 224, 1, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"vgg16", 224, 1, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"resnet18", 64, 1, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"resnet50", 64, 1, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"mobilenet_v2", 64, 2, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"googlenet", 64, 1, ConvAlgorithm::Direct, 1e-4},
                      ZooCase{"dncnn", 64, 1, ConvAlgorithm::Direct, 1e-4},
                      // Winograd trades accuracy for speed: held to a looser bound.
                      ZooCase{"resnet18", 64, 1, ConvAlgorithm::Winograd, 1e-3},
                      ZooCase{"dncnn", 64, 1, ConvAlgorithm::Winograd, 1e-3}),
    [](const auto& info) {
      return fmt::format("{}_{}{}", info.param.model, info.param.side,
                         info.param.algorithm == ConvAlgorithm::Winograd ? "_winograd" : "");
    });

}  // namespace
}  // namespace occam
