// Cheap copies of snapshot files. A memory file is cloned with a reflink
// (FICLONE: shared extents, copy-on-write, constant time) where the
// filesystem can; otherwise it is copied sparsely: only the data extents
// (SEEK_DATA/SEEK_HOLE), with copy_file_range so the bytes stay in the
// kernel. A snapshot directory is copied without its memory file and without
// sockets or stale "*.sock" files, which belong to a running VMM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

struct CopyReport {
  bool reflinked = false;     // the base (the whole file) was reflinked
  uint64_t bytes_copied = 0;  // bytes copied, not reflinked
};

// Copies `from` to a new file `to` (which must not exist) and fsyncs it.
Result<CopyReport> CopyFileCheaply(const std::string& from, const std::string& to);

// Writes into a new file `to` the memory a chain of layers (paths, base
// first, one size) holds: a cheap copy of the base, then each layer's data
// extents over it in order, so every page holds the topmost layer's bytes.
// A chain of one is CopyFileCheaply. On an error `to` is removed.
Result<CopyReport> MergeLayers(const std::vector<std::string>& layers, const std::string& to);

// Copies the regular files of `from_dir` into `to_dir` (created), skipping
// the names `memory*`, sockets and "*.sock".
Status CopySnapshotDirectory(const std::string& from_dir, const std::string& to_dir);

}  // namespace uffdpager::lifecycle
