#include "occam/error.hpp"
#include "occam/sim.hpp"
#include "occam/units.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <sstream>

namespace occam {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 11> kFields = {"name",           "description",   "chips",
                                                      "sram_bytes",     "macs_per_cycle", "clock_ghz",
                                                      "dram_gb_per_s",  "link_gb_per_s",  "bytes_per_element",
                                                      "energy_pj",      "sources"};
constexpr std::array<std::string_view, 4> kEnergyFields = {"mac", "sram_byte", "dram_byte", "link_byte"};

std::string joined(std::span<const std::string_view> names) {
  std::string text;
  for (std::string_view name : names) text += (text.empty() ? "" : ", ") + std::string(name);
  return text;
}

// Reads fields of one JSON object, naming the file and the field's path in every message.
class FieldReader {
public:
  FieldReader(const json& object, std::string_view where, std::string prefix)
      : object_(object), where_(where), prefix_(std::move(prefix)) {}

  void reject_unknown(std::span<const std::string_view> known) const {
    for (const auto& [key, value] : object_.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        fail("{}: unknown field \"{}{}\"; expected only: {}", where_, prefix_, key, joined(known));
      }
    }
  }

  const json& required(std::string_view key) const {
    const auto it = object_.find(key);
    if (it == object_.end()) fail("{}: missing field \"{}{}\"", where_, prefix_, key);
    return *it;
  }

  [[noreturn]] void bad(std::string_view key, std::string_view expected, const json& value) const {
    fail("{}: field \"{}{}\": expected {}, got {}", where_, prefix_, key, expected, value.dump());
  }

  std::string text(std::string_view key, bool optional = false) const {
    if (optional && !object_.contains(key)) return {};
    const json& value = required(key);
    if (!value.is_string()) bad(key, "a string", value);
    return value.get<std::string>();
  }

  // A positive (or, with `allow_zero`, non-negative) finite number.
  double number(std::string_view key, std::string_view unit, bool allow_zero = false) const {
    const json& value = required(key);
    const std::string expected = fmt::format("a {} number ({})", allow_zero ? "non-negative" : "positive", unit);
    if (!value.is_number()) bad(key, expected, value);
    const double number = value.get<double>();
    if (!std::isfinite(number) || number < 0.0 || (!allow_zero && number == 0.0)) bad(key, expected, value);
    return number;
  }

  int64_t integer(std::string_view key, int64_t lo, int64_t hi) const {
    const json& value = required(key);
    const std::string expected = fmt::format("an integer from {} to {}", lo, hi);
    if (!value.is_number_integer()) bad(key, expected, value);
    const int64_t number = value.get<int64_t>();
    if (number < lo || number > hi) bad(key, expected, value);
    return number;
  }

  // A byte count: an integer, or a size string such as "512KiB".
  int64_t bytes(std::string_view key) const {
    const json& value = required(key);
    if (value.is_string()) {
      return parse_bytes(value.get<std::string>(), fmt::format("{}: field \"{}{}\"", where_, prefix_, key));
    }
    if (!value.is_number_integer() || value.get<int64_t>() <= 0) {
      bad(key, "a positive integer or a size such as \"512KiB\"", value);
    }
    return value.get<int64_t>();
  }

  const json& object(std::string_view key) const {
    const json& value = required(key);
    if (!value.is_object()) bad(key, "an object", value);
    return value;
  }

private:
  const json& object_;
  std::string_view where_;
  std::string prefix_;
};

}  // namespace

Hardware hardware_from_json(const json& document, std::string_view where) {
  if (!document.is_object()) fail("{}: expected a JSON object describing the hardware, got {}", where, document.type_name());
  const FieldReader fields(document, where, "");
  fields.reject_unknown(kFields);
  Hardware hw;
  hw.name = fields.text("name");
  hw.description = fields.text("description", true);
  hw.chips = static_cast<int>(fields.integer("chips", 1, 1 << 20));
  hw.sram_bytes = fields.bytes("sram_bytes");
  hw.macs_per_cycle = fields.number("macs_per_cycle", "MACs per cycle per chip");
  hw.clock_ghz = fields.number("clock_ghz", "GHz");
  hw.dram_gb_per_s = fields.number("dram_gb_per_s", "GB/s per chip");
  hw.link_gb_per_s = fields.number("link_gb_per_s", "GB/s per chip");
  hw.bytes_per_element = static_cast<int>(fields.integer("bytes_per_element", 1, 4));
  if (hw.bytes_per_element == 3) fields.bad("bytes_per_element", "1, 2 or 4", document["bytes_per_element"]);

  const FieldReader energy(fields.object("energy_pj"), where, "energy_pj.");
  energy.reject_unknown(kEnergyFields);
  hw.energy.mac_pj = energy.number("mac", "pJ per multiply-accumulate", true);
  hw.energy.sram_byte_pj = energy.number("sram_byte", "pJ per on-chip byte", true);
  hw.energy.dram_byte_pj = energy.number("dram_byte", "pJ per DRAM byte", true);
  hw.energy.link_byte_pj = energy.number("link_byte", "pJ per link byte", true);

  if (document.contains("sources")) {
    const json& sources = fields.object("sources");
    const FieldReader source_fields(sources, where, "sources.");
    for (const auto& [key, value] : sources.items()) {
      const bool top = std::find(kFields.begin(), kFields.end(), key) != kFields.end() && key != "sources";
      const bool energy_field =
          key.starts_with("energy_pj.") &&
          std::find(kEnergyFields.begin(), kEnergyFields.end(), std::string_view(key).substr(10)) != kEnergyFields.end();
      if (!top && !energy_field) {
        fail("{}: unknown field \"sources.{}\": a source must name a hardware field such as \"clock_ghz\" or "
             "\"energy_pj.mac\"",
             where, key);
      }
      hw.sources.emplace_back(key, source_fields.text(key));
    }
  }
  return hw;
}

json to_json(const Hardware& hw) {
  json document = {{"name", hw.name},
                   {"description", hw.description},
                   {"chips", hw.chips},
                   {"sram_bytes", hw.sram_bytes},
                   {"macs_per_cycle", hw.macs_per_cycle},
                   {"clock_ghz", hw.clock_ghz},
                   {"dram_gb_per_s", hw.dram_gb_per_s},
                   {"link_gb_per_s", hw.link_gb_per_s},
                   {"bytes_per_element", hw.bytes_per_element},
                   {"energy_pj",
                    {{"mac", hw.energy.mac_pj},
                     {"sram_byte", hw.energy.sram_byte_pj},
                     {"dram_byte", hw.energy.dram_byte_pj},
                     {"link_byte", hw.energy.link_byte_pj}}}};
  json sources = json::object();
  for (const auto& [field, source] : hw.sources) sources[field] = source;
  document["sources"] = std::move(sources);
  return document;
}

Hardware load_hardware(std::string_view spec) {
  if (spec.empty()) spec = default_hardware_name();
  for (const HardwarePreset& preset : hardware_presets()) {
    if (preset.name == spec) {
      return hardware_from_json(json::parse(preset.json), fmt::format("hardware preset \"{}\"", preset.name));
    }
  }
  const std::string path(spec);
  std::ifstream file(path);
  if (!file) {
    std::string names;
    for (const HardwarePreset& preset : hardware_presets()) names += (names.empty() ? "" : ", ") + std::string(preset.name);
    fail("{}: cannot open hardware description (not a file, and not one of the presets: {})", path, names);
  }
  std::stringstream text;
  text << file.rdbuf();
  json document;
  try {
    document = json::parse(text.str());
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  return hardware_from_json(document, path);
}

std::string_view to_string(Handoff handoff) {
  switch (handoff) {
    case Handoff::Dram: return "dram";
    case Handoff::Link: return "link";
  }
  return "?";
}

Handoff parse_handoff(std::string_view text) {
  if (text == "dram") return Handoff::Dram;
  if (text == "link") return Handoff::Link;
  fail("handoff \"{}\": expected dram (boundary tensors go through DRAM) or link (chip to chip)", text);
}

std::string Accounting::describe(const Hardware& hardware) const {
  return fmt::format(
      "{}-byte elements; mini-batch {} (non-resident filters re-read per batch); stream of {} images (resident "
      "filters loaded once per stream); compute and transfer {}; pipeline boundaries via {}",
      element_bytes(hardware), batch, stream, overlap ? "overlap (time = max)" : "do not overlap (time = sum)",
      handoff == Handoff::Dram ? "DRAM (written and read back)" : "chip-to-chip links");
}

}  // namespace occam
