// CompactionRecords: the compactions in flight, one durable record each in
// DATA/compactions/BLOB.json, named after the new base it writes.
//
// A compaction merges a chain of layers into a new base while no lock is
// held (restores, standbys and forks of the same instances go on meanwhile),
// so it cannot be a journal record: the journal allows one operation per
// instance and is replayed by the next command, which would take a running
// compaction for a crashed one. A record instead names the process that
// compacts (ProcessIdentity: a reused pid is never taken for it); the
// recovery every command begins with (under the data directory's lock)
// finishes or drops only the records whose compactor is gone. While a
// record exists, its chain and its new blob count as referenced
// (MemoryOwnership): no collection removes what the compactor reads or
// writes.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/process_identity.h"
#include "lifecycle/instance_metadata.h"
#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

struct CompactionRecord {
  std::string blob;                    // the new base being written (DATA/blobs/BLOB)
  LayerChain chain;                    // the layers merged into it, base first
  std::vector<std::string> instances;  // whose snapshot was `chain` when the compaction began
  ProcessIdentity compactor;           // the process doing it
  // `blob` is complete and durable: from here on, the commit may be
  // finished by anyone (the recovery, after a crash).
  bool merged = false;
};

// What DATA/compactions/ holds: the records that could be read, and the
// files that could not (a symlink, not JSON, another blob's record).
struct PendingCompactions {
  std::vector<CompactionRecord> records;     // by blob
  std::map<std::string, Status> unreadable;  // file name -> why
};

class CompactionRecords {
 public:
  explicit CompactionRecords(std::string dir) : dir_(std::move(dir)) {}

  // Writes (or rewrites) the record of `record.blob`, durably.
  Status Record(const CompactionRecord& record) const;
  Status Finish(const std::string& blob) const;
  // Fails only if the folder cannot be listed. Other files in it (the
  // compactor's log) are not records and are left alone.
  Result<PendingCompactions> Pending() const;

 private:
  std::string PathOf(const std::string& blob) const { return dir_ + "/" + blob + ".json"; }
  std::string dir_;
};

}  // namespace uffdpager::lifecycle
