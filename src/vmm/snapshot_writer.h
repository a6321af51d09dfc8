// Memory files of tinyvmm snapshots, as Firecracker writes them: the guest
// regions back to back (region i at the sum of the earlier sizes).
//
// A Full snapshot writes every byte (the file is truncated first). A Diff
// snapshot writes only the pages in the dirty bitmaps and leaves every other
// byte of the file as it was: into an existing file it merges (the file the
// previous snapshot wrote becomes the new snapshot's memory), into a new
// file it leaves holes, so the file is sparse.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "uffdpager/status.h"
#include "vmm/guest_ram.h"

namespace uffdpager::vmm {

struct MemoryWriteStats {
  uint64_t bytes_written = 0;
  uint64_t pages_written = 0;
};

Result<MemoryWriteStats> WriteFullMemoryFile(const std::string& path, const GuestRam& ram);

// `dirty[i]` is the bitmap of region i (one bit per 4 KiB page).
Result<MemoryWriteStats> WriteDiffMemoryFile(const std::string& path, const GuestRam& ram,
                                             const std::vector<std::vector<uint64_t>>& dirty);

}  // namespace uffdpager::vmm
