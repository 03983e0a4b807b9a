#include "occam/error.hpp"
#include "occam/report.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <filesystem>
#include <sstream>

namespace occam {
namespace {

namespace fs = std::filesystem;

class Reports : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    Hardware hw = load_hardware("fpga");
    for (const char* model : {"alexnet", "resnet18"}) evaluations_.push_back(evaluate_model(zoo_model(model), hw, {}));
  }
  static std::vector<Evaluation> evaluations_;
};
std::vector<Evaluation> Reports::evaluations_;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST_F(Reports, TableHasEveryModelAndMethodWithTheAccounting) {
  const std::string text = comparison_text(evaluations_);
  std::vector<std::string> alexnet_methods;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string model, method;
    if (words >> model >> method && model == "alexnet") alexnet_methods.push_back(method);
  }
  EXPECT_EQ(alexnet_methods, (std::vector<std::string>{"base", "base-dp", "fusion-reuse", "fusion-recompute",
                                                       "fusion-dp", "greedy", "occam", "occam+stap"}));
  EXPECT_EQ(count(text, "\nresnet18 "), evaluations_[1].methods.size());
  EXPECT_NE(text.find("accounting: 2-byte elements; mini-batch 1"), std::string::npos);
  EXPECT_NE(text.find("hardware \"fpga\""), std::string::npos);
  EXPECT_NE(text.find("geomean over 2 models"), std::string::npos);
}

TEST_F(Reports, GeometricMeansAreRatiosToTheReference) {
  const RelativeMeans self = relative_means(evaluations_, "base", "base");
  EXPECT_DOUBLE_EQ(self.traffic_x, 1.0);
  EXPECT_DOUBLE_EQ(self.latency_x, 1.0);
  EXPECT_NEAR(self.energy_saving, 0.0, 1e-15);
  const RelativeMeans occam = relative_means(evaluations_, "occam", "base");
  double product = 1.0;
  for (const Evaluation& e : evaluations_) product *= e.method("base").offchip_bytes / e.method("occam").offchip_bytes;
  EXPECT_NEAR(occam.traffic_x, std::sqrt(product), 1e-9 * occam.traffic_x);
  const RelativeMeans dp = relative_means(evaluations_, "base-dp", "base");
  EXPECT_NEAR(dp.throughput_x, evaluations_[0].hardware.chips, 1e-9);
  EXPECT_THROW(relative_means({}, "occam", "base"), Error);
}

TEST_F(Reports, PaperComparisonListsTheAbstractsClaims) {
  const std::string text = paper_comparison_text(evaluations_);
  for (const char* claim : {"21x", "2.06x", "1.36x", "-33%", "-24%"}) EXPECT_NE(text.find(claim), std::string::npos);
}

TEST_F(Reports, CsvHasOneRowPerModelAndMethod) {
  const std::string csv = comparison_csv(evaluations_);
  std::istringstream lines(csv);
  std::string line;
  std::getline(lines, line);
  const size_t columns = count(line, ",") + 1;
  EXPECT_EQ(columns, 21u);
  size_t rows = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(count(line, ",") + 1, columns) << line;
    ++rows;
  }
  EXPECT_EQ(rows, evaluations_[0].methods.size() + evaluations_[1].methods.size());
}

TEST_F(Reports, JsonCarriesAccountingAndMethods) {
  const nlohmann::json json = comparison_json(evaluations_);
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["accounting"]["batch"], 1);
  EXPECT_EQ(json[0]["accounting"]["handoff"], "dram");
  EXPECT_EQ(json[0]["hardware"]["name"], "fpga");
  EXPECT_EQ(json[0]["models"].size(), 2u);
  EXPECT_EQ(json[0]["models"][1]["methods"][0]["offchip_bytes"].get<double>(),
            evaluations_[1].method("base").offchip_bytes);
  EXPECT_FALSE(json[0]["geomeans"].empty());
}

TEST(BatchSweep, LargerMiniBatchesAmortiseFilters) {
  const std::array<int64_t, 3> batches = {1, 16, 256};
  const auto points = batch_sweep(zoo_model("alexnet"), load_hardware("fpga"), {}, batches);
  ASSERT_EQ(points.size(), 3u);
  EXPECT_GT(points[0].base_bytes, points[1].base_bytes);
  EXPECT_GT(points[1].base_bytes, points[2].base_bytes);
  EXPECT_GE(points[0].occam_bytes, points[2].occam_bytes);
  EXPECT_NE(batch_sweep_text("alexnet", points).find("B=256"), std::string::npos);
}

bool have_gnuplot() { return std::system("gnuplot --version > /dev/null 2>&1") == 0; }

TEST_F(Reports, PlotsArePngAndSvgWithTheirScripts) {
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot is not installed (Debian: gnuplot-nox)";
  const fs::path dir = fs::temp_directory_path() / ("occam_report_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  std::vector<fs::path> files = plot_stage_times(dir, evaluations_[0]);
  for (auto& f : plot_pipeline_gantt(dir, evaluations_[0], 12)) files.push_back(f);
  const std::array<int64_t, 2> capacities = {int64_t{1} << 20, int64_t{4} << 20};
  const std::vector<Graph> graphs = {zoo_model("resnet18")};
  int calls = 0;
  const auto points = capacity_sweep(graphs, load_hardware("fpga"), {}, capacities, [&](int, int) { ++calls; });
  EXPECT_EQ(calls, 2);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_GE(points[0].offchip_bytes.size(), 5u);
  for (auto& f : plot_capacity_sweep(dir, points)) files.push_back(f);
  for (const char* name : {"stage_times_alexnet.png", "stage_times_alexnet.svg", "pipeline_gantt_alexnet.png",
                           "pipeline_gantt_alexnet.svg", "traffic_vs_capacity.png", "traffic_vs_capacity.svg",
                           "traffic_vs_capacity.gp", "traffic_vs_capacity.dat"}) {
    EXPECT_TRUE(fs::exists(dir / name) && fs::file_size(dir / name) > 100) << name;
    EXPECT_NE(std::find(files.begin(), files.end(), fs::absolute(dir / name)), files.end()) << name;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace occam
