// Lifecycle: each public call is one command: take the data directory's
// lock, replay the journal (finish or undo what a crashed command left),
// run the operation, then drop memory blobs nothing references any more.
#include "uffdpager/lifecycle.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/durable_file.h"
#include "lifecycle/data_dir_lock.h"
#include "lifecycle/operations.h"

namespace uffdpager {

using namespace lifecycle;

namespace {

std::string ConfigPath(const std::string& data_dir) { return data_dir + "/config.json"; }

Status RecoverAll(Context& c) {
  auto pending = c.journal.Pending();
  if (!pending.ok()) return pending.status();
  for (const auto& e : *pending) {
    Status st;
    if (e.op == "fork") {
      st = RecoverFork(c, e);
    } else if (e.op == "standby") {
      st = RecoverStandby(c, e);
    } else if (e.op == "restore") {
      st = RecoverRestore(c, e);
    } else if (e.op == "create") {
      st = RecoverCreate(c, e);
    } else {
      st = Status::InvalidArgument("journal record of unknown operation \"" + e.op + "\" for " + e.instance);
    }
    if (!st.ok()) return st.WithContext("recovering " + e.op + " of " + e.instance);
  }
  c.store.SweepLeftovers();
  return c.memory.CollectGarbage({});
}

// One command: lock, recover, run, collect.
template <typename F>
auto RunCommand(Context& c, F&& op) -> decltype(op()) {
  auto lock = DataDirLock::Acquire(c.data_dir);
  if (!lock.ok()) return lock.status();
  if (Status st = RecoverAll(c); !st.ok()) return st;
  auto result = op();
  if (Status gc = c.memory.CollectGarbage({}); !gc.ok()) spdlog::warn("blob collection: {}", gc.ToString());
  return result;
}

}  // namespace

Status Lifecycle::InitDataDir(const std::string& data_dir, const DataDirConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + data_dir);
  if (config.vmm_binary.empty()) return Status::InvalidArgument("a VMM binary is required");
  InstanceStore store(data_dir);
  UFFD_RETURN_IF_ERROR(store.Prepare());
  auto lock = DataDirLock::Acquire(data_dir);
  if (!lock.ok()) return lock.status();
  return WriteFileAtomically(ConfigPath(data_dir), config.ToJson().dump(2) + "\n");
}

Result<std::unique_ptr<Lifecycle>> Lifecycle::Open(const LifecycleOptions& options) {
  std::string dir = std::filesystem::absolute(options.data_dir).lexically_normal().string();
  if (!dir.empty() && dir.back() == '/') dir.pop_back();
  auto text = ReadWholeFile(ConfigPath(dir));
  if (!text.ok()) return text.status().WithContext("no data directory at " + dir + " (snapctl init)");
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(ConfigPath(dir) + " is not JSON");
  auto config = DataDirConfig::FromJson(j);
  if (!config.ok()) return config.status().WithContext(ConfigPath(dir));
  if (!options.vmm_binary.empty()) config->vmm_binary = options.vmm_binary;
  if (options.backend) config->backend = *options.backend;
  auto context = std::make_unique<Context>(dir, *config);
  UFFD_RETURN_IF_ERROR(context->store.Prepare());
  return std::unique_ptr<Lifecycle>(new Lifecycle(std::move(context)));
}

Lifecycle::Lifecycle(std::unique_ptr<Context> context) : context_(std::move(context)) {}
Lifecycle::~Lifecycle() = default;

const DataDirConfig& Lifecycle::config() const { return context_->config; }

Status Lifecycle::Recover() {
  return RunCommand(*context_, [] { return Status::Ok(); });
}

Status Lifecycle::Create(const std::string& name, const BootConfig& boot) {
  return RunCommand(*context_, [&] { return CreateInstance(*context_, name, boot); });
}

Status Lifecycle::Standby(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->store.Load(name);
    return m.ok() ? StandbyInstance(*context_, *m) : m.status();
  });
}

Status Lifecycle::Restore(const std::string& name, bool resume) {
  return RunCommand(*context_, [&] {
    auto m = context_->store.Load(name);
    return m.ok() ? RestoreInstance(*context_, *m, resume) : m.status();
  });
}

Status Lifecycle::Fork(const std::string& source, const std::string& name, ForkTarget target) {
  return RunCommand(*context_, [&] { return ForkInstance(*context_, source, name, target); });
}

Status Lifecycle::Stop(const std::string& name) {
  return RunCommand(*context_, [&]() -> Status {
    auto m = context_->store.Load(name);
    if (!m.ok()) return m.status();
    if (m->vmm) UFFD_RETURN_IF_ERROR(context_->EndVmm(*m->vmm));
    if (!m->vmm && m->state != InstanceState::kRunning && m->state != InstanceState::kPaused) return Status::Ok();
    m->vmm.reset();
    m->state = InstanceState::kStopped;
    m->needs_full_snapshot = true;
    return context_->store.Save(*m);
  });
}

Status Lifecycle::Delete(const std::string& name) {
  return RunCommand(*context_, [&]() -> Status {
    auto m = context_->store.Load(name);
    if (!m.ok()) return m.status();
    if (m->vmm) UFFD_RETURN_IF_ERROR(context_->EndVmm(*m->vmm));
    // Its blobs stay while any fork names them; the collection after the
    // command removes the rest.
    return context_->store.Remove(name);
  });
}

Result<std::vector<InstanceStatus>> Lifecycle::List() {
  return RunCommand(*context_, [&]() -> Result<std::vector<InstanceStatus>> {
    auto names = context_->store.Names();
    if (!names.ok()) return names.status();
    std::vector<InstanceStatus> out;
    for (const auto& name : *names) {
      auto m = context_->store.Load(name);
      if (!m.ok()) {
        InstanceStatus s;
        s.name = name;
        s.reason = m.status().ToString();
        out.push_back(s);
        continue;
      }
      out.push_back(ProbeInstance(*context_, *m));
    }
    return out;
  });
}

Result<InstanceStatus> Lifecycle::Show(const std::string& name) {
  return RunCommand(*context_, [&]() -> Result<InstanceStatus> {
    auto m = context_->store.Load(name);
    if (!m.ok()) return m.status();
    return ProbeInstance(*context_, *m);
  });
}

}  // namespace uffdpager
