// Circular line buffers whose windows never wrap: a page range of a memory file mapped twice, back
// to back, so that the bytes at data() + size + i are the bytes at data() + i. A run of rows that
// starts anywhere in the first copy and is no longer than the buffer is contiguous in memory, which
// lets oneDNN primitives read a K-row window of a circular buffer as one dense NHWC band.
#pragma once

#include <cstdint>

namespace occam::exec {

class MirroredRange {
public:
  MirroredRange() = default;
  // Maps [offset, offset + size) of `file` twice; offset and size must be multiples of the page size.
  MirroredRange(int file, int64_t offset, int64_t size);
  MirroredRange(MirroredRange&& other) noexcept;
  MirroredRange& operator=(MirroredRange&& other) noexcept;
  MirroredRange(const MirroredRange&) = delete;
  MirroredRange& operator=(const MirroredRange&) = delete;
  ~MirroredRange();

  char* data() const { return data_; }
  int64_t size() const { return size_; }

private:
  void unmap();

  char* data_ = nullptr;
  int64_t size_ = 0;
};

int64_t page_bytes();

}  // namespace occam::exec
