// Fork: a new instance from a source's memory.
//
// From a standby snapshot (the hot path): the fork's folder is built in a
// staging folder — the snapshot folder copied without its memory, metadata
// that names the blobs really holding the bytes — and renamed into place
// (the commit). With the uffd backend no memory is copied at all: the fork
// records its source's chain of layers (for a fork of an unmaterialized
// fork, that is already the owners' blobs) and arms one-shot UFFD, so its
// first restore is served lazily by the pager. With the file backend the
// fork gets its own merged copy (a reflink of a one-blob chain where the
// filesystem has them).
//
// From a running source: the source is paused, its memory is written, and
// it is resumed. While the source's dirty log counts from the chain its
// memory came from (InstanceMetadata::HasDiffBase), that is a Diff — only
// what the source changed, never a page pulled through the pager — into a
// new blob: a new layer over that chain with the uffd backend while the
// chain has room (MayAddLayer), else a merged copy of the chain (made
// before the pause). The fork's chain is the source's plus the new layer,
// or the merged blob alone, and once the fork is committed the source's VMM
// is rebased onto that same chain (its dirty log, which the Diff read and
// cleared, now counts from there), so its next standby goes on top. A
// source without such a base (a fresh boot, or a log already reset) gets a
// Full snapshot into a new blob the fork owns. Either snapshot resets the
// source's dirty log, so the source's next standby must be Full until the
// rebase is recorded; that is recorded before the snapshot is taken, and a
// crash between the commit and the rebase is finished by recovery.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/durable_file.h"
#include "common/json_fields.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"
#include "lifecycle/snapshot_copy.h"

namespace uffdpager::lifecycle {

namespace {

InstanceState StateAtRest(ForkTarget target) {
  return target == ForkTarget::kStopped ? InstanceState::kStopped : InstanceState::kStandby;
}

InstanceMetadata NewFork(const InstanceMetadata& source, const std::string& name, ForkTarget target) {
  InstanceMetadata f;
  f.name = name;
  f.state = StateAtRest(target);
  f.vcpu_count = source.vcpu_count;
  f.mem_size_mib = source.mem_size_mib;
  f.forked_from = source.name;
  f.needs_full_snapshot = true;
  return f;
}

Status ForkFromSnapshot(Context& c, const InstanceMetadata& source, const std::string& name, ForkTarget target,
                        JournalEntry& e) {
  const std::string staging = c.store.StagingDir(name);
  c.Step("copying the snapshot folder of " + source.name);
  UFFD_RETURN_IF_ERROR(CopySnapshotDirectory(c.store.SnapshotDir(source.name), staging + "/snapshot"));
  CrashPoint("fork.after_copy_dir");
  InstanceMetadata f = NewFork(source, name, target);
  if (c.config.backend == MemoryBackend::kUffd) {
    // The bytes stay where they are; the fork only names them.
    f.snapshot = SnapshotRecord{source.snapshot->state_file, source.snapshot->memory_layers, false};
    f.one_shot_uffd = true;
  } else {
    std::string blob = c.store.NewBlobId();
    e.data["blob"] = blob;
    UFFD_RETURN_IF_ERROR(c.journal.Record(e));
    c.Step("copying the memory of " + source.name + " (" + std::to_string(source.mem_size_mib) + " MiB)");
    auto copied = MergeLayers(c.store.BlobPaths(source.snapshot->memory_layers), c.store.BlobPath(blob));
    if (!copied.ok()) return copied.status();
    CrashPoint("fork.after_copy_memory");
    f.snapshot = SnapshotRecord{source.snapshot->state_file, {blob}, true};
  }
  return c.store.SaveInto(staging, f);
}

Status ForkFromRunning(Context& c, InstanceMetadata source, const std::string& name, ForkTarget target,
                       JournalEntry& e) {
  const std::string staging = c.store.StagingDir(name);
  const std::string blob = c.store.NewBlobId();
  const std::string state_file = InstanceStore::NewStateFileName();
  const bool was_running = source.state == InstanceState::kRunning;
  // A Diff whenever the source's dirty log counts from a known chain: into
  // a new layer over it while there is room, else over a merged copy of it.
  const bool diff = source.HasDiffBase();
  const bool layered = MayAddLayer(c, source);
  LayerChain chain = {blob};
  if (layered) {
    chain = source.vmm->backing_layers;
    chain.push_back(blob);
  }
  if (diff) {
    // What the source is rebased onto once the fork is committed.
    e.data["source_chain"] = chain;
    e.data["source_vmm"] = JournalProcess(source.vmm->process);
  }
  e.data["blob"] = blob;
  e.data["source_paused"] = was_running;
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  std::error_code ec;
  std::filesystem::create_directories(staging + "/snapshot", ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + staging);
  if (diff && !layered) {
    // The chain's bytes never change: merged before the pause, so the
    // source is paused only for the Diff.
    c.Step("merging the " + std::to_string(source.vmm->backing_layers.size()) + " layer(s) under " + source.name);
    auto merged = MergeLayers(c.store.BlobPaths(source.vmm->backing_layers), c.store.BlobPath(blob));
    if (!merged.ok()) return merged.status();
    CrashPoint("fork.after_merge");
  }
  if (!source.needs_full_snapshot) {
    source.needs_full_snapshot = true;
    UFFD_RETURN_IF_ERROR(c.store.Save(source));
  }
  FirecrackerDriver driver(source.vmm->api_socket);
  if (was_running) {
    c.Step("pausing " + source.name);
    UFFD_RETURN_IF_ERROR(driver.Pause());
  }
  CrashPoint("fork.after_pause_source");
  const SnapshotKind kind = diff ? SnapshotKind::kDiff : SnapshotKind::kFull;
  c.Step(std::string(diff ? "writing a Diff snapshot of " : "writing a Full snapshot of ") + source.name + " (" +
         std::to_string(source.mem_size_mib) + " MiB)");
  Status snap = driver.CreateSnapshot(kind, staging + "/snapshot/" + state_file, c.store.BlobPath(blob));
  if (snap.ok()) CrashPoint("fork.before_resume_source");
  if (was_running) c.Step("resuming " + source.name);
  Status resumed = was_running ? driver.Resume() : Status::Ok();
  UFFD_RETURN_IF_ERROR(snap);
  UFFD_RETURN_IF_ERROR(resumed);
  CrashPoint("fork.after_snapshot");
  InstanceMetadata f = NewFork(source, name, target);
  // After a Diff the new blob is the source's base too (it is rebased onto
  // it): only a Full blob is the fork's own.
  f.snapshot = SnapshotRecord{state_file, chain, !diff};
  return c.store.SaveInto(staging, f);
}

// After a committed fork that wrote a Diff of its running source: the
// source's VMM now counts its dirty log from the fork's chain. Only the VMM
// that took the snapshot is rebased (the journal names it); any other (the
// source was stopped, or restored anew) keeps what its metadata says.
Status RebaseSource(Context& c, const JournalEntry& e) {
  JsonFields data(e.data, "data");
  LayerChain chain;
  UFFD_RETURN_IF_ERROR(data.ReadOptional("source_chain", &chain));
  if (chain.empty()) return Status::Ok();  // a Full snapshot: nothing to rebase onto
  std::string source_name;
  UFFD_RETURN_IF_ERROR(data.Read("source", &source_name));
  auto vmm = JournaledProcess(e, "source_vmm");
  if (!vmm.ok()) return vmm.status();
  auto source = c.store.Load(source_name);
  if (!source.ok()) return source.status().code() == ErrorCode::kNotFound ? Status::Ok() : source.status();
  if (!source->vmm || !(source->vmm->process == *vmm) || vmm->pid == 0) return Status::Ok();
  source->vmm->backing_layers = chain;
  source->needs_full_snapshot = false;
  UFFD_RETURN_IF_ERROR(c.store.Save(*source));
  CrashPoint("fork.after_rebase_source");
  return Status::Ok();
}

}  // namespace

Status ForkInstance(Context& c, const std::string& source_name, const std::string& name, ForkTarget target,
                    const RestoreOptions& restore) {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  if (c.store.Exists(name)) return Status::Error(ErrorCode::kAlreadyExists, "instance " + name + " exists");
  auto source = c.store.Load(source_name);
  if (!source.ok()) return source.status();
  const bool live = (source->state == InstanceState::kRunning || source->state == InstanceState::kPaused) &&
                    source->vmm && source->vmm->process.IsAlive();
  const bool at_rest = (source->state == InstanceState::kStandby || source->state == InstanceState::kStopped) &&
                       source->snapshot.has_value();
  if (!live && !at_rest) {
    return Status::Conflict("cannot fork " + source_name + ": it is " + InstanceStateName(source->state) +
                            (source->snapshot ? "" : " without a snapshot") +
                            (source->vmm ? " and its VMM is gone" : ""));
  }
  if (target == ForkTarget::kRunning) {
    // What the restore will need, checked before anything is made: a fork
    // that cannot run is no use to the caller.
    UFFD_RETURN_IF_ERROR(CheckVmmBinary(c.config.vmm_binary).WithContext("fork " + source_name + " -> " + name));
    if (!live && c.config.backend == MemoryBackend::kUffd) {
      c.Step("checking the pager");
      UFFD_RETURN_IF_ERROR(c.pager.EnsureRunning().WithContext("fork " + source_name + " -> " + name));
    }
  }

  JournalEntry e{"fork", name, {{"source", source_name}, {"staging", c.store.StagingDir(name)}}};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  Status built = live ? ForkFromRunning(c, *source, name, target, e) : ForkFromSnapshot(c, *source, name, target, e);
  if (built.ok()) {
    CrashPoint("fork.before_commit");
    built = RenameDurably(c.store.StagingDir(name), c.store.InstanceDir(name));
  }
  if (!built.ok()) {
    (void)RecoverFork(c, e);  // undo now: drop the staging folder and any copy, resume the source
    return built.WithContext("fork " + source_name + " -> " + name);
  }
  CrashPoint("fork.after_commit");
  UFFD_RETURN_IF_ERROR(RebaseSource(c, e).WithContext("fork " + source_name + " -> " + name));
  UFFD_RETURN_IF_ERROR(c.journal.Finish(name));
  spdlog::info("forked {} from {} ({})", name, source_name,
               !live                             ? "standby snapshot"
               : e.data.contains("source_chain") ? "running source, Diff snapshot"
                                                 : "running source, Full snapshot");
  if (target != ForkTarget::kRunning) return Status::Ok();
  auto fork = c.store.Load(name);
  Status restored = fork.ok() ? RestoreInstance(c, *fork, restore) : fork.status();
  if (!restored.ok()) {
    // A fork asked to run that does not run is removed again (its memory
    // goes with the collection after the command), so the command can be
    // repeated as it was.
    Status removed = c.store.Remove(name);
    return restored.WithContext(
        "fork " + source_name + " -> " + name +
        (removed.ok() ? " (the fork was removed)" : " (removing the fork failed too: " + removed.ToString() + ")"));
  }
  return Status::Ok();
}

Status RecoverFork(Context& c, const JournalEntry& e) {
  JsonFields data(e.data, "data");
  std::string blob;
  std::string source_name;
  bool source_paused = false;
  UFFD_RETURN_IF_ERROR(data.ReadOptional("blob", &blob));
  UFFD_RETURN_IF_ERROR(data.ReadOptional("source", &source_name));
  UFFD_RETURN_IF_ERROR(data.ReadOptional("source_paused", &source_paused));
  if (!c.store.Exists(e.instance)) {
    spdlog::warn("rolling back the interrupted fork {}", e.instance);
    std::error_code ec;
    std::filesystem::remove_all(c.store.StagingDir(e.instance), ec);
    if (!blob.empty()) ::unlink(c.store.BlobPath(blob).c_str());
  } else {
    // Committed: finish the tail.
    UFFD_RETURN_IF_ERROR(RebaseSource(c, e));
  }
  // A source paused for the snapshot must not stay paused.
  if (source_paused) {
    auto source = c.store.Load(source_name);
    if (source.ok() && source->state == InstanceState::kRunning && source->vmm && source->vmm->process.IsAlive()) {
      (void)FirecrackerDriver(source->vmm->api_socket).Resume();
    }
  }
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
