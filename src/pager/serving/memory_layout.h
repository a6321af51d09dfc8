// MemoryLayout: a session's guest regions, checked against its backing file,
// with address lookup for the fault path.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/uffd_handshake.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct PageLocation {
  size_t region = 0;
  uint64_t page_addr = 0;    // page-aligned host address
  uint64_t file_offset = 0;  // where that page's bytes are in the memory file
  uint64_t page_size = 0;
  uint64_t page_index = 0;  // index of the page within its region
};

class MemoryLayout {
 public:
  // Fails if any region's bytes lie outside a file of `file_size` bytes.
  static Result<MemoryLayout> Create(std::vector<GuestRegionMapping> regions, uint64_t file_size);

  // Where the page containing `addr` lives; nullopt if outside every region.
  std::optional<PageLocation> Locate(uint64_t addr) const;

  // Where memory-file offset `offset` is mapped; nullopt if no region maps it.
  std::optional<PageLocation> LocateFileOffset(uint64_t offset) const;

  const std::vector<GuestRegionMapping>& regions() const { return regions_; }
  uint64_t total_bytes() const;

 private:
  explicit MemoryLayout(std::vector<GuestRegionMapping> regions) : regions_(std::move(regions)) {}
  std::vector<GuestRegionMapping> regions_;  // sorted by address
};

}  // namespace uffdpager
