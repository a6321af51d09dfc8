// PagePresence: which pages of a session's regions this pager has installed.
// Lets duplicate faults be answered with a wake instead of a cache lookup, and
// lets completion skip what is already in. A remove clears the bits.
#pragma once

#include <cstdint>
#include <vector>

#include "common/uffd_handshake.h"

namespace uffdpager {

class PagePresence {
 public:
  explicit PagePresence(const std::vector<GuestRegionMapping>& sorted_regions);

  bool IsPresent(size_t region, uint64_t page_index) const;
  void MarkPresent(size_t region, uint64_t page_index);
  // Clears every page of `region` that overlaps [start, end) (host addresses).
  void ClearRange(size_t region, uint64_t start, uint64_t end);
  uint64_t present_pages() const { return present_; }

 private:
  struct RegionBits {
    uint64_t base = 0;
    uint64_t page_size = 0;
    uint64_t pages = 0;
    std::vector<uint64_t> words;
  };
  std::vector<RegionBits> regions_;
  uint64_t present_ = 0;
};

}  // namespace uffdpager
