// PageAllocator: page-aligned buffers for the page cache without the heap.
//
// aligned_alloc(4096, 4096) from glibc wastes up to a page per call (the
// alignment slack is split off and fragments the heap), which let the pager's
// resident memory run to twice its cache bound. Here 4 KiB pages are carved
// from 2 MiB chunks and recycled through a free list, so what the cache holds
// is what the process holds; larger pages are mapped on their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace uffdpager {

class PageAllocator {
 public:
  static constexpr size_t kSmallPage = 4096;
  static constexpr size_t kChunkBytes = 2 << 20;

  // The process-wide allocator the page cache uses.
  static PageAllocator& Default();

  ~PageAllocator();

  // A `size`-byte buffer aligned to 4 KiB, or nullptr if memory is exhausted.
  uint8_t* Allocate(size_t size);
  void Free(uint8_t* buffer, size_t size);

  size_t chunk_count() const;

 private:
  mutable std::mutex mu_;
  std::vector<uint8_t*> chunks_;
  std::vector<uint8_t*> free_small_;
};

}  // namespace uffdpager
