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

// Greedy: buffers placed one by one, each at an offset free for its whole lifetime, in a few orders
// (largest first as TensorFlow Lite's arena planner, longest-lived first, by bytes x lifetime, by
// birth) with first or best fit; the smallest arena wins, then a seeded local search swaps pairs in
// its order while that does not grow the arena, until it meets the lower bound. Near the lower bound for the chains and
// DAGs of CNNs; the orders other than size matter where partitions' line buffers sit between long-
// lived boundary tensors.
ArenaLayout plan_arena(std::span<const Lifetime> buffers, int64_t alignment = 64);

// Largest sum of (aligned) bytes alive at one step: no arena can be smaller.
int64_t arena_lower_bound(std::span<const Lifetime> buffers, int64_t alignment = 64);

}  // namespace occam::exec
