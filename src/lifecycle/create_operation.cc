// Create: boot a new instance. The intent is journaled first; the folder is
// committed (state Created), then the VMM is started and booted, and a
// second metadata write records it as Running. A boot that fails — the VMM
// cannot start, or refuses the machine configuration — leaves nothing: its
// VMM is stopped and its folder removed, so the same command can simply be
// repeated. A crash before the second write is undone the same way by the
// next command.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/durable_file.h"
#include "lifecycle/crash_point.h"
#include "lifecycle/operations.h"

namespace uffdpager::lifecycle {

namespace {

// What a Firecracker VM needs at the least; the VMM checks its own limits.
Status ValidateBootConfig(const BootConfig& boot) {
  if (boot.vcpu_count == 0) return Status::InvalidArgument("a VM needs at least 1 vCPU");
  if (boot.mem_size_mib == 0) return Status::InvalidArgument("a VM needs at least 1 MiB of memory");
  return Status::Ok();
}

// Removes what an unfinished create of `name` left: its folder (only while
// it is still the Created one this create made) and its staging folder.
void RemoveUnbooted(Context& c, const std::string& name) {
  std::error_code ec;
  std::filesystem::remove_all(c.store.StagingDir(name), ec);
  auto m = c.store.Load(name);
  if (m.ok() && m->state == InstanceState::kCreated && !m->vmm) (void)c.store.Remove(name);
}

}  // namespace

Status CreateInstance(Context& c, const std::string& name, const BootConfig& boot) {
  UFFD_RETURN_IF_ERROR(ValidateInstanceName(name));
  UFFD_RETURN_IF_ERROR(ValidateBootConfig(boot));
  if (c.store.Exists(name)) return Status::Error(ErrorCode::kAlreadyExists, "instance " + name + " exists");
  UFFD_RETURN_IF_ERROR(CheckVmmBinary(c.config.vmm_binary));
  InstanceMetadata m;
  m.name = name;
  m.state = InstanceState::kCreated;
  m.vcpu_count = boot.vcpu_count;
  m.mem_size_mib = boot.mem_size_mib;
  m.needs_full_snapshot = true;

  JournalEntry e{"create", name};
  UFFD_RETURN_IF_ERROR(c.journal.Record(e));
  VmmRecord vmm;
  auto fail = [&](const Status& why) {
    if (vmm.process.pid != 0) (void)vmm.process.Terminate();
    RemoveUnbooted(c, name);
    (void)c.journal.Finish(name);
    return why.WithContext("create " + name + " (nothing was kept)");
  };
  const std::string staging = c.store.StagingDir(name);
  std::error_code ec;
  std::filesystem::remove_all(staging, ec);
  std::filesystem::create_directories(staging + "/snapshot", ec);
  if (ec) return fail(Status::FromErrno(ec.value(), "create " + staging));
  if (Status st = c.store.SaveInto(staging, m); !st.ok()) return fail(st);
  if (Status st = RenameDurably(staging, c.store.InstanceDir(name)); !st.ok()) return fail(st);

  vmm.api_socket = c.store.ApiSocketPath(name);
  vmm.memory_source = MemorySource::kBoot;
  auto process = c.LaunchVmm(name);
  if (!process.ok()) return fail(process.status());
  vmm.process = *process;
  e.data["vmm"] = JournalProcess(vmm.process);
  if (Status st = c.journal.Record(e); !st.ok()) return fail(st);
  CrashPoint("create.after_launch");
  c.Step("booting " + name);
  if (Status st = FirecrackerDriver(vmm.api_socket).Boot(boot); !st.ok()) return fail(st);
  m.vmm = vmm;
  m.state = InstanceState::kRunning;
  if (Status st = c.store.Save(m); !st.ok()) return fail(st);
  spdlog::info("created {}: {} vCPUs, {} MiB, VMM pid {}", name, boot.vcpu_count, boot.mem_size_mib, vmm.process.pid);
  return c.journal.Finish(name);
}

Status RecoverCreate(Context& c, const JournalEntry& e) {
  auto journaled = JournaledProcess(e, "vmm");
  if (!journaled.ok()) return journaled.status();
  const ProcessIdentity started = *journaled;
  auto m = c.store.Load(e.instance);
  bool committed = m.ok() && m->vmm && m->vmm->process == started;
  if (!committed) {
    spdlog::warn("removing the unfinished create of {}", e.instance);
    if (started.pid != 0) (void)started.Terminate();
    RemoveUnbooted(c, e.instance);
  }
  return c.journal.Finish(e.instance);
}

}  // namespace uffdpager::lifecycle
