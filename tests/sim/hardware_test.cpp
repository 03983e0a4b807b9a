#include "occam/error.hpp"
#include "occam/sim.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace occam {
namespace {

using nlohmann::json;

const std::filesystem::path kPresetDir = std::filesystem::path(__FILE__).parent_path() / "../../data/hw";

json valid() { return json::parse(hardware_presets().front().json); }

std::string error_of(const json& document) {
  try {
    hardware_from_json(document, "board.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Hardware, EveryPresetParsesAndMatchesItsFile) {
  ASSERT_GE(hardware_presets().size(), 3u);
  for (const HardwarePreset& preset : hardware_presets()) {
    std::ifstream file(kPresetDir / (std::string(preset.name) + ".json"));
    ASSERT_TRUE(file) << preset.name;
    std::stringstream text;
    text << file.rdbuf();
    EXPECT_EQ(text.str(), preset.json) << "data/hw/" << preset.name << ".json differs from src/sim/presets.cpp";
    const Hardware hw = load_hardware(preset.name);
    EXPECT_EQ(hw.name, preset.name);
    EXPECT_EQ(load_hardware((kPresetDir / (std::string(preset.name) + ".json")).string()), hw);
    // Every number is documented.
    for (const char* field : {"sram_bytes", "macs_per_cycle", "clock_ghz", "dram_gb_per_s", "link_gb_per_s",
                              "energy_pj.mac", "energy_pj.sram_byte", "energy_pj.dram_byte", "energy_pj.link_byte"}) {
      EXPECT_TRUE(std::any_of(hw.sources.begin(), hw.sources.end(), [&](const auto& s) { return s.first == field; }))
          << preset.name << " has no source for " << field;
    }
  }
  EXPECT_EQ(load_hardware("").name, default_hardware_name());
}

TEST(Hardware, PresetsSpanTheIssuesRange) {
  EXPECT_EQ(load_hardware("edge").sram_bytes, 512 * 1024);
  EXPECT_GE(load_hardware("large").sram_bytes, 10 * 1024 * 1024);
  EXPECT_EQ(load_hardware("fpga").bytes_per_element, 2);
}

TEST(Hardware, RoundTripsThroughJson) {
  const Hardware hw = load_hardware("edge");
  EXPECT_EQ(hardware_from_json(to_json(hw), "round trip"), hw);
}

TEST(Hardware, SizesMayBeWrittenWithUnits) {
  json document = valid();
  document["sram_bytes"] = "1.5MiB";
  EXPECT_EQ(hardware_from_json(document, "x").sram_bytes, 1536 * 1024);
  document["sram_bytes"] = 4096;
  EXPECT_EQ(hardware_from_json(document, "x").sram_bytes, 4096);
}

TEST(Hardware, ErrorsNameTheFileAndField) {
  json missing = valid();
  missing.erase("dram_gb_per_s");
  EXPECT_EQ(error_of(missing), "board.json: missing field \"dram_gb_per_s\"");

  json negative = valid();
  negative["dram_gb_per_s"] = -3;
  EXPECT_EQ(error_of(negative), "board.json: field \"dram_gb_per_s\": expected a positive number (GB/s per chip), got -3");

  json zero = valid();
  zero["link_gb_per_s"] = 0;
  EXPECT_NE(error_of(zero).find("field \"link_gb_per_s\": expected a positive number"), std::string::npos);

  json wrong_type = valid();
  wrong_type["chips"] = "sixteen";
  EXPECT_EQ(error_of(wrong_type), "board.json: field \"chips\": expected an integer from 1 to 1048576, got \"sixteen\"");

  json unknown = valid();
  unknown["dram_bandwidth"] = 10;
  EXPECT_NE(error_of(unknown).find("board.json: unknown field \"dram_bandwidth\"; expected only: name,"), std::string::npos);

  json energy = valid();
  energy["energy_pj"].erase("link_byte");
  EXPECT_EQ(error_of(energy), "board.json: missing field \"energy_pj.link_byte\"");
  energy = valid();
  energy["energy_pj"]["dram_byte"] = -1.0;
  EXPECT_NE(error_of(energy).find("field \"energy_pj.dram_byte\": expected a non-negative number"), std::string::npos);
  energy = valid();
  energy["energy_pj"]["sram"] = 1.0;
  EXPECT_NE(error_of(energy).find("unknown field \"energy_pj.sram\""), std::string::npos);

  json element = valid();
  element["bytes_per_element"] = 3;
  EXPECT_NE(error_of(element).find("field \"bytes_per_element\": expected 1, 2 or 4"), std::string::npos);

  json sram = valid();
  sram["sram_bytes"] = "lots";
  EXPECT_NE(error_of(sram).find("board.json: field \"sram_bytes\""), std::string::npos);

  json source = valid();
  source["sources"]["clock"] = "made up";
  EXPECT_NE(error_of(source).find("unknown field \"sources.clock\""), std::string::npos);

  EXPECT_NE(error_of(json::array()).find("board.json: expected a JSON object"), std::string::npos);
}

TEST(Hardware, MissingFileListsThePresets) {
  try {
    load_hardware("/nonexistent/board.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/board.json: cannot open"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("edge"), std::string::npos);
  }
}

}  // namespace
}  // namespace occam
