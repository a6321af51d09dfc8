// Lifecycle::Context: the parts every operation uses, for one command over
// one data directory. Operations are free functions over it, one file each.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "lifecycle/compaction_records.h"
#include "lifecycle/firecracker_driver.h"
#include "lifecycle/instance_store.h"
#include "lifecycle/lifecycle_journal.h"
#include "lifecycle/memory_ownership.h"
#include "lifecycle/pager_link.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager {

struct Lifecycle::Context {
  Context(std::string dir, DataDirConfig cfg)
      : data_dir(dir),
        config(cfg),
        store(dir),
        journal(store.JournalDir()),
        compactions(store.CompactionsDir()),
        memory(store, compactions),
        pager(dir, cfg) {}

  std::string data_dir;
  DataDirConfig config;
  lifecycle::InstanceStore store;
  lifecycle::LifecycleJournal journal;
  lifecycle::CompactionRecords compactions;
  lifecycle::MemoryOwnership memory;  // reads store and compactions
  lifecycle::PagerLink pager;
  std::function<void(const std::string&)> progress;  // LifecycleOptions::progress
  std::vector<std::string> background_compactor;     // LifecycleOptions::background_compactor
  // Instances this command leaves as they are, and why: their journal
  // record could not be read, or their recovery failed. Filled by the
  // recovery every command begins with; one such instance never stops a
  // command on another.
  std::map<std::string, Status> unusable;

  // OK if this command may work on `name`.
  Status Usable(const std::string& name) const {
    auto it = unusable.find(name);
    return it == unusable.end() ? Status::Ok() : it->second;
  }
  std::set<std::string> UnusableNames() const {
    std::set<std::string> out;
    for (const auto& [name, why] : unusable) out.insert(name);
    return out;
  }
  // The metadata of `name`, if this command may work on it.
  Result<lifecycle::InstanceMetadata> Load(const std::string& name) const {
    UFFD_RETURN_IF_ERROR(Usable(name));
    return store.Load(name);
  }

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
