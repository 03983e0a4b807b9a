#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/units.hpp"

#include <algorithm>
#include <cstdlib>
#include <utility>

namespace occam {

std::string_view to_string(MemoryUse use) {
  switch (use) {
    case MemoryUse::Activations: return "activations";
    case MemoryUse::Scratchpad: return "scratchpad";
    case MemoryUse::Weights: return "weights";
  }
  return "?";
}

Allocation::Allocation(Allocation&& other) noexcept
    : account_(std::exchange(other.account_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      use_(other.use_) {}

Allocation& Allocation::operator=(Allocation&& other) noexcept {
  if (this != &other) {
    release();
    account_ = std::exchange(other.account_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    use_ = other.use_;
  }
  return *this;
}

Allocation::~Allocation() { release(); }

void Allocation::release() {
  if (account_ != nullptr) account_->give_back(data_, bytes_, use_);
  account_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

namespace {

constexpr int64_t kAlignment = 64;  // a cache line and an AVX-512 register

size_t slot(MemoryUse use) { return static_cast<size_t>(use); }

}  // namespace

Allocation MemoryAccount::allocate(int64_t bytes, MemoryUse use, std::string_view what) {
  if (bytes < 0) fail("{}: cannot allocate {} bytes", what, bytes);
  // aligned_alloc needs a size that is a multiple of the alignment; a zero-byte request still gets
  // a distinct pointer so that every allocation is a real one.
  const int64_t rounded = std::max<int64_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* data = std::aligned_alloc(kAlignment, static_cast<size_t>(rounded));
  if (data == nullptr) fail("{}: out of memory allocating {} for {}", what, format_bytes(static_cast<double>(bytes)), to_string(use));
  const std::lock_guard lock(mutex_);
  int64_t& current = current_[slot(use)];
  current += bytes;
  peak_[slot(use)] = std::max(peak_[slot(use)], current);
  activation_peak_ = std::max(activation_peak_, current_[slot(MemoryUse::Activations)] + current_[slot(MemoryUse::Scratchpad)]);
  ++live_;
  return Allocation(this, data, bytes, use);
}

void MemoryAccount::give_back(void* data, int64_t bytes, MemoryUse use) {
  std::free(data);
  const std::lock_guard lock(mutex_);
  current_[slot(use)] -= bytes;
  --live_;
}

int64_t MemoryAccount::current_bytes(MemoryUse use) const {
  const std::lock_guard lock(mutex_);
  return current_[slot(use)];
}

int64_t MemoryAccount::peak_bytes(MemoryUse use) const {
  const std::lock_guard lock(mutex_);
  return peak_[slot(use)];
}

int64_t MemoryAccount::activation_peak_bytes() const {
  const std::lock_guard lock(mutex_);
  return activation_peak_;
}

int64_t MemoryAccount::allocations() const {
  const std::lock_guard lock(mutex_);
  return live_;
}

}  // namespace occam
