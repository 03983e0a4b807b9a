// The `occam` command line as a user meets it: bad input must give one clear line naming the
// culprit and a non-zero exit, never a crash or a stack of messages.
#include "occam/plan.hpp"

#include <onnx/onnx_pb.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sys/wait.h>

namespace {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  bool signalled = false;
  std::string output;  // stdout and stderr
};

// `environment`: assignments for `env` (e.g. "OMP_WAIT_POLICY=passive"), or empty.
Result occam(const std::string& arguments, const std::string& environment = "") {
  const std::string command =
      (environment.empty() ? "" : "env " + environment + " ") + std::string(OCCAM_BINARY) + " " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  Result result;
  std::array<char, 4096> buffer{};
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.signalled = WIFSIGNALED(status);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

fs::path temp_file(const std::string& name) { return fs::temp_directory_path() / ("occam_cli_" + name); }

// One line on the terminal, starting with "occam: error:", mentioning `culprit`.
void expect_clear_error(const std::string& arguments, const std::string& culprit) {
  SCOPED_TRACE("occam " + arguments);
  const Result r = occam(arguments);
  EXPECT_FALSE(r.signalled);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("occam: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(culprit), std::string::npos) << r.output;
}

TEST(Cli, PlanPrintsThePartitionTableAndWritesJson) {
  const fs::path json = temp_file("plan.json");
  const Result r = occam("plan resnet18 --sram 1MiB --json " + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("partitions (one chip each)"), std::string::npos);
  EXPECT_NE(r.output.find("conv1 .. "), std::string::npos);
  EXPECT_NE(r.output.find("vs layer by layer"), std::string::npos);
  // The file parses back into exactly the plan the library makes for the same inputs.
  const occam::Graph graph = occam::zoo_model("resnet18");
  const occam::Analysis analysis(graph, {2, occam::Granularity::Row});
  occam::PlanOptions options;
  options.capacity_bytes = 1 << 20;
  options.analysis = analysis.options();
  EXPECT_EQ(occam::load_plan(json), occam::plan_optimal(analysis, options));
  fs::remove(json);
}

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* command : {"", "models", "analyze", "plan"}) {
    const Result r = occam(std::string(command) + " --help");
    EXPECT_EQ(r.exit_code, 0) << command;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << command;
  }
}

TEST(Cli, ModelsAndAnalyze) {
  Result r = occam("models");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("mobilenet_v2"), std::string::npos);
  EXPECT_NE(r.output.find("11689512"), std::string::npos);  // resnet18's parameters
  r = occam("analyze googlenet --bytes-per-elem 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("inception5b.concat"), std::string::npos);
  EXPECT_NE(r.output.find("whole-network closure"), std::string::npos);
}

TEST(Cli, BadSramValues) {
  expect_clear_error("plan resnet18 --sram -1", "--sram \"-1\"");
  expect_clear_error("plan resnet18 --sram abc", "--sram \"abc\"");
  expect_clear_error("plan resnet18 --sram 0", "--sram \"0\"");
  expect_clear_error("plan resnet18 --sram 8", "too small for any plan");
}

TEST(Cli, UnknownModelName) { expect_clear_error("plan resnet19", "unknown model \"resnet19\""); }

TEST(Cli, MissingFile) { expect_clear_error("plan /nonexistent/model.onnx", "/nonexistent/model.onnx: cannot open"); }

TEST(Cli, RandomBytes) {
  const fs::path path = temp_file("random.onnx");
  std::mt19937 rng(1);
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(rng()));
  out.close();
  expect_clear_error("plan " + path.string(), "not a valid ONNX model");
  fs::remove(path);
}

TEST(Cli, TruncatedOnnx) {
  const char* data = std::getenv("OCCAM_TEST_DATA");
  ASSERT_NE(data, nullptr) << "run under ctest, which sets OCCAM_TEST_DATA";
  const fs::path source = fs::path(data) / "resnet18.onnx";
  ASSERT_TRUE(fs::exists(source)) << source << " is built by the onnx_fixtures target";
  const fs::path path = temp_file("truncated.onnx");
  std::ifstream in(source, std::ios::binary);
  std::string bytes(fs::file_size(source) / 2, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::ofstream(path, std::ios::binary) << bytes;
  expect_clear_error("plan " + path.string(), "not a valid ONNX model");
  fs::remove(path);
}

void write_model(const fs::path& path, const std::string& op_type, bool mismatched_add) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("tiny");
  const auto add_input = [&](const std::string& name, std::array<int64_t, 4> dims) {
    onnx::ValueInfoProto* input = graph->add_input();
    input->set_name(name);
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) type->mutable_shape()->add_dim()->set_dim_value(d);
  };
  add_input("x", {1, 4, 8, 8});
  onnx::NodeProto* node = graph->add_node();
  node->set_name("the_node");
  node->set_op_type(op_type);
  node->add_input("x");
  if (mismatched_add) {
    add_input("y", {1, 4, 5, 5});
    node->add_input("y");
  }
  node->add_output("out");
  graph->add_output()->set_name("out");
  std::ofstream out(path, std::ios::binary);
  model.SerializeToOstream(&out);
}

TEST(Cli, UnsupportedOperatorIsNamedWithItsNode) {
  const fs::path path = temp_file("einsum.onnx");
  write_model(path, "Einsum", false);
  expect_clear_error("plan " + path.string(), "Einsum");
  expect_clear_error("plan " + path.string(), "the_node");
  fs::remove(path);
}

TEST(Cli, ShapeMismatchNamesTheNode) {
  const fs::path path = temp_file("mismatch.onnx");
  write_model(path, "Add", true);
  expect_clear_error("plan " + path.string(), "the_node");
  fs::remove(path);
  expect_clear_error("plan vgg16 --resolution 16x16", "features.");
  expect_clear_error("plan resnet18 --resolution 12xab", "resolution");
}

// A speed ratio taken with OpenMP's passive waiting is not at the reference's best: --compare says so,
// and only then.
TEST(Cli, CompareNamesAPassiveWaitPolicy) {
  const std::string run = "run dncnn --resolution 24x16 --compare --runs 1 --png /dev/null";
  const Result passive = occam(run, "OMP_WAIT_POLICY=passive");
  ASSERT_EQ(passive.exit_code, 0) << passive.output;
  EXPECT_NE(passive.output.find("OMP_WAIT_POLICY=passive makes the reference wake"), std::string::npos) << passive.output;
  const Result active = occam(run, "OMP_WAIT_POLICY=active");
  ASSERT_EQ(active.exit_code, 0) << active.output;
  EXPECT_EQ(active.output.find("OMP_WAIT_POLICY"), std::string::npos) << active.output;
  EXPECT_NE(active.output.find("speed fused/reference"), std::string::npos) << active.output;
}

// `occam run`: the fused executor by a plan, the reference, side by side; bad input in one line.
TEST(Cli, RunComparesFusedWithTheReferenceAndWritesDenseOutputsAsPng) {
  const fs::path png = temp_file("dncnn.png");
  fs::remove(png);
  const Result r = occam("run dncnn --resolution 48x40 --compare --runs 1 --png " + png.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("max relative error"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("latency fused"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("memory  reference"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(png)) << r.output;
  fs::remove(png);
  // A pipeline of two threads says how long they waited for each other; one thread does not wait.
  const Result pipeline = occam("run dncnn --resolution 48x40 --runs 1 --threads 2 --sharing pipeline --png /dev/null");
  ASSERT_EQ(pipeline.exit_code, 0) << pipeline.output;
  EXPECT_NE(pipeline.output.find("waits   fused     threads waited "), std::string::npos) << pipeline.output;
  const Result serial = occam("run dncnn --resolution 48x40 --runs 1 --threads 1 --png /dev/null");
  ASSERT_EQ(serial.exit_code, 0) << serial.output;
  EXPECT_EQ(serial.output.find("waits   fused"), std::string::npos) << serial.output;
  const Result classes = occam("run mobilenet_v2 --resolution 64 --runs 1 --memory-limit 64MiB");
  ASSERT_EQ(classes.exit_code, 0) << classes.output;
  EXPECT_NE(classes.output.find("plan for --memory-limit 64MiB"), std::string::npos) << classes.output;
  EXPECT_NE(classes.output.find("class "), std::string::npos) << classes.output;
}

// --row-kernels own puts dncnn's 64-channel convolutions on occam's own kernel (where the CPU has
// AVX2 with FMA), onednn keeps them on oneDNN's; both still match the reference; anything else is
// refused by name.
TEST(Cli, RunPutsConvolutionsOnTheRowKernelsAsked) {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  for (const std::string kernels : {"own", "onednn"}) {
    const Result r = occam("run dncnn --resolution 48x64 --compare --runs 1 --threads 1 --png /dev/null --row-kernels " + kernels);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("15 convolutions on occam's own AVX2 row kernel") != std::string::npos, kernels == "own" && avx2) << r.output;
    EXPECT_NE(r.output.find("max relative error"), std::string::npos) << r.output;
  }
  const Result bad = occam("run dncnn --resolution 48x64 --runs 1 --row-kernels fast");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("--row-kernels: fast not in {measure,onednn,own}"), std::string::npos) << bad.output;
}

TEST(Cli, RunRejectsBadInputInOneLine) {
  expect_clear_error("run mobilenet_v2 --resolution 64 --input /nonexistent/cat.png", "/nonexistent/cat.png");
  expect_clear_error("run mobilenet_v2 --resolution 64 --batch 0", "--batch 0");
  expect_clear_error("run mobilenet_v2 --resolution 64 --memory-limit 1KiB", "smallest measured peak");
  const fs::path plan = temp_file("resnet18_plan.json");
  ASSERT_EQ(occam("plan resnet18 --resolution 64 --bytes-per-elem 4 --json " + plan.string()).exit_code, 0);
  expect_clear_error("run mobilenet_v2 --resolution 64 --plan " + plan.string(), plan.string());
  const fs::path plan16 = temp_file("resnet18_plan16.json");
  ASSERT_EQ(occam("plan resnet18 --resolution 64 --bytes-per-elem 2 --json " + plan16.string()).exit_code, 0);
  expect_clear_error("run resnet18 --resolution 64 --plan " + plan16.string(), "4-byte");
  fs::remove(plan);
  fs::remove(plan16);
}

}  // namespace
