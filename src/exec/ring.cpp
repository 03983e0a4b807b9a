#include "exec/ring.hpp"

#include "occam/error.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace occam::exec {

int64_t page_bytes() {
  static const int64_t page = sysconf(_SC_PAGESIZE);
  return page;
}

MirroredRange::MirroredRange(int file, int64_t offset, int64_t size) : size_(size) {
  if (size <= 0 || offset % page_bytes() != 0 || size % page_bytes() != 0) {
    fail("line buffer of {} bytes at offset {}: both must be positive multiples of the page size", size, offset);
  }
  // Reserve both halves first so that nothing else can land between them.
  void* reserved = mmap(nullptr, static_cast<size_t>(2 * size), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reserved == MAP_FAILED) fail("cannot reserve {} bytes of address space for a line buffer ({})", 2 * size, std::strerror(errno));
  data_ = static_cast<char*>(reserved);
  for (int copy = 0; copy < 2; ++copy) {
    void* at = mmap(data_ + copy * size, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                    file, offset);
    if (at == MAP_FAILED) {
      const int error = errno;
      unmap();
      fail("cannot map a line buffer of {} bytes twice ({})", size, std::strerror(error));
    }
  }
}

MirroredRange::MirroredRange(MirroredRange&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MirroredRange& MirroredRange::operator=(MirroredRange&& other) noexcept {
  if (this != &other) {
    unmap();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MirroredRange::~MirroredRange() { unmap(); }

void MirroredRange::unmap() {
  if (data_ != nullptr) munmap(data_, static_cast<size_t>(2 * size_));
  data_ = nullptr;
  size_ = 0;
}

}  // namespace occam::exec
