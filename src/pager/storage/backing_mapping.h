// BackingMapping: a backing file mapped read-only and shared, as the source
// of completion runs.
//
// Completion installs every page a session still lacks and keeps none of them
// in the shared cache. Through a mapping, UFFDIO_COPY reads the kernel's page
// cache directly: one copy per page, where a pread into a staging buffer
// costs two. Whatever touches the mapping from user space (the zero-page
// scan) runs under a SIGBUS guard, and the kernel's own reads of it fail with
// EFAULT, so a file truncated after it was opened fails the run, never the
// pager.
#pragma once

#include <cstdint>
#include <memory>

#include "common/memory_mapping.h"
#include "pager/storage/backing_file.h"
#include "uffdpager/status.h"

namespace uffdpager {

class BackingMapping {
 public:
  static Result<BackingMapping> Map(std::shared_ptr<const BackingFile> file);

  // Maps the data of [offset, offset+length) in (MADV_POPULATE_READ), reading
  // it from disk if the page cache lacks it, so the copy does not fault page
  // by page. Holes are left alone. Adds the data bytes to *bytes_read.
  Status Load(uint64_t offset, uint64_t length, uint64_t* bytes_read);

  // zero[i] = whether page i of the `count` pages at `offset` is all zeros:
  // holes without reading them, data by scanning it.
  Status FindZeroPages(uint64_t offset, uint64_t page_size, uint64_t count, uint8_t* zero) const;

  // The file's bytes at `offset`, as a UFFDIO_COPY source.
  const uint8_t* at(uint64_t offset) const { return mapping_.data() + offset; }

  // Unmaps [offset, offset+length) from the pager's page tables (the page
  // cache keeps the pages), so the pager's resident memory does not grow
  // with what it has copied.
  void Release(uint64_t offset, uint64_t length);

 private:
  BackingMapping(std::shared_ptr<const BackingFile> file, MemoryMapping mapping)
      : file_(std::move(file)), mapping_(std::move(mapping)) {}

  std::shared_ptr<const BackingFile> file_;
  MemoryMapping mapping_;
};

}  // namespace uffdpager
