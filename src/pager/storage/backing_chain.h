// BackingChain: the bytes a session serves, as one or more layers of one
// size, base first. A single memory file is a chain of one layer.
//
// A layer above the base is a Diff snapshot: a sparse file of the memory's
// size whose data extents are the pages the VM dirtied (a dirtied page of
// zeros is data, not a hole). So each byte comes from the topmost layer whose
// data holds it, and a byte no layer holds is zero (a hole of the base). The
// chain never merges its layers: it keeps one map of which layer holds which
// range (built once, at open, from each layer's extents) and reads every
// piece from its own layer.
//
// Pages are cached per layer (PageLayer), so a lower layer that many chains
// share is read once for all of them; only a page whose bytes come from
// more than one layer is cached as the chain's own.
//
// Immutable once created: any thread may read it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pager/storage/backing_file.h"
#include "uffdpager/status.h"

namespace uffdpager {

class BackingChain {
 public:
  // The most layers a chain may have: a deeper chain is to be merged into a
  // new base before it is served (each fault may look at every layer's map
  // once, and each layer holds an open file).
  static constexpr size_t kMaxLayers = 16;
  // PageLayer's answer for a page whose bytes come from more than one layer.
  static constexpr size_t kMixedLayers = std::numeric_limits<size_t>::max();

  // The chain of `layers`, base first. More than kMaxLayers layers, or a
  // layer whose size is not the base's, is kInvalidArgument naming the layer.
  // REQUIRES: layers is not empty, and holds no null.
  static Result<std::shared_ptr<const BackingChain>> Create(std::vector<std::shared_ptr<BackingFile>> layers);
  // A chain of one layer: the file as it is.
  static std::shared_ptr<const BackingChain> Single(std::shared_ptr<BackingFile> file);

  size_t depth() const { return layers_.size(); }
  const BackingFile& layer(size_t i) const { return *layers_[i]; }
  const std::shared_ptr<BackingFile>& shared_layer(size_t i) const { return layers_[i]; }
  uint64_t size() const { return layers_[0]->size(); }

  // What the bytes are, for cache keys and session records: a single file's
  // own identity (so a chain of one is that file everywhere), else every
  // layer's, base first.
  std::string IdentityText() const;
  // What messages call it: the file's path, or "the chain of N layers topped
  // by TOP".
  std::string Name() const;

  // Which layer the bytes of [offset, offset+length) come from as a whole:
  // the one layer whose data covers the range, or the base where the range
  // holds only the base's data and holes (the base read alone gives the
  // same bytes there); kMixedLayers otherwise.
  size_t PageLayer(uint64_t offset, uint64_t length) const;

  // Calls fn(start, end, layer) for each piece of [offset, offset+length)
  // some layer's data holds, in order, with the index of the topmost such
  // layer. What lies between pieces is zeros.
  template <typename Fn>
  void ForEachDataPiece(uint64_t offset, uint64_t length, Fn&& fn) const;

  // Makes [offset, offset+length) present in every layer filled on demand
  // (an object's local copy) that the range reads. OK at once for files.
  Status EnsureRange(uint64_t offset, uint64_t length) const;

  // Fills `buffer` with [offset, offset+length) of the chain: each piece read
  // from its layer, zeros between. Adds the bytes really read to *bytes_read.
  Status ReadRange(uint64_t offset, void* buffer, size_t length, uint64_t* bytes_read) const;

 private:
  // A range of the memory held by one layer's data; the chain's map is
  // these, sorted and disjoint.
  struct Segment {
    uint64_t start = 0;
    uint64_t end = 0;
    size_t layer = 0;
  };

  explicit BackingChain(std::vector<std::shared_ptr<BackingFile>> layers);
  // Builds segments_ from the layers' extents, topmost first.
  void MapLayers();

  std::vector<std::shared_ptr<BackingFile>> layers_;
  std::vector<Segment> segments_;
};

template <typename Fn>
void BackingChain::ForEachDataPiece(uint64_t offset, uint64_t length, Fn&& fn) const {
  const uint64_t end = offset + length;
  // The first segment ending after `offset`.
  auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                             [](uint64_t off, const Segment& s) { return off < s.end; });
  for (; it != segments_.end() && it->start < end; ++it) {
    fn(std::max(it->start, offset), std::min(it->end, end), it->layer);
  }
}

}  // namespace uffdpager
