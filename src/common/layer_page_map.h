// LayerPageMap: which ranges of a memory layer hold data, written beside a
// layer that is kept where files have no holes (an object in S3-compatible
// storage). A Diff layer on disk is a sparse file whose data extents are
// the pages the VM dirtied; uploaded, its holes become zeros that cannot be
// told from a dirtied page of zeros. The page map keeps that distinction:
// for a layer that has one it is authoritative, and a range outside it is
// "not in this layer" (zeros in a layer read alone, the layer below in a
// chain). A layer without a page map holds every byte.
//
// The object "s3://BUCKET/KEY" has its page map at "s3://BUCKET/KEY.pagemap",
// a JSON document:
//   {"format": "uffdpager-layer-page-map", "version": 1,
//    "layer_etag": "\"…\"", "layer_size": N, "extents": [[start, end], …]}
// `layer_etag` is the ETag of the layer's version it describes, so a map
// left beside a replaced layer is refused instead of believed. Extents are
// [start, end) byte ranges, sorted, disjoint, non-empty, within layer_size.
//
// Writers (tests, publishing tools) make one from a local layer's extents
// (FileDataExtents) and the layer's ETag after its upload.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/file_extents.h"
#include "common/object_url.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct LayerPageMap {
  // The largest page map read: a 16 GiB layer of single scattered pages
  // fits; anything larger is refused rather than held in memory.
  static constexpr uint64_t kMaxEncodedBytes = 256ULL << 20;

  std::string layer_etag;
  uint64_t layer_size = 0;
  DataExtents extents;  // sorted, disjoint [start, end)

  // Where the page map of `layer` lives: the key with ".pagemap" added.
  static ObjectUrl LocationOf(const ObjectUrl& layer);

  std::string Encode() const;
  // kInvalidArgument naming what is wrong: not JSON, another format or
  // version, a missing field, or extents unsorted, overlapping, empty or
  // past layer_size.
  static Result<LayerPageMap> Parse(std::string_view text);
};

}  // namespace uffdpager
