// Restore: a VMM from the instance's snapshot.
//
// One-shot UFFD: a fork that has not yet run restores through a pager
// session over the blob that really holds its bytes (its source's). The
// session exists before PUT /snapshot/load, since the VMM connects to it
// during the load. The flag is cleared in the same metadata write that
// records the running VMM, so only a successful restore clears it; a failed
// one closes the session and leaves the instance exactly as it was. A
// snapshot whose memory is a chain of layers is always restored through a
// pager session over the chain (`backing_layers`): no file mapping can stack
// layers. Every other restore maps the blob with Firecracker's File backend
// (MAP_PRIVATE: the file is read, never written, by running the VM).
#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"

namespace uffdpager::lifecycle {

Result<ProcessIdentity> JournaledProcess(const JournalEntry& e, const char* key) {
  std::optional<nlohmann::json> recorded;
  UFFD_RETURN_IF_ERROR(JsonFields(e.data, "data").ReadOptional(key, &recorded));
  ProcessIdentity p;
  if (!recorded) return p;
  JsonFields fields(*recorded, std::string("data.") + key);
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pid", &p.pid));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("start_time", &p.start_time));
  return p;
}

nlohmann::json JournalProcess(const ProcessIdentity& p) { return {{"pid", p.pid}, {"start_time", p.start_time}}; }

Status RestoreInstance(Context& c, InstanceMetadata m, const RestoreOptions& options) {
  const bool resume = options.resume;
  if (m.state != InstanceState::kStandby && m.state != InstanceState::kStopped) {
    return Status::Conflict("instance " + m.name + " is " + InstanceStateName(m.state) +
                            "; only Standby or Stopped "
                            "instances are restored");
  }
  if (!m.snapshot) return Status::Conflict("instance " + m.name + " has no snapshot to restore");
  const bool uffd = m.RestoreNeedsPager();
  const LayerChain& layers = m.snapshot->memory_layers;
  const std::string state_path = c.store.StateFilePath(m.name, m.snapshot->state_file);

  JournalEntry e{"restore", m.name, {{"uffd", uffd}}};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  VmmRecord vmm;
  vmm.api_socket = c.store.ApiSocketPath(m.name);
  vmm.memory_source = uffd ? MemorySource::kUffd : MemorySource::kFile;
  vmm.backing_layers = layers;
  std::string backend_path = c.store.BlobPath(m.snapshot->top());
  if (uffd) {
    c.Step("opening a pager session for " + m.name + " over " + std::to_string(layers.size()) + " layer" +
           (layers.size() == 1 ? "" : "s"));
    auto session = c.pager.OpenSession(m.name, c.store.BlobPaths(layers));
    if (!session.ok()) {
      (void)c.journal.Finish(m.name);
      return session.status().WithContext((m.one_shot_uffd ? "one-shot UFFD restore of " : "layered restore of ") +
                                          m.name);
    }
    vmm.pager_session = session->session_id;
    backend_path = session->uffd_socket_path;
  }
  CrashPoint("restore.after_session");

  auto fail = [&](const Status& why) {
    // The instance stays restorable: metadata untouched, flag kept.
    if (vmm.process.pid != 0) (void)vmm.process.Terminate();
    (void)c.pager.CloseSession(vmm.pager_session);
    (void)c.journal.Finish(m.name);
    return why.WithContext("restore " + m.name);
  };
  auto process = c.LaunchVmm(m.name);
  if (!process.ok()) return fail(process.status());
  vmm.process = *process;
  e.data["vmm"] = JournalProcess(vmm.process);
  if (Status st = c.journal.Record(e); !st.ok()) return fail(st);
  CrashPoint("restore.after_launch");

  FirecrackerDriver driver(vmm.api_socket);
  c.Step("loading the snapshot of " + m.name);
  if (Status st =
          driver.LoadSnapshot(state_path, uffd ? LoadBackend::kUffd : LoadBackend::kFile, backend_path, options);
      !st.ok()) {
    return fail(st);
  }
  CrashPoint("restore.after_load");

  // Commit: one metadata write records the VMM and clears the flag.
  m.vmm = vmm;
  m.state = resume ? InstanceState::kRunning : InstanceState::kPaused;
  m.one_shot_uffd = false;
  m.needs_full_snapshot = false;  // the dirty log starts at this load
  if (Status st = c.store.Save(m); !st.ok()) return fail(st);
  CrashPoint("restore.after_commit");
  spdlog::info("restored {} ({} backend over {} layer(s), top {})", m.name, uffd ? "Uffd" : "File", layers.size(),
               m.snapshot->top());
  return c.journal.Finish(m.name);
}

Status RecoverRestore(Context& c, const JournalEntry& e) {
  auto journaled = JournaledProcess(e, "vmm");
  if (!journaled.ok()) return journaled.status();
  const ProcessIdentity started = *journaled;
  bool uffd = false;
  UFFD_RETURN_IF_ERROR(JsonFields(e.data, "data").ReadOptional("uffd", &uffd));
  auto m = c.store.Load(e.instance);
  bool committed = m.ok() && m->vmm && m->vmm->process == started && started.pid != 0;
  if (!committed) {
    spdlog::warn("rolling back the interrupted restore of {}", e.instance);
    if (started.pid != 0) (void)started.Terminate();
    if (uffd) UFFD_RETURN_IF_ERROR(c.pager.CloseSession(e.instance));
  }
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
