// Standby: snapshot a live instance into memory it owns, then stop its VMM.
//
// Where the memory goes decides whether anyone else can be hurt, and what
// the standby costs:
//  - In place (a Diff into the instance's own blob) only when its snapshot
//    is that one blob, it created it, its VMM maps exactly that file, and no
//    other instance or pager session reads it
//    (MemoryOwnership::MayWriteInPlace).
//  - Otherwise, with the uffd backend, a new layer: the Diff (only the pages
//    dirtied since the chain the VMM's memory came from) goes into a new,
//    empty blob, which stays sparse, and the snapshot's memory is that chain
//    plus the new blob (MayAddLayer). Its cost is what the VM changed; no
//    byte of the chain below is read or written. Such a snapshot is
//    restored through the pager.
//  - Where a layer may not be added (the file backend, or the chain is at
//    the data directory's max_layers), a merged base: the new blob starts as
//    the chain's bytes merged (a reflink or sparse copy of the base, the
//    layers over it) and the Diff is merged into it; a chain of one again.
//  - A Full snapshot (fresh boot, or the dirty log was reset by a Full
//    snapshot taken for a fork) always goes into a new blob, a chain of one.
// The commit is one metadata write naming the new state file and chain.
// Only then is the VMM stopped and its pager session closed, so a crash
// before it leaves a live VM and the previous snapshot untouched (except
// after an interrupted in-place Diff, whose blob is then no longer trusted);
// a new blob nobody names is collected.
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"
#include "lifecycle/snapshot_copy.h"

namespace uffdpager::lifecycle {

bool MayAddLayer(const Context& c, const InstanceMetadata& m) {
  return c.config.backend == MemoryBackend::kUffd && m.HasDiffBase() &&
         m.vmm->backing_layers.size() < c.config.max_layers;
}

Status StandbyInstance(Context& c, InstanceMetadata m) {
  if ((m.state != InstanceState::kRunning && m.state != InstanceState::kPaused) || !m.vmm) {
    return Status::Conflict("instance " + m.name + " is " + InstanceStateName(m.state) + ", not running");
  }
  const VmmRecord vmm = *m.vmm;
  if (!vmm.process.IsAlive()) {
    return Status::Unavailable("the VMM of " + m.name + " (pid " + std::to_string(vmm.process.pid) +
                               ") is gone; nothing to snapshot (stop or delete it)");
  }
  auto in_place = m.needs_full_snapshot ? Result<bool>(false) : c.memory.MayWriteInPlace(m);
  if (!in_place.ok()) return in_place.status();
  const SnapshotKind kind = m.needs_full_snapshot ? SnapshotKind::kFull : SnapshotKind::kDiff;
  const bool layered = !*in_place && MayAddLayer(c, m);
  const std::string blob = *in_place ? m.snapshot->top() : c.store.NewBlobId();
  LayerChain chain = {blob};
  if (layered) {
    chain = vmm.backing_layers;
    chain.push_back(blob);
  }
  if (!*in_place && !layered && kind == SnapshotKind::kDiff && HasObjectLayer(vmm.backing_layers)) {
    // The Diff would go over a merged copy of the chain, and a layer in
    // object storage is not merged here: refused before the VM is touched.
    return Status::Conflict("standby " + m.name + ": its memory came from a chain with a layer in object storage (" +
                            vmm.backing_layers.front() + "), which is not merged here, and a new layer may not " +
                            "be added (" + std::to_string(vmm.backing_layers.size()) + " layers, max_layers " +
                            std::to_string(c.config.max_layers) + ", " + MemoryBackendName(c.config.backend) +
                            " backend); stop it, or raise max_layers (snapctl init --max-layers)");
  }
  const std::string state_file = InstanceStore::NewStateFileName();
  const bool was_running = m.state == InstanceState::kRunning;

  JournalEntry e{"standby",
                 m.name,
                 {{"in_place", *in_place},
                  {"layered", layered},
                  {"blob", blob},
                  {"state_file", state_file},
                  {"was_running", was_running},
                  {"vmm", JournalProcess(vmm.process)},
                  {"pager_session", vmm.pager_session}}};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  FirecrackerDriver driver(vmm.api_socket);
  auto undo = [&](const Status& why, bool blob_suspect) {
    if (!*in_place) ::unlink(c.store.BlobPath(blob).c_str());
    ::unlink(c.store.StateFilePath(m.name, state_file).c_str());
    // Taking a snapshot reads and clears the VMM's dirty log, so after an
    // attempt that did not commit the log is no base for a Diff any more.
    // And a failed in-place write may have changed some pages of the blob:
    // that snapshot is gone.
    if (blob_suspect) m.snapshot.reset();
    m.needs_full_snapshot = true;
    (void)c.store.Save(m);
    if (was_running) (void)driver.Resume();
    (void)c.journal.Finish(m.name);
    return why.WithContext("standby " + m.name);
  };
  if (was_running) {
    c.Step("pausing " + m.name);
    if (Status st = driver.Pause(); !st.ok()) return undo(st, false);
  }
  CrashPoint("standby.after_pause");
  if (!*in_place && !layered && kind == SnapshotKind::kDiff) {
    c.Step("merging the " + std::to_string(vmm.backing_layers.size()) + " layer(s) " + m.name +
           " was restored from into a new memory file");
    auto copied = MergeLayers(c.store.BlobPaths(vmm.backing_layers), c.store.BlobPath(blob));
    if (!copied.ok()) return undo(copied.status(), false);
    spdlog::info("standby {}: new memory blob {} ({}, {} bytes copied) from {} layer(s) topped by {}", m.name, blob,
                 copied->reflinked ? "reflink" : "sparse copy", copied->bytes_copied, vmm.backing_layers.size(),
                 vmm.backing_layers.back());
  }
  CrashPoint("standby.after_copy");
  c.Step(std::string("writing a ") + (kind == SnapshotKind::kDiff ? "Diff" : "Full") + " snapshot of " + m.name + " (" +
         std::to_string(m.mem_size_mib) + " MiB)");
  if (Status st = driver.CreateSnapshot(kind, c.store.StateFilePath(m.name, state_file), c.store.BlobPath(blob));
      !st.ok()) {
    return undo(st, *in_place);
  }
  CrashPoint("standby.after_snapshot");

  const std::string old_state_file = m.snapshot ? m.snapshot->state_file : "";
  m.snapshot = SnapshotRecord{state_file, chain, true};
  m.vmm.reset();
  m.state = InstanceState::kStandby;
  m.one_shot_uffd = false;
  m.needs_full_snapshot = true;  // no VMM, no dirty log
  if (Status st = c.store.Save(m); !st.ok()) return undo(st, *in_place);
  CrashPoint("standby.after_commit");

  // The snapshot is durable: the VM may go, and with it the session that
  // served its memory.
  c.Step("stopping the VMM of " + m.name);
  Status ended = c.EndVmm(vmm);
  if (!old_state_file.empty() && old_state_file != state_file) {
    ::unlink(c.store.StateFilePath(m.name, old_state_file).c_str());
  }
  spdlog::info("standby {}: {} snapshot into {} blob {} (a chain of {})", m.name,
               kind == SnapshotKind::kDiff ? "Diff" : "Full",
               *in_place ? "its own" : (layered ? "a new layer," : "new"), blob, chain.size());
  UFFD_RETURN_IF_ERROR(ended);
  return c.journal.Finish(m.name);
}

Status RecoverStandby(Context& c, const JournalEntry& e) {
  JsonFields data(e.data, "data");
  std::string state_file;
  bool in_place = false;
  bool was_running = false;
  VmmRecord vmm;
  UFFD_RETURN_IF_ERROR(data.ReadOptional("state_file", &state_file));
  UFFD_RETURN_IF_ERROR(data.ReadOptional("in_place", &in_place));
  UFFD_RETURN_IF_ERROR(data.ReadOptional("was_running", &was_running));
  UFFD_RETURN_IF_ERROR(data.ReadOptional("pager_session", &vmm.pager_session));
  auto journaled = JournaledProcess(e, "vmm");
  if (!journaled.ok()) return journaled.status();
  vmm.process = *journaled;
  auto m = c.store.Load(e.instance);
  if (!m.ok()) return c.journal.Finish(e.instance);  // the instance is gone
  if (m->snapshot && m->snapshot->state_file == state_file) {
    // Committed: finish the tail.
    UFFD_RETURN_IF_ERROR(c.EndVmm(vmm));
    return c.journal.Finish(e.instance);
  }
  spdlog::warn("rolling back the interrupted standby of {}", e.instance);
  ::unlink(c.store.StateFilePath(e.instance, state_file).c_str());
  bool alive = vmm.process.IsAlive();
  // The snapshot may have been taken, clearing the dirty log: only a Full
  // one is safe next. An in-place write may have reached the blob.
  m->needs_full_snapshot = true;
  if (in_place) m->snapshot.reset();
  if (!alive) {
    // The VM died with the command: what is left is the last snapshot.
    (void)c.pager.CloseSession(vmm.pager_session);
    m->vmm.reset();
    m->state = InstanceState::kStopped;
    m->needs_full_snapshot = true;
  } else if (was_running) {
    (void)FirecrackerDriver(m->vmm ? m->vmm->api_socket : c.store.ApiSocketPath(e.instance)).Resume();
  }
  UFFD_RETURN_IF_ERROR(c.store.Save(*m));
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
