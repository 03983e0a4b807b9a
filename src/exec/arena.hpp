// Static memory planning: one arena for all activations of an executor, with an offset per buffer
// chosen from the buffers' lifetimes so that buffers alive at the same time never overlap.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace occam::exec {

// A buffer alive from step `first` to step `last`, inclusive.
struct Lifetime {
  int64_t bytes = 0;
  int first = 0;
  int last = 0;
};

struct ArenaLayout {
  std::vector<int64_t> offsets;  // per buffer, multiples of the alignment
  int64_t bytes = 0;             // arena size
};

// Greedy by size (largest first, each at the lowest offset that is free for its whole lifetime), as
// TensorFlow Lite's arena planner does: near the lower bound for the chains and DAGs of CNNs.
ArenaLayout plan_arena(std::span<const Lifetime> buffers, int64_t alignment = 64);

// Largest sum of (aligned) bytes alive at one step: no arena can be smaller.
int64_t arena_lower_bound(std::span<const Lifetime> buffers, int64_t alignment = 64);

}  // namespace occam::exec
