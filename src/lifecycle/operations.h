// The lifecycle's operations, each in its own file, and their recovery from
// a journal record a crash left behind.
#pragma once

#include "lifecycle/lifecycle_context.h"

namespace uffdpager::lifecycle {

using Context = Lifecycle::Context;

// restore_operation.cc
Status RestoreInstance(Context& c, InstanceMetadata m, const RestoreOptions& options);
Status RecoverRestore(Context& c, const JournalEntry& e);
// standby_operation.cc
Status StandbyInstance(Context& c, InstanceMetadata m);
// May a Diff of `m`'s live VMM go into a new layer over the chain its memory
// came from? With the uffd backend (a chain is restored through the pager),
// a dirty log that counts from that chain, and room under max_layers.
bool MayAddLayer(const Context& c, const InstanceMetadata& m);
Status RecoverStandby(Context& c, const JournalEntry& e);
// fork_operation.cc
Status ForkInstance(Context& c, const std::string& source, const std::string& name, ForkTarget target,
                    const RestoreOptions& restore);
Status RecoverFork(Context& c, const JournalEntry& e);
// create_operation.cc
Status CreateInstance(Context& c, const std::string& name, const BootConfig& boot);
Status RecoverCreate(Context& c, const JournalEntry& e);
// pause_operation.cc: Running <-> Paused
Status SetPaused(Context& c, InstanceMetadata m, bool paused);
// compact_operation.cc: a chain merged into a new base, in three steps
// (plan and commit under the lock, the merge without it).
// REQUIRES the lock: the chains of `names` (none: every chain deeper than
// compact_depth) not being compacted already, each with its record written.
Result<std::vector<CompactionRecord>> PlanCompactions(Context& c, const std::vector<std::string>& names);
// Without the lock: merges the chain into the record's blob, then records
// it merged.
Status MergeCompaction(Context& c, CompactionRecord& record);
// REQUIRES the lock: moves every usable instance whose snapshot is still
// exactly the record's chain onto its blob, if merged; returns their names.
// The record stays (the caller finishes it).
Result<std::vector<std::string>> CommitCompaction(Context& c, const CompactionRecord& record);
// REQUIRES the lock (the recovery): the records whose compactor is gone are
// finished if merged, else dropped with their blob.
void RecoverCompactions(Context& c);
// After a command, without the lock: starts the background compactor if
// `name`'s chain is deeper than compact_depth.
void StartBackgroundCompaction(const Context& c, const std::string& name);
// publish_operation.cc: a snapshot through a bucket to another host.
// Uploads `m`'s snapshot (Standby or Stopped) under `destination`
// (s3://BUCKET/PREFIX) and writes its manifest last.
Result<PublishedSnapshot> PublishInstance(Context& c, const InstanceMetadata& m, const std::string& destination);
// A new Standby instance `name` from the manifest at `manifest_url`, its
// memory the manifest's layer objects (each checked against its ETag).
Status ImportInstance(Context& c, const std::string& name, const std::string& manifest_url);
Status RecoverImport(Context& c, const JournalEntry& e);
// instance_probe.cc
InstanceStatus ProbeInstance(Context& c, const InstanceMetadata& m);
// The metadata as list/show report it, plus "chain_depth" (the layers of
// the snapshot's memory) and "depends_on_pager" (its live VM is served by
// the pager, or its next restore must be).
nlohmann::json StatusDetails(const InstanceMetadata& m);

// The process identity a journal record names under `key` (pid 0 if none).
Result<ProcessIdentity> JournaledProcess(const JournalEntry& e, const char* key);
nlohmann::json JournalProcess(const ProcessIdentity& p);

}  // namespace uffdpager::lifecycle
