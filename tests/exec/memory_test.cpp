// The accounting allocator and the arena planner behind every executor buffer.
#include "exec/arena.hpp"
#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>

namespace occam {
namespace {

TEST(MemoryAccount, CountsCurrentAndPeakPerUse) {
  MemoryAccount account;
  {
    Allocation a = account.allocate(1000, MemoryUse::Activations, "a");
    Allocation b = account.allocate(500, MemoryUse::Scratchpad, "b");
    Allocation w = account.allocate(4000, MemoryUse::Weights, "w");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
    EXPECT_EQ(account.current_bytes(MemoryUse::Activations), 1000);
    EXPECT_EQ(account.activation_peak_bytes(), 1500);
    EXPECT_EQ(account.allocations(), 3);
    a = Allocation();  // given back
    EXPECT_EQ(account.current_bytes(MemoryUse::Activations), 0);
    Allocation c = account.allocate(300, MemoryUse::Activations, "c");
    EXPECT_EQ(account.activation_peak_bytes(), 1500);  // 800 now, 1500 at the peak
    Allocation moved = std::move(c);
    EXPECT_EQ(moved.bytes(), 300);
    EXPECT_EQ(c.data(), nullptr);
    EXPECT_EQ(account.current_bytes(MemoryUse::Activations), 300);
  }
  EXPECT_EQ(account.allocations(), 0);
  EXPECT_EQ(account.current_bytes(MemoryUse::Weights), 0);
  EXPECT_EQ(account.peak_bytes(MemoryUse::Weights), 4000);
  EXPECT_EQ(account.peak_bytes(MemoryUse::Activations), 1000);
}

TEST(MemoryAccount, ZeroBytesIsStillARealAllocation) {
  MemoryAccount account;
  const Allocation empty = account.allocate(0, MemoryUse::Scratchpad, "nothing");
  EXPECT_NE(empty.data(), nullptr);
  EXPECT_EQ(account.current_bytes(MemoryUse::Scratchpad), 0);
}

TEST(MemoryAccount, ImpossibleRequestNamesWhatWasAskedFor) {
  MemoryAccount account;
  try {
    account.allocate(int64_t{1} << 62, MemoryUse::Activations, "huge arena");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge arena"), std::string::npos) << e.what();
  }
  EXPECT_EQ(account.allocations(), 0);
}

TEST(Arena, ChainReusesTwoSlots) {
  // A chain: tensor i is written at step i and read at step i + 1.
  std::vector<exec::Lifetime> chain;
  for (int i = 0; i < 8; ++i) chain.push_back({1024, i, i + 1});
  const exec::ArenaLayout layout = exec::plan_arena(chain);
  EXPECT_EQ(layout.bytes, 2048);
  EXPECT_EQ(exec::arena_lower_bound(chain), 2048);
}

TEST(Arena, RandomLifetimesNeverOverlapAndStayNearTheBound) {
  std::mt19937 rng(3);
  for (int round = 0; round < 50; ++round) {
    std::vector<exec::Lifetime> buffers;
    for (int i = 0; i < 40; ++i) {
      const int first = static_cast<int>(rng() % 30);
      buffers.push_back({static_cast<int64_t>(1 + rng() % 5000), first, first + static_cast<int>(rng() % 6)});
    }
    const exec::ArenaLayout layout = exec::plan_arena(buffers);
    const auto end = [&](size_t i) { return layout.offsets[i] + (buffers[i].bytes + 63) / 64 * 64; };
    for (size_t i = 0; i < buffers.size(); ++i) {
      EXPECT_EQ(layout.offsets[i] % 64, 0);
      EXPECT_LE(end(i), layout.bytes);
      for (size_t j = i + 1; j < buffers.size(); ++j) {
        const bool same_time = buffers[i].first <= buffers[j].last && buffers[j].first <= buffers[i].last;
        const bool same_place = layout.offsets[i] < end(j) && layout.offsets[j] < end(i);
        EXPECT_FALSE(same_time && same_place) << "buffers " << i << " and " << j << " collide";
      }
    }
    const int64_t bound = exec::arena_lower_bound(buffers);
    EXPECT_GE(layout.bytes, bound);
    // The largest-first order alone reached 1.23x the bound on these; with the other orders and the
    // local search, at most 1.05x.
    EXPECT_LE(layout.bytes, bound * 11 / 10) << "round " << round;
  }
}

// The fused executor's arena: each partition's block of line buffers alive for one partition,
// boundary tensors from their producer's partition to their last reader's. The largest-first order
// alone left 19% of such arenas unused (resnet50's 25 partitions at 4 MiB: 4.45 MiB for a bound of
// 3.92 MiB).
TEST(Arena, PartitionBlocksBetweenBoundariesStayWithinFivePercentOfTheBound) {
  std::mt19937 rng(7);
  constexpr int64_t kPage = 4096;
  for (int round = 0; round < 50; ++round) {
    std::vector<exec::Lifetime> buffers;
    constexpr int kPartitions = 25;
    for (int p = 0; p < kPartitions; ++p) buffers.push_back({static_cast<int64_t>(kPage * (1 + rng() % 200)), p, p});
    for (int p = 0; p < kPartitions; ++p) {
      for (int k = 0, n = 1 + static_cast<int>(rng() % 2); k < n; ++k) {
        const int last = std::min(kPartitions - 1, p + 1 + static_cast<int>(rng() % 4));
        buffers.push_back({static_cast<int64_t>(kPage * (1 + rng() % 300)), p, last});
      }
    }
    const int64_t bound = exec::arena_lower_bound(buffers, kPage);
    EXPECT_LE(exec::plan_arena(buffers, kPage).bytes, bound * 21 / 20) << "round " << round;
  }
}

TEST(Arena, SameBuffersSameLayout) {
  std::mt19937 rng(11);
  std::vector<exec::Lifetime> buffers;
  for (int i = 0; i < 60; ++i) {
    const int first = static_cast<int>(rng() % 30);
    buffers.push_back({static_cast<int64_t>(1 + rng() % 5000), first, first + static_cast<int>(rng() % 6)});
  }
  EXPECT_EQ(exec::plan_arena(buffers).offsets, exec::plan_arena(buffers).offsets);
}

}  // namespace
}  // namespace occam
