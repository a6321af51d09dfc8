// WorkingSetStore: the recorded working sets of snapshots, one file per cache
// key name under DATA/uffd/VERSION/working-sets/. A working set is the list
// of memory offsets a restore faulted, in first-touch order, written under
// its full CacheKey: one whose bytes' identity is not the key's (the file
// changed since it was recorded) is discarded, never replayed. Files are
// written atomically (temp file + rename) and carry a checksum, so a torn or
// corrupt one is ignored rather than trusted.
//
// Thread-safe: saves are serialized; loads read a file that is only ever
// replaced whole.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "pager/storage/cache_key.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct WorkingSet {
  uint64_t page_size = 4096;
  std::vector<uint64_t> offsets;  // memory offsets, first touch first
  // When the record was written (its file's mtime; set by Load): how old it
  // is, for the refine interval, and the seed of a refining replay's sample.
  std::chrono::system_clock::time_point saved_at;
};

class WorkingSetStore {
 public:
  explicit WorkingSetStore(std::string dir) : dir_(std::move(dir)) {}

  // The working set of `key` if one was recorded from the same bytes; a
  // stale or corrupt file is deleted.
  std::optional<WorkingSet> Load(const CacheKey& key);
  Status Save(const CacheKey& key, const WorkingSet& set) EXCLUDES(mu_);

  // Where `key`'s working set lives (by name: a newer identity replaces it),
  // and its compact copy (compact_working_set.h).
  std::string PathFor(const CacheKey& key) const;
  std::string CompactPathFor(const CacheKey& key) const;
  const std::string& dir() const { return dir_; }

 private:
  const std::string dir_;
  Mutex mu_;  // one writer at a time per pager
};

}  // namespace uffdpager
