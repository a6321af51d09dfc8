// MemoryOwnership: who may read and who may write each memory blob.
//
// There is no reference count stored anywhere: a blob is referenced by every
// instance whose metadata names it (as any layer of its snapshot's memory or
// of the chain its live VMM was restored from), and by every compaction in
// flight (the chain it merges and the new base it writes). Counting
// from the metadata each time means a crash can never leave a count wrong:
// after recovery, a blob no one names is garbage, and a blob someone names is
// never removed — deleting a source whose forks still read its bytes keeps
// them alive.
#pragma once

#include <set>
#include <string>

#include "lifecycle/compaction_records.h"
#include "lifecycle/instance_store.h"

namespace uffdpager::lifecycle {

class MemoryOwnership {
 public:
  MemoryOwnership(const InstanceStore& store, const CompactionRecords& compactions)
      : store_(store), compactions_(compactions) {}

  // Every blob named by any instance's metadata or any compaction record;
  // an error if one of them cannot be read (it might name any blob).
  Result<std::set<std::string>> ReferencedBlobs() const;
  // Instances other than `except` that read `blob` (snapshot or live VMM),
  // including every instance whose metadata cannot be read.
  Result<std::set<std::string>> Readers(const std::string& blob, const std::string& except) const;
  // May `metadata`'s instance write a Diff into its snapshot's blob? Only if
  // its snapshot is one blob (no layers) that it created, its VMM mapped
  // that very file, no other instance (nor a pager session of another)
  // reads it, and no compaction in flight reads it.
  Result<bool> MayWriteInPlace(const InstanceMetadata& metadata) const;
  // Removes blobs that nothing references, keeping `also_live`.
  Status CollectGarbage(const std::set<std::string>& also_live) const;

 private:
  const InstanceStore& store_;
  const CompactionRecords& compactions_;
};

}  // namespace uffdpager::lifecycle
