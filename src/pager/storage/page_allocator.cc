#include "pager/storage/page_allocator.h"

#include <sys/mman.h>

namespace uffdpager {

PageAllocator& PageAllocator::Default() {
  static PageAllocator* allocator = new PageAllocator();  // lives as long as the process
  return *allocator;
}

PageAllocator::~PageAllocator() {
  for (uint8_t* chunk : chunks_) ::munmap(chunk, kChunkBytes);
}

uint8_t* PageAllocator::Allocate(size_t size) {
  if (size != kSmallPage) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  std::lock_guard lock(mu_);
  if (free_small_.empty()) {
    void* p = ::mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    auto* chunk = static_cast<uint8_t*>(p);
    chunks_.push_back(chunk);
    // Hand pages out from the chunk's start, so an idle tail stays untouched.
    for (size_t off = kChunkBytes; off > 0; off -= kSmallPage) free_small_.push_back(chunk + off - kSmallPage);
  }
  uint8_t* page = free_small_.back();
  free_small_.pop_back();
  return page;
}

void PageAllocator::Free(uint8_t* buffer, size_t size) {
  if (buffer == nullptr) return;
  if (size != kSmallPage) {
    ::munmap(buffer, size);
    return;
  }
  std::lock_guard lock(mu_);
  free_small_.push_back(buffer);
}

size_t PageAllocator::chunk_count() const {
  std::lock_guard lock(mu_);
  return chunks_.size();
}

}  // namespace uffdpager
