// GuestMemory: a VMM's guest memory laid out the way Firecracker lays it out.
// Each region is private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS|
// MAP_NORESERVE, plus MAP_HUGETLB|MAP_HUGE_2MB for 2 MiB pages) aligned to
// 2 MiB; its bytes sit in the memory file at the sum of the earlier regions'
// sizes. Used by tinyvmm and by the tests' Firecracker stand-in.
#pragma once

#include <cstdint>
#include <vector>

#include "common/memory_mapping.h"
#include "common/uffd_handshake.h"
#include "uffdpager/status.h"

namespace uffdpager {

inline constexpr uint64_t kRegionAlignment = 2ULL << 20;
inline constexpr uint64_t kHugePageSize = 2ULL << 20;

class GuestMemory {
 public:
  // One region per entry of `region_sizes`; `page_size` is 4096 or 2 MiB.
  static Result<GuestMemory> Allocate(const std::vector<uint64_t>& region_sizes, uint64_t page_size);

  // The regions as the handshake describes them (cumulative file offsets).
  std::vector<GuestRegionMapping> Mappings() const;

  size_t region_count() const { return regions_.size(); }
  uint8_t* region_data(size_t i) const { return regions_[i].data(); }
  uint64_t region_size(size_t i) const { return regions_[i].size(); }
  uint64_t page_size() const { return page_size_; }
  uint64_t total_size() const;

  // Host address of memory-file offset `offset`, or nullptr if outside.
  uint8_t* AtFileOffset(uint64_t offset) const;

 private:
  std::vector<MemoryMapping> regions_;
  uint64_t page_size_ = 4096;
};

}  // namespace uffdpager
