#include "pager/serving/page_presence.h"

#include <algorithm>

namespace uffdpager {

PagePresence::PagePresence(const std::vector<GuestRegionMapping>& sorted_regions) {
  for (const auto& r : sorted_regions) {
    uint64_t pages = r.size / r.page_size;
    regions_.push_back({r.base_host_virt_addr, r.page_size, pages, std::vector<uint64_t>((pages + 63) / 64, 0)});
  }
}

bool PagePresence::IsPresent(size_t region, uint64_t page_index) const {
  return (regions_[region].words[page_index / 64] >> (page_index % 64)) & 1;
}

void PagePresence::MarkPresent(size_t region, uint64_t page_index) {
  uint64_t& word = regions_[region].words[page_index / 64];
  uint64_t bit = 1ULL << (page_index % 64);
  if (!(word & bit)) {
    word |= bit;
    ++present_;
  }
}

void PagePresence::ClearRange(size_t region, uint64_t start, uint64_t end) {
  RegionBits& r = regions_[region];
  uint64_t region_end = r.base + r.pages * r.page_size;
  start = std::max(start, r.base);
  end = std::min(end, region_end);
  if (start >= end) return;
  uint64_t first = (start - r.base) / r.page_size;
  uint64_t last = (end - r.base + r.page_size - 1) / r.page_size;  // exclusive
  for (uint64_t i = first; i < last; ++i) {
    uint64_t& word = r.words[i / 64];
    uint64_t bit = 1ULL << (i % 64);
    if (word & bit) {
      word &= ~bit;
      --present_;
    }
  }
}

}  // namespace uffdpager
