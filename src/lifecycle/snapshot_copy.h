// Cheap copies of snapshot files. A memory file is cloned with a reflink
// (FICLONE: shared extents, copy-on-write, constant time) where the
// filesystem can; otherwise it is copied sparsely: only the data extents
// (SEEK_DATA/SEEK_HOLE), with copy_file_range so the bytes stay in the
// kernel. A snapshot directory is copied without its memory file and without
// sockets or stale "*.sock" files, which belong to a running VMM.
#pragma once

#include <cstdint>
#include <string>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

struct CopyReport {
  bool reflinked = false;
  uint64_t bytes_copied = 0;  // 0 for a reflink
};

// Copies `from` to a new file `to` (which must not exist) and fsyncs it.
Result<CopyReport> CopyFileCheaply(const std::string& from, const std::string& to);

// Copies the regular files of `from_dir` into `to_dir` (created), skipping
// the names `memory*`, sockets and "*.sock".
Status CopySnapshotDirectory(const std::string& from_dir, const std::string& to_dir);

}  // namespace uffdpager::lifecycle
