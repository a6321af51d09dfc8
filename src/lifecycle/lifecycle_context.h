// Lifecycle::Context: the parts every operation uses, for one command over
// one data directory. Operations are free functions over it, one file each.
#pragma once

#include <functional>
#include <string>

#include "lifecycle/firecracker_driver.h"
#include "lifecycle/instance_store.h"
#include "lifecycle/lifecycle_journal.h"
#include "lifecycle/memory_ownership.h"
#include "lifecycle/pager_link.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager {

struct Lifecycle::Context {
  Context(std::string dir, DataDirConfig cfg)
      : data_dir(dir), config(cfg), store(dir), journal(store.JournalDir()), memory(store), pager(dir, cfg) {}

  std::string data_dir;
  DataDirConfig config;
  lifecycle::InstanceStore store;
  lifecycle::LifecycleJournal journal;
  lifecycle::MemoryOwnership memory;
  lifecycle::PagerLink pager;
  std::function<void(const std::string&)> progress;  // LifecycleOptions::progress

  // Tells the caller the step that begins now.
  void Step(const std::string& what) const {
    if (progress) progress(what);
  }

  // Starts a VMM for `name` on its API socket, logging into its folder.
  Result<ProcessIdentity> LaunchVmm(const std::string& name) const {
    Step("starting the VMM of " + name);
    return lifecycle::FirecrackerDriver::Launch(
        {config.vmm_binary, config.vmm_args, name, store.ApiSocketPath(name), store.VmmLogPath(name)});
  }

  // Ends what a live VMM record holds: the process, then its pager session.
  Status EndVmm(const lifecycle::VmmRecord& vmm) {
    Status killed = vmm.process.Terminate();
    Status closed = pager.CloseSession(vmm.pager_session);
    return killed.ok() ? closed : killed;
  }
};

}  // namespace uffdpager
