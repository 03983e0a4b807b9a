#include "exec/ring.hpp"

#include "occam/error.hpp"
#include "occam/exec.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <tuple>
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

namespace occam {

MappedPages touched_line_buffer_pages() {
  MappedPages pages;
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  std::FILE* pagemap = std::fopen("/proc/self/pagemap", "rb");
  if (maps != nullptr && pagemap != nullptr) {
    const auto page = static_cast<unsigned long long>(exec::page_bytes());
    std::set<std::tuple<unsigned long, unsigned long long, unsigned long long>> mapped;  // inode, offset, size
    char line[4096];
    while (std::fgets(line, sizeof line, maps) != nullptr) {
      unsigned long long lo = 0, hi = 0, offset = 0;
      unsigned long inode = 0;
      char perms[8] = {}, device[32] = {};
      if (std::sscanf(line, "%llx-%llx %7s %llx %31s %lu", &lo, &hi, perms, &offset, device, &inode) != 6) continue;
      if (std::strstr(line, "/memfd:") == nullptr) continue;
      const bool second = !mapped.insert({inode, offset, hi - lo}).second;
      unsigned long long present = 0;
      for (unsigned long long at = lo; at < hi; at += page) {
        uint64_t entry = 0;
        if (std::fseek(pagemap, static_cast<long>(at / page * sizeof entry), SEEK_SET) != 0) break;
        if (std::fread(&entry, sizeof entry, 1, pagemap) != 1) break;
        if ((entry >> 63) & 1U) present += page;
      }
      (second ? pages.second_bytes : pages.first_bytes) += static_cast<int64_t>(present);
    }
  }
  if (maps != nullptr) std::fclose(maps);
  if (pagemap != nullptr) std::fclose(pagemap);
  return pages;
}

}  // namespace occam
