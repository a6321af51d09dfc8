// CompactWorkingSet: a recorded working set's pages stored one after the
// other, in replay order, in a file beside the record
// (DATA/uffd/VERSION/working-sets/<hash>.pages). A restore of a snapshot
// that is not in the page cache then reads its working set in a few large
// sequential reads instead of thousands of scattered ones.
//
// The file is bound to the bytes it copies: its header names the identity
// of the memory (CacheKey::identity, not the cache key's name: that is one
// host's word for the bytes, and a file made on one host serves another,
// see published_working_sets.h) and the hash of the record it was made
// from, and every block of kBlockPages pages carries its own XXH3 hash, so a
// file of another snapshot, of an older version of this one, of an older
// record, or damaged anywhere is never served: Open refuses a header that
// does not match, and BlockIntact a block that does not.
//
// The record hash is taken over the record's replay order, which is the
// file's own page list: so a file alone says which record it was made from,
// and that page list, saved as the record, is one the file matches.
//
// Layout: a header (magic, version, sizes, the identity, the record hash),
// the memory offset of every page, the block hashes, the header's own hash;
// padding to a 4 KiB boundary; then the pages.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/cache_key.h"
#include "uffdpager/status.h"

namespace uffdpager {

class CompactWorkingSet {
 public:
  // Pages per checksummed block: 1 MiB of 4 KiB pages, one large read.
  static constexpr uint64_t kBlockPages = 256;

  // The hash that binds a compact file to the record it was made from (of
  // ReplayOrder(first_touch), so a record and its replay order hash alike).
  static uint64_t RecordHash(uint64_t page_size, const std::vector<uint64_t>& first_touch);

  // Writes `path` (atomically: a temporary file renamed into place) with the
  // pages of `backing` at `replay_order`, in that order. *bytes is the
  // file's size. A failure (a full disk) leaves no file behind.
  // REQUIRES: replay_order is ReplayOrder(a record, kReplayWindowPages).
  static Status Write(const std::string& path, const CacheKey& key, uint64_t page_size,
                      const std::vector<uint64_t>& replay_order, const BackingChain& backing, uint64_t* bytes);

  // How a replay reads the blocks: straight from the disk (what a file
  // written long ago wants), or through the page cache (a file just written,
  // whose pages are still there).
  enum class Reads { kDirect, kBuffered };

  // Opens `path` and checks its header. kNotFound if there is none;
  // kInvalidArgument, saying why, if it copies other bytes than `key`'s
  // identity names, was made from another record than `record_hash` (when
  // given), or is damaged.
  static Result<CompactWorkingSet> Open(const std::string& path, const CacheKey& key,
                                        std::optional<uint64_t> record_hash, Reads reads = Reads::kDirect);

  int fd() const { return fd_.get(); }
  uint64_t page_size() const { return page_size_; }
  // Memory offsets of the pages, in file order.
  const std::vector<uint64_t>& offsets() const { return offsets_; }
  size_t blocks() const { return block_hashes_.size(); }
  // Where block `b` starts in the file, and how many pages it holds.
  uint64_t BlockOffset(size_t b) const { return data_offset_ + b * kBlockPages * page_size_; }
  uint64_t BlockPages(size_t b) const;
  // Whether `bytes` (block `b`, as read) are what was written.
  bool BlockIntact(size_t b, const uint8_t* bytes) const;
  // The block holding the page at memory offset `offset`, if the file has
  // it. Found in the page list's sorted windows (a replay order is sorted
  // kReplayWindowPages entries at a time; Open checked that it is one).
  std::optional<size_t> BlockOf(uint64_t offset) const;

 private:
  CompactWorkingSet() = default;

  UniqueFd fd_;
  uint64_t page_size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<uint64_t> offsets_;
  std::vector<uint64_t> block_hashes_;
};

// Entries of a working set sorted together: 32 MiB of 4 KiB pages.
inline constexpr size_t kReplayWindowPages = 8192;

// The order a working set is replayed in (and a compact file written in):
// first-touch order interleaves the vCPUs' streams and scatters neighbouring
// pages far apart, so each window of `window` entries is sorted by offset,
// which turns it back into long runs (one ioctl, one read each) while the
// window keeps early-touched pages early. Duplicates go.
std::vector<uint64_t> ReplayOrder(const std::vector<uint64_t>& first_touch, size_t window);

}  // namespace uffdpager
