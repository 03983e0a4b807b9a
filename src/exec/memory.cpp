#include "occam/error.hpp"
#include "occam/exec.hpp"
#include "occam/units.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace occam {

std::string_view to_string(MemoryUse use) {
  switch (use) {
    case MemoryUse::Activations: return "activations";
    case MemoryUse::Scratchpad: return "scratchpad";
    case MemoryUse::Weights: return "weights";
    case MemoryUse::Program: return "program";
  }
  return "?";
}

Allocation::Allocation(Allocation&& other) noexcept
    : account_(std::exchange(other.account_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      use_(other.use_),
      file_(std::exchange(other.file_, -1)) {}

Allocation& Allocation::operator=(Allocation&& other) noexcept {
  if (this != &other) {
    release();
    account_ = std::exchange(other.account_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    use_ = other.use_;
    file_ = std::exchange(other.file_, -1);
  }
  return *this;
}

Allocation::~Allocation() { release(); }

void Allocation::release() {
  if (account_ == nullptr) return;
  if (file_ >= 0) {
    munmap(data_, static_cast<size_t>(bytes_));
    close(file_);
  } else {
    std::free(data_);
  }
  account_->give_back(bytes_, use_);
  account_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
  file_ = -1;
}

namespace {

constexpr int64_t kAlignment = 64;  // a cache line and an AVX-512 register

size_t slot(MemoryUse use) { return static_cast<size_t>(use); }

}  // namespace

namespace {

// An anonymous memory file of `bytes` (a multiple of the page size), mapped once.
std::pair<void*, int> map_shared_file(int64_t bytes, std::string_view what) {
  const std::string name(what.substr(0, 200));
  const int file = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (file < 0) fail("{}: cannot create a memory file ({})", what, std::strerror(errno));
  if (ftruncate(file, bytes) != 0) {
    const int error = errno;
    close(file);
    fail("{}: cannot size a memory file to {} ({})", what, format_bytes(static_cast<double>(bytes)), std::strerror(error));
  }
  void* data = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE, MAP_SHARED, file, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    close(file);
    fail("{}: cannot map {} ({})", what, format_bytes(static_cast<double>(bytes)), std::strerror(error));
  }
  return {data, file};
}

}  // namespace

Allocation MemoryAccount::allocate(int64_t bytes, MemoryUse use, std::string_view what, Backing backing) {
  if (bytes < 0) fail("{}: cannot allocate {} bytes", what, bytes);
  if (backing == Backing::SharedFile) {
    const int64_t page = sysconf(_SC_PAGESIZE);
    const int64_t rounded = std::max<int64_t>(page, (bytes + page - 1) / page * page);
    const auto [data, file] = map_shared_file(rounded, what);
    count(rounded, use);
    return Allocation(this, data, rounded, use, file);
  }
  // aligned_alloc needs a size that is a multiple of the alignment; a zero-byte request still gets
  // a distinct pointer so that every allocation is a real one.
  const int64_t rounded = std::max<int64_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* data = std::aligned_alloc(kAlignment, static_cast<size_t>(rounded));
  if (data == nullptr) fail("{}: out of memory allocating {} for {}", what, format_bytes(static_cast<double>(bytes)), to_string(use));
  count(bytes, use);
  return Allocation(this, data, bytes, use, -1);
}

void MemoryAccount::count(int64_t bytes, MemoryUse use) {
  const std::lock_guard lock(mutex_);
  int64_t& current = current_[slot(use)];
  current += bytes;
  peak_[slot(use)] = std::max(peak_[slot(use)], current);
  activation_peak_ = std::max(activation_peak_, current_[slot(MemoryUse::Activations)] + current_[slot(MemoryUse::Scratchpad)]);
  ++live_;
}

void MemoryAccount::give_back(int64_t bytes, MemoryUse use) {
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
