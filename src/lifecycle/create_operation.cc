// Create: boot a new instance. The folder is committed first (state
// Created), then the VMM is started and booted, and a second metadata write
// records it as Running. A crash between the two leaves a Created instance
// and, through the journal, the VMM to stop.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/durable_file.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"

namespace uffdpager::lifecycle {

Status CreateInstance(Context& c, const std::string& name, const BootConfig& boot) {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  if (c.store.Exists(name)) return Status::Error(ErrorCode::kAlreadyExists, "instance " + name + " exists");
  InstanceMetadata m;
  m.name = name;
  m.state = InstanceState::kCreated;
  m.vcpu_count = boot.vcpu_count;
  m.mem_size_mib = boot.mem_size_mib;
  m.needs_full_snapshot = true;
  const std::string staging = c.store.StagingDir(name);
  std::error_code ec;
  std::filesystem::remove_all(staging, ec);
  std::filesystem::create_directories(staging + "/snapshot", ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + staging);
  UFFD_RETURN_IF_ERROR(c.store.SaveInto(staging, m));
  UFFD_RETURN_IF_ERROR(RenameDurably(staging, c.store.InstanceDir(name)));

  JournalEntry e{"create", name};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  VmmRecord vmm;
  vmm.api_socket = c.store.ApiSocketPath(name);
  vmm.memory_source = MemorySource::kBoot;
  auto process = c.LaunchVmm(name);
  if (!process.ok()) {
    (void)c.journal.Finish(name);
    return process.status().WithContext("create " + name);
  }
  vmm.process = *process;
  e.data["vmm"] = JournalProcess(vmm.process);
  Status st = c.journal.Record(e);
  CrashPoint("create.after_launch");
  if (st.ok()) st = FirecrackerDriver(vmm.api_socket).Boot(boot);
  if (st.ok()) {
    m.vmm = vmm;
    m.state = InstanceState::kRunning;
    st = c.store.Save(m);
  }
  if (!st.ok()) {
    (void)vmm.process.Terminate();
    (void)c.journal.Finish(name);
    return st.WithContext("create " + name);
  }
  spdlog::info("created {}: {} vCPUs, {} MiB, VMM pid {}", name, boot.vcpu_count, boot.mem_size_mib, vmm.process.pid);
  return c.journal.Finish(name);
}

Status RecoverCreate(Context& c, const JournalEntry& e) {
  auto journaled = JournaledProcess(e, "vmm");
  if (!journaled.ok()) return journaled.status();
  const ProcessIdentity started = *journaled;
  auto m = c.store.Load(e.instance);
  bool committed = m.ok() && m->vmm && m->vmm->process == started;
  if (!committed && started.pid != 0) (void)started.Terminate();
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
