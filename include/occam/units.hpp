// Byte sizes as users write them (512KiB, 1.5MiB, 8MB) and as occam prints them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace occam {

// Parses a positive size: a number with an optional unit B, KB, MB, GB (powers of 1000) or KiB,
// MiB, GiB (powers of 1024). `what` names the option in the error message, e.g. "--sram".
int64_t parse_bytes(std::string_view text, std::string_view what);

// 1536 -> "1.50 KiB"; below 1 KiB prints plain bytes.
std::string format_bytes(double bytes);

}  // namespace occam
