#include "vmm/snapshot_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/unique_fd.h"

namespace uffdpager::vmm {

namespace {

Status PWriteAll(int fd, const uint8_t* data, uint64_t len, uint64_t offset, const std::string& path) {
  while (len > 0) {
    // Guest memory restored through a userfaultfd may fault here; the kernel
    // takes those faults on our behalf and the page server fills them.
    ssize_t n = ::pwrite(fd, data, std::min<uint64_t>(len, 8u << 20), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "write memory file " + path);
    data += n;
    len -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Result<MemoryWriteStats> WriteFullMemoryFile(const std::string& path, const GuestRam& ram) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "create memory file " + path);
  MemoryWriteStats stats;
  const auto& layout = ram.layout();
  for (size_t i = 0; i < layout.regions.size(); ++i) {
    const auto& r = layout.regions[i];
    UFFD_RETURN_IF_ERROR(PWriteAll(fd.get(), ram.region_host(i), r.size, r.file_offset, path));
    stats.bytes_written += r.size;
    stats.pages_written += r.size / kGuestPageSize;
  }
  if (::fsync(fd.get()) < 0) return Status::FromErrno(errno, "fsync memory file " + path);
  return stats;
}

Result<MemoryWriteStats> WriteDiffMemoryFile(const std::string& path, const GuestRam& ram,
                                             const std::vector<std::vector<uint64_t>>& dirty) {
  const auto& layout = ram.layout();
  if (dirty.size() != layout.regions.size()) return Status::Internal("one dirty bitmap per region expected");
  // No O_TRUNC: a Diff merges into what the file already holds.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "open memory file " + path);
  if (::ftruncate(fd.get(), static_cast<off_t>(layout.total_size())) < 0) {
    return Status::FromErrno(errno, "set the size of memory file " + path);
  }
  MemoryWriteStats stats;
  for (size_t i = 0; i < layout.regions.size(); ++i) {
    const auto& r = layout.regions[i];
    uint64_t pages = r.size / kGuestPageSize;
    auto is_dirty = [&](uint64_t p) { return (dirty[i][p / 64] >> (p % 64)) & 1; };
    // Coalesce runs of dirty pages into one write each.
    for (uint64_t p = 0; p < pages;) {
      if (!is_dirty(p)) {
        ++p;
        continue;
      }
      uint64_t end = p;
      while (end < pages && is_dirty(end)) ++end;
      uint64_t off = p * kGuestPageSize, len = (end - p) * kGuestPageSize;
      UFFD_RETURN_IF_ERROR(PWriteAll(fd.get(), ram.region_host(i) + off, len, r.file_offset + off, path));
      stats.bytes_written += len;
      stats.pages_written += end - p;
      p = end;
    }
  }
  if (::fsync(fd.get()) < 0) return Status::FromErrno(errno, "fsync memory file " + path);
  return stats;
}

}  // namespace uffdpager::vmm
