#include "exec/arena.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <random>

namespace occam::exec {

namespace {

// Swaps tried by plan_arena's local search: each costs one placement, O(buffers^2).
constexpr int kArenaSearchTrials = 400;

int64_t align_up(int64_t bytes, int64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

bool overlap_in_time(const Lifetime& a, const Lifetime& b) { return a.first <= b.last && b.first <= a.last; }

}  // namespace

namespace {

// Places the buffers in `order`, each at the lowest offset free for its whole lifetime (first fit)
// or in the smallest such gap (best fit).
ArenaLayout place(std::span<const Lifetime> buffers, std::span<const size_t> order, int64_t alignment, bool best_fit) {
  ArenaLayout layout;
  layout.offsets.assign(buffers.size(), 0);
  std::vector<size_t> placed;
  for (size_t i : order) {
    const int64_t size = align_up(buffers[i].bytes, alignment);
    // Address ranges of already placed buffers that are alive at the same time, by start.
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (size_t j : placed) {
      if (overlap_in_time(buffers[i], buffers[j])) {
        busy.emplace_back(layout.offsets[j], layout.offsets[j] + align_up(buffers[j].bytes, alignment));
      }
    }
    std::sort(busy.begin(), busy.end());
    int64_t offset = 0, chosen = -1, chosen_gap = 0;
    for (const auto& [begin, end] : busy) {
      const int64_t gap = begin - offset;
      if (gap >= size && (chosen < 0 || gap < chosen_gap)) {
        chosen = offset;
        chosen_gap = gap;
        if (!best_fit) break;
      }
      offset = std::max(offset, end);
    }
    layout.offsets[i] = chosen >= 0 ? chosen : offset;
    layout.bytes = std::max(layout.bytes, layout.offsets[i] + size);
    placed.push_back(i);
  }
  return layout;
}

}  // namespace

ArenaLayout plan_arena(std::span<const Lifetime> buffers, int64_t alignment) {
  const auto duration = [&](size_t i) { return static_cast<int64_t>(buffers[i].last - buffers[i].first + 1); };
  const std::vector<std::function<bool(size_t, size_t)>> orders = {
      // Largest first, as TensorFlow Lite's arena planner.
      [&](size_t a, size_t b) { return buffers[a].bytes > buffers[b].bytes; },
      // Longest-lived first: they constrain every buffer beside them.
      [&](size_t a, size_t b) { return duration(a) > duration(b); },
      // Most bytes x steps first.
      [&](size_t a, size_t b) { return buffers[a].bytes * duration(a) > buffers[b].bytes * duration(b); },
      // In order of birth, as a stack would.
      [&](size_t a, size_t b) { return buffers[a].first < buffers[b].first; },
  };
  const int64_t bound = arena_lower_bound(buffers, alignment);
  ArenaLayout best;
  std::vector<size_t> best_order;
  bool best_fit_wins = false;
  for (const auto& before : orders) {
    std::vector<size_t> order(buffers.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), before);
    for (const bool best_fit : {false, true}) {
      ArenaLayout layout = place(buffers, order, alignment, best_fit);
      if (best.offsets.empty() || layout.bytes < best.bytes) {
        best = std::move(layout);
        best_order = order;
        best_fit_wins = best_fit;
      }
    }
  }
  if (best.offsets.empty()) best.offsets.assign(buffers.size(), 0);
  // Local search on the order: swap two buffers, keep the swap if the arena does not grow. Seeded,
  // so that a layout (and every measured peak) is the same on every run.
  std::mt19937 random(20161215);
  for (int trial = 0; trial < kArenaSearchTrials && best.bytes > bound && buffers.size() > 1; ++trial) {
    std::vector<size_t> order = best_order;
    std::uniform_int_distribution<size_t> pick(0, order.size() - 1);
    std::swap(order[pick(random)], order[pick(random)]);
    ArenaLayout layout = place(buffers, order, alignment, best_fit_wins);
    if (layout.bytes <= best.bytes) {
      best = std::move(layout);
      best_order = std::move(order);
    }
  }
  return best;
}

int64_t arena_lower_bound(std::span<const Lifetime> buffers, int64_t alignment) {
  std::map<int, int64_t> delta;  // step -> change of live bytes
  for (const Lifetime& b : buffers) {
    delta[b.first] += align_up(b.bytes, alignment);
    delta[b.last + 1] -= align_up(b.bytes, alignment);
  }
  int64_t live = 0, peak = 0;
  for (const auto& [step, change] : delta) {
    live += change;
    peak = std::max(peak, live);
  }
  return peak;
}

}  // namespace occam::exec
