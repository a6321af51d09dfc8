// FileDataExtents: where a file's data is, as the filesystem reports it
// (SEEK_DATA/SEEK_HOLE). A Diff snapshot is a sparse file whose data extents
// are the pages the VM dirtied, so this walk is what tells a layer's pages
// from "look below": the pager maps a layer's extents at open, the lifecycle
// copies only the extents when it merges a chain, and a published layer's
// page map (LayerPageMap) is made from them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

// [start, end) byte ranges, sorted and disjoint.
using DataExtents = std::vector<std::pair<uint64_t, uint64_t>>;

// The data extents of the open file `fd` below `size`; `what` names the
// file in errors. A filesystem without SEEK_DATA reports the whole file as
// one extent (data everywhere), which is never wrong, only slower.
Result<DataExtents> FileDataExtents(int fd, uint64_t size, const std::string& what);

}  // namespace uffdpager
