// Diff layers for tests: sparse files of the memory's size that hold only
// some pages (as a Diff snapshot holds the pages a VM dirtied), and the
// memory a chain of them must read as. Header-only: the unit tests use it
// too.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace uffdpager::testing {

inline constexpr uint64_t kLayerPage = 4096;

// The bytes a test layer writes at page `offset`: distinct per seed and
// page, and all zeros for every fifth page (a dirtied page of zeros, which
// a layer holds as data, never as a hole).
inline std::vector<uint8_t> LayerPageBytes(uint64_t seed, uint64_t offset) {
  std::vector<uint8_t> page(kLayerPage, 0);
  const uint64_t index = offset / kLayerPage;
  if ((index + seed) % 5 == 0) return page;
  for (uint64_t i = 0; i < kLayerPage; i += 8) {
    const uint64_t word = (seed << 48) ^ (index << 16) ^ (i * 0x9e3779b97f4a7c15ULL);
    std::memcpy(&page[i], &word, 8);
  }
  return page;
}

// Writes a layer of `size` bytes at `path` holding only the pages at
// `offsets` (LayerPageBytes(seed, offset) each; the rest holes), and writes
// those pages into `image`, the memory the chain so far reads as. False on
// an I/O error.
inline bool WriteTestLayer(const std::string& path, uint64_t size, const std::vector<uint64_t>& offsets, uint64_t seed,
                           std::vector<uint8_t>* image) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return false;
  for (uint64_t offset : offsets) {
    std::vector<uint8_t> page = LayerPageBytes(seed, offset);
    if (::pwrite(fd.get(), page.data(), page.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(page.size())) {
      return false;
    }
    std::memcpy(image->data() + offset, page.data(), page.size());
  }
  return ::fsync(fd.get()) == 0;
}

// Whether the file system of `dir` reports holes (SEEK_DATA): a layer's
// holes are how the pager knows which pages it does not hold.
inline bool FileSystemReportsHoles(const std::string& dir) {
  const std::string probe = dir + "/hole-probe";
  bool holes = false;
  {
    UniqueFd fd(::open(probe.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd && ::ftruncate(fd.get(), 1 << 20) == 0 && ::pwrite(fd.get(), "x", 1, 512 << 10) == 1) {
      holes = ::lseek(fd.get(), 0, SEEK_DATA) > 0;
    }
  }
  ::unlink(probe.c_str());
  return holes;
}

}  // namespace uffdpager::testing
