#include "pager/storage/backing_mapping.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "pager/storage/sigbus_guard.h"
#include "pager/storage/zero_scan.h"

namespace uffdpager {

Result<BackingMapping> BackingMapping::Map(std::shared_ptr<const BackingFile> file) {
  auto mapping = MemoryMapping::Map(nullptr, file->size(), PROT_READ, MAP_SHARED, file->fd(), 0,
                                    "read-only mapping of the backing file");
  if (!mapping.ok()) return mapping.status().WithContext(file->path());
  return BackingMapping(std::move(file), std::move(*mapping));
}

Status BackingMapping::Load(uint64_t offset, uint64_t length, uint64_t* bytes_read) {
  Status status;
  file_->ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t end) {
    if (!status.ok()) return;
    if (::madvise(mapping_.data() + start, end - start, MADV_POPULATE_READ) != 0) {
      // EFAULT: the file no longer reaches that far. EINVAL: a kernel without
      // MADV_POPULATE_READ (before 5.14); the copy then faults the pages in.
      if (errno == EFAULT)
        status = file_->TruncatedError(start, end - start);
      else if (errno != EINVAL)
        status = Status::FromErrno(errno, fmt::format("map in {} at {}", file_->path(), start));
    }
    if (status.ok()) *bytes_read += end - start;
  });
  return status;
}

namespace {

struct ZeroScan {
  const uint8_t* base;
  uint64_t page_size;
  uint64_t count;
  uint8_t* zero;  // in: 1 for holes (not scanned); out: 1 for every zero page
};

// Runs under the SIGBUS guard: plain data only, nothing to destroy.
void ScanForZeroPages(void* context) {
  auto* scan = static_cast<ZeroScan*>(context);
  for (uint64_t i = 0; i < scan->count; ++i) {
    if (!scan->zero[i]) scan->zero[i] = IsAllZero(scan->base + i * scan->page_size, scan->page_size) ? 1 : 0;
  }
}

}  // namespace

Status BackingMapping::FindZeroPages(uint64_t offset, uint64_t page_size, uint64_t count, uint8_t* zero) const {
  // Holes are zeros without a scan: every page starts as one, and the pages
  // a data piece touches are scanned (one walk over the extents, not a
  // lookup per page).
  std::fill(zero, zero + count, uint8_t{1});
  file_->ForEachDataPiece(offset, count * page_size, [&](uint64_t start, uint64_t end) {
    std::fill(zero + (start - offset) / page_size, zero + (end - offset + page_size - 1) / page_size, uint8_t{0});
  });
  ZeroScan scan{at(offset), page_size, count, zero};
  if (!RunWithSigbusGuard(scan.base, count * page_size, ScanForZeroPages, &scan)) {
    return file_->TruncatedError(offset, count * page_size);
  }
  return Status::Ok();
}

void BackingMapping::Release(uint64_t offset, uint64_t length) {
  (void)::madvise(mapping_.data() + offset, length, MADV_DONTNEED);
}

}  // namespace uffdpager
