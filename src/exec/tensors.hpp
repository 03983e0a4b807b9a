// Checks shared by the executors' run(): the caller's tensors against the compiled shapes.
#pragma once

#include "occam/exec.hpp"

#include <span>
#include <string_view>

namespace occam::exec {

// Throws an Error naming `source` unless `given` has exactly the `expected` shapes and sizes.
void check_tensors(std::string_view source, std::string_view what, std::span<const Shape> expected,
                   std::span<const HostTensor> given);

}  // namespace occam::exec
