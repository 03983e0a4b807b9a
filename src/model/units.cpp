#include "occam/units.hpp"

#include "occam/error.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>

namespace occam {

int64_t parse_bytes(std::string_view text, std::string_view what) {
  const auto bad = [&]() {
    fail("{} \"{}\": expected a positive size such as 1048576, 512KiB, 1MiB, 1.5GiB or 8MB", what, text);
  };
  size_t unit_at = 0;
  while (unit_at < text.size() && (std::isdigit(static_cast<unsigned char>(text[unit_at])) || text[unit_at] == '.')) {
    ++unit_at;
  }
  double number = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + unit_at, number);
  if (unit_at == 0 || ec != std::errc() || end != text.data() + unit_at) bad();
  std::string unit;
  for (char c : text.substr(unit_at)) {
    if (!std::isspace(static_cast<unsigned char>(c))) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  static constexpr std::array<std::pair<std::string_view, double>, 8> units = {{{"", 1.0},
                                                                                {"b", 1.0},
                                                                                {"kb", 1e3},
                                                                                {"mb", 1e6},
                                                                                {"gb", 1e9},
                                                                                {"kib", 1024.0},
                                                                                {"mib", 1024.0 * 1024},
                                                                                {"gib", 1024.0 * 1024 * 1024}}};
  for (const auto& [name, scale] : units) {
    if (unit == name) {
      const double bytes = std::round(number * scale);
      if (!(bytes >= 1.0) || bytes > 9.0e18) bad();
      return static_cast<int64_t>(bytes);
    }
  }
  bad();
  return 0;
}

std::string format_bytes(double bytes) {
  static constexpr std::array<std::string_view, 4> units = {"KiB", "MiB", "GiB", "TiB"};
  if (std::abs(bytes) < 1024.0) return fmt::format("{:.0f} B", bytes);
  size_t unit = 0;
  bytes /= 1024.0;
  while (std::abs(bytes) >= 1024.0 && unit + 1 < units.size()) {
    bytes /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", bytes, units[unit]);
}

}  // namespace occam
