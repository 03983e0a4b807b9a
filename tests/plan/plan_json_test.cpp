#include "occam/error.hpp"
#include "occam/plan.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace occam {
namespace {

Plan resnet18_plan() {
  static const Graph g = zoo_model("resnet18");
  const Analysis analysis(g, {2, Granularity::Row});
  PlanOptions options;
  options.analysis = analysis.options();
  options.capacity_bytes = 1 << 20;
  return plan_optimal(analysis, options);
}

TEST(PlanJson, RoundTripsThroughAFile) {
  const Plan plan = resnet18_plan();
  const auto path = std::filesystem::temp_directory_path() / "occam_plan_roundtrip.json";
  save_plan(plan, path);
  EXPECT_EQ(load_plan(path), plan);
  std::filesystem::remove(path);
}

TEST(PlanJson, MissingOrMistypedFieldsAreNamed) {
  nlohmann::json json = to_json(resnet18_plan());
  json.erase("capacity_bytes");
  try {
    plan_from_json(json);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capacity_bytes"), std::string::npos) << e.what();
  }
  json = to_json(resnet18_plan());
  json["partitions"][1]["closure_bytes"] = "lots";
  try {
    plan_from_json(json);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("partitions[1]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("closure_bytes"), std::string::npos) << e.what();
  }
  json = to_json(resnet18_plan());
  json["partitions"][0]["first_op"] = 3;
  EXPECT_THROW(plan_from_json(json), Error);
}

TEST(PlanJson, BadFilesGiveErrors) {
  const auto dir = std::filesystem::temp_directory_path();
  EXPECT_THROW(load_plan(dir / "no_such_plan.json"), Error);
  const auto garbage = dir / "occam_plan_garbage.json";
  std::ofstream(garbage) << "{ not json";
  EXPECT_THROW(load_plan(garbage), Error);
  std::filesystem::remove(garbage);
}

TEST(PlanJson, PlanIsCheckedAgainstItsModel) {
  const Plan plan = resnet18_plan();
  EXPECT_NO_THROW(check_plan_matches(plan, zoo_model("resnet18")));
  EXPECT_THROW(check_plan_matches(plan, zoo_model("resnet50")), Error);
  EXPECT_THROW(check_plan_matches(plan, zoo_model("resnet18", {.resolution = Resolution{256, 256}})), Error);
}

}  // namespace
}  // namespace occam
