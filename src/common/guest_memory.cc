#include "common/guest_memory.h"

#include <linux/mman.h>
#include <sys/mman.h>

namespace uffdpager {

Result<GuestMemory> GuestMemory::Allocate(const std::vector<uint64_t>& region_sizes, uint64_t page_size) {
  if (page_size != 4096 && page_size != kHugePageSize) {
    return Status::InvalidArgument("guest page size must be 4096 or 2 MiB, got " + std::to_string(page_size));
  }
  GuestMemory memory;
  memory.page_size_ = page_size;
  int extra_flags = page_size == kHugePageSize ? (MAP_HUGETLB | MAP_HUGE_2MB) : 0;
  for (uint64_t size : region_sizes) {
    if (size == 0 || size % page_size != 0) {
      return Status::InvalidArgument("region size " + std::to_string(size) + " is not a multiple of the page size");
    }
    auto region = MemoryMapping::MapAlignedAnonymous(size, kRegionAlignment, extra_flags);
    if (!region.ok()) return region.status().WithContext("allocate guest memory region");
    memory.regions_.push_back(std::move(*region));
  }
  return memory;
}

std::vector<GuestRegionMapping> GuestMemory::Mappings() const {
  std::vector<GuestRegionMapping> out;
  uint64_t offset = 0;
  for (const auto& r : regions_) {
    out.push_back({r.address(), r.size(), offset, page_size_});
    offset += r.size();
  }
  return out;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const auto& r : regions_) total += r.size();
  return total;
}

uint8_t* GuestMemory::AtFileOffset(uint64_t offset) const {
  for (const auto& r : regions_) {
    if (offset < r.size()) return r.data() + offset;
    offset -= r.size();
  }
  return nullptr;
}

}  // namespace uffdpager
