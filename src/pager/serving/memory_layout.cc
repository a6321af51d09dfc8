#include "pager/serving/memory_layout.h"

#include <algorithm>

#include <fmt/format.h>

namespace uffdpager {

Result<MemoryLayout> MemoryLayout::Create(std::vector<GuestRegionMapping> regions, uint64_t file_size) {
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto& r = regions[i];
    if (r.offset > file_size || r.size > file_size - r.offset) {
      return Status::InvalidArgument(
          fmt::format("region {} (offset {}, size {}) extends past the end of the {}-byte memory file", i, r.offset,
                      r.size, file_size));
    }
  }
  std::sort(regions.begin(), regions.end(),
            [](const auto& a, const auto& b) { return a.base_host_virt_addr < b.base_host_virt_addr; });
  return MemoryLayout(std::move(regions));
}

std::optional<PageLocation> MemoryLayout::Locate(uint64_t addr) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), addr,
                             [](uint64_t a, const GuestRegionMapping& r) { return a < r.base_host_virt_addr; });
  if (it == regions_.begin()) return std::nullopt;
  --it;
  if (addr >= it->end_addr()) return std::nullopt;
  uint64_t page_addr = addr & ~(it->page_size - 1);
  uint64_t delta = page_addr - it->base_host_virt_addr;
  return PageLocation{static_cast<size_t>(it - regions_.begin()), page_addr, it->offset + delta, it->page_size,
                      delta / it->page_size};
}

std::optional<PageLocation> MemoryLayout::LocateFileOffset(uint64_t offset) const {
  for (const auto& r : regions_) {
    if (offset >= r.offset && offset - r.offset < r.size) {
      return Locate(r.base_host_virt_addr + (offset - r.offset));
    }
  }
  return std::nullopt;
}

uint64_t MemoryLayout::total_bytes() const {
  uint64_t total = 0;
  for (const auto& r : regions_) total += r.size;
  return total;
}

}  // namespace uffdpager
