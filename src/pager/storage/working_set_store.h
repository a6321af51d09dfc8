// WorkingSetStore: the recorded working sets of snapshots, one file per cache
// key under DATA/uffd/VERSION/records/. A record is the list of memory-file
// offsets a restore faulted, in first-touch order. It is bound to the backing
// file's identity: a record for a file that has since changed is discarded,
// never replayed. Files are written atomically (temp file + rename) and carry
// a checksum, so a torn or corrupt record is ignored rather than trusted.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pager/storage/backing_file.h"
#include "uffdpager/status.h"

namespace uffdpager {

struct WorkingSet {
  uint64_t page_size = 4096;
  std::vector<uint64_t> offsets;  // memory-file offsets, first touch first
};

class WorkingSetStore {
 public:
  explicit WorkingSetStore(std::string dir) : dir_(std::move(dir)) {}

  // The record for `cache_key` if one exists and was made from a file with
  // this identity; a stale or corrupt record is deleted.
  std::optional<WorkingSet> Load(const std::string& cache_key, const FileIdentity& identity);
  Status Save(const std::string& cache_key, const FileIdentity& identity, const WorkingSet& set);

  std::string PathFor(const std::string& cache_key) const;

 private:
  std::string dir_;
  std::mutex mu_;  // one writer at a time per pager
};

}  // namespace uffdpager
