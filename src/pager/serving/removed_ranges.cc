#include "pager/serving/removed_ranges.h"

#include <algorithm>
#include <iterator>

namespace uffdpager {

void RemovedRanges::Add(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= start) {
      start = prev->first;
      end = std::max(end, prev->second);
      it = ranges_.erase(prev);
    }
  }
  while (it != ranges_.end() && it->first <= end) {
    end = std::max(end, it->second);
    it = ranges_.erase(it);
  }
  ranges_.emplace(start, end);
}

bool RemovedRanges::Contains(uint64_t addr) const { return Overlaps(addr, addr + 1); }

bool RemovedRanges::Overlaps(uint64_t start, uint64_t end) const {
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) return true;
  return it != ranges_.end() && it->first < end;
}

uint64_t RemovedRanges::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [s, e] : ranges_) total += e - s;
  return total;
}

}  // namespace uffdpager
