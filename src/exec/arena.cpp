#include "exec/arena.hpp"

#include <algorithm>
#include <map>
#include <numeric>

namespace occam::exec {

namespace {

int64_t align_up(int64_t bytes, int64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

bool overlap_in_time(const Lifetime& a, const Lifetime& b) { return a.first <= b.last && b.first <= a.last; }

}  // namespace

ArenaLayout plan_arena(std::span<const Lifetime> buffers, int64_t alignment) {
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return buffers[a].first < buffers[b].first;
  });
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
    int64_t offset = 0;
    for (const auto& [begin, end] : busy) {
      if (begin - offset >= size) break;
      offset = std::max(offset, end);
    }
    layout.offsets[i] = offset;
    layout.bytes = std::max(layout.bytes, offset + size);
    placed.push_back(i);
  }
  return layout;
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
