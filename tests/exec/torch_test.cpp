// The reference executor against PyTorch (Debian's python3-torch and torchvision), two ways:
//  - occam's zoo graph with its seeded weights, loaded into the torchvision model;
//  - torchvision's own seeded model exported to ONNX (tests/fixtures/export_torchvision.py) and
//    imported by occam.
// Both run tests/fixtures/torch_reference.py on the same input. The interpreter is $OCCAM_PYTHON,
// else /usr/bin/python3; without torch the tests are skipped, saying so.
#include "occam/exec.hpp"

#include <fmt/format.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace occam {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures";

std::string python() {
  const char* configured = std::getenv("OCCAM_PYTHON");
  return configured != nullptr ? configured : "/usr/bin/python3";
}

int shell(const std::string& command) { return std::system(command.c_str()); }

bool torch_available() {
  static const bool available = shell(python() + " -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
  return available;
}

std::filesystem::path work_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "occam_torch_reference" / name;
  std::filesystem::create_directories(dir);
  return dir;
}

void write_floats(const std::filesystem::path& path, const std::vector<float>& values) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
}

void write_input(const std::filesystem::path& dir, const HostTensor& input) {
  write_floats(dir / "input.bin", input.values);
  std::ofstream(dir / "input.shape") << input.shape.n << ' ' << input.shape.c << ' ' << input.shape.h << ' '
                                     << input.shape.w;
}

HostTensor read_output(const std::filesystem::path& dir, const Shape& shape) {
  HostTensor output(shape);
  std::ifstream file(dir / "output.bin", std::ios::binary);
  file.read(reinterpret_cast<char*>(output.values.data()), static_cast<std::streamsize>(output.values.size() * 4));
  EXPECT_EQ(file.gcount(), static_cast<std::streamsize>(output.values.size() * 4)) << "short output.bin";
  return output;
}

void run_torch(const std::string& mode, const std::string& model, const std::filesystem::path& dir) {
  const std::string command =
      fmt::format("{} {} {} {} {}", python(), (kFixtures / "torch_reference.py").string(), mode, model, dir.string());
  ASSERT_EQ(shell(command), 0) << command;
}

class TorchWithOccamWeights : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchWithOccamWeights, SameLogits) {
  if (!torch_available()) GTEST_SKIP() << python() << " cannot import torch and torchvision";
  const std::string model = GetParam();
  ModelOptions options;
  options.resolution = Resolution{64, 64};
  options.with_weights = true;
  const Graph graph = zoo_model(model, options);
  const auto dir = work_dir(model + "_occam_weights");
  std::ofstream index(dir / "weights.txt");
  std::vector<float> values;
  for (const Op& op : graph.ops) {
    if (op.kind != OpKind::Conv && op.kind != OpKind::Gemm) continue;
    index << op.name << ' ' << op.weight->size() << ' ' << (op.bias ? op.bias->size() : 0) << '\n';
    values.insert(values.end(), op.weight->begin(), op.weight->end());
    if (op.bias) values.insert(values.end(), op.bias->begin(), op.bias->end());
  }
  index.close();
  write_floats(dir / "weights.bin", values);
  const HostTensor input = random_input(graph.tensor(graph.inputs[0]).shape);
  write_input(dir, input);
  run_torch("occam-weights", model, dir);
  const HostTensor expected = read_output(dir, {1, 1000, 1, 1});
  const std::vector<HostTensor> got = compile_reference(graph)->run(std::vector<HostTensor>{input});
  const double error = max_relative_error(got[0], expected);
  RecordProperty("max_relative_error", std::to_string(error));
  EXPECT_LE(error, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Zoo, TorchWithOccamWeights, ::testing::Values("resnet18", "resnet50", "mobilenet_v2"),
                         [](const auto& info) { return std::string(info.param); });

// Most nets run at 96x96 to keep the test short; a file that fixes its spatial size at export
// (ShuffleNet's channel-shuffle reshapes name 28x28 and the like) runs at the size it was exported at.
struct TorchNet {
  const char* model;
  bool export_size = false;
  friend void PrintTo(const TorchNet& net, std::ostream* os) { *os << net.model; }
};

class TorchViaOnnx : public ::testing::TestWithParam<TorchNet> {};

TEST_P(TorchViaOnnx, SameLogits) {
  if (!torch_available()) GTEST_SKIP() << python() << " cannot import torch and torchvision";
  const std::string model = GetParam().model;
  const auto dir = work_dir(model + "_onnx");
  // The build exports the fixtures into $OCCAM_TEST_DATA for the importer's tests; export our own
  // copy when they are not there.
  const char* data = std::getenv("OCCAM_TEST_DATA");
  std::filesystem::path onnx = data != nullptr ? std::filesystem::path(data) / (model + ".onnx") : "";
  if (onnx.empty() || !std::filesystem::exists(onnx)) {
    const std::string command = fmt::format("{} {} {} {}", python(), (kFixtures / "export_torchvision.py").string(),
                                            dir.string(), model);
    ASSERT_EQ(shell(command), 0) << command;
    onnx = dir / (model + ".onnx");
  }
  ModelOptions options;
  if (!GetParam().export_size) options.resolution = Resolution{96, 96};
  const Graph graph = import_onnx(onnx, options);
  const HostTensor input = random_input(graph.tensor(graph.inputs[0]).shape);
  write_input(dir, input);
  run_torch("torchvision", model, dir);
  const std::vector<HostTensor> got = compile_reference(graph)->run(std::vector<HostTensor>{input});
  const HostTensor expected = read_output(dir, got[0].shape);
  const double error = max_relative_error(got[0], expected);
  RecordProperty("max_relative_error", std::to_string(error));
  EXPECT_LE(error, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Torchvision, TorchViaOnnx,
                         ::testing::Values(TorchNet{"resnet18"}, TorchNet{"mobilenet_v2"}, TorchNet{"googlenet"},
                                           TorchNet{"densenet121"}, TorchNet{"mnasnet1_0"}, TorchNet{"efficientnet_b0"},
                                           TorchNet{"mobilenet_v3_small"}, TorchNet{"squeezenet1_1"},
                                           TorchNet{"regnet_y_400mf"}, TorchNet{"inception_v3"},
                                           TorchNet{"shufflenet_v2_x0_5", true}),
                         [](const auto& info) { return std::string(info.param.model); });

}  // namespace
}  // namespace occam
