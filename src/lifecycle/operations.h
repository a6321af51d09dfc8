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
