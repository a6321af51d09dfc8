// Lifecycle: each public call is one command: take the data directory's
// lock, replay the journal (finish or undo what a crashed command left),
// run the operation, then drop memory blobs nothing references any more.
#include "uffdpager/lifecycle.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/durable_file.h"
#include "common/version.h"
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

// Inside the lifecycle kNotFound means "no instance of that name" and
// nothing else: a file missing under the data directory (ENOENT) is damage,
// an I/O error, so that a caller (snapctl's exit code) can rely on it.
Status OnlyInstancesAreNotFound(const Status& st) {
  return st.code() == ErrorCode::kNotFound && st.error_number() != 0 ? st.WithCode(ErrorCode::kIoError) : st;
}
template <typename T>
Result<T> OnlyInstancesAreNotFound(Result<T> r) {
  if (r.ok()) return r;
  return OnlyInstancesAreNotFound(r.status());
}

// The instances that need the pager: those whose live VM it serves and,
// with `pending_forks`, the forks whose first restore it must serve.
// Unreadable metadata counts as needing it: nothing is assumed unused.
std::vector<std::string> PagerDependents(const InstanceStore& store, bool pending_forks) {
  std::vector<std::string> out;
  auto names = store.Names();
  if (!names.ok()) return {"(the instance list: " + names.status().ToString() + ")"};
  for (const auto& name : *names) {
    auto m = store.Load(name);
    if (!m.ok() || (m->vmm && m->vmm->memory_source == MemorySource::kUffd) || (pending_forks && m->one_shot_uffd)) {
      out.push_back(name);
    }
  }
  return out;
}

// One command: lock, recover, run, collect; then stop a pager this
// directory started if no VM of it needs the pager any more.
template <typename F>
auto RunCommand(Context& c, F&& op) -> decltype(op()) {
  auto lock = DataDirLock::Acquire(c.data_dir);
  if (!lock.ok()) return lock.status();
  if (Status st = RecoverAll(c); !st.ok()) return OnlyInstancesAreNotFound(st);
  auto result = op();
  if (Status gc = c.memory.CollectGarbage({}); !gc.ok()) spdlog::warn("blob collection: {}", gc.ToString());
  if (PagerDependents(c.store, /*pending_forks=*/false).empty()) {
    if (Status stop = c.pager.StopIfStartedHere(); !stop.ok()) spdlog::warn("stopping the pager: {}", stop.ToString());
  }
  return OnlyInstancesAreNotFound(std::move(result));
}

// DATA/config.json, or nullopt where there is none.
Result<std::optional<DataDirConfig>> ReadDataDirConfig(const std::string& dir) {
  auto text = ReadWholeFile(ConfigPath(dir));
  if (!text.ok()) {
    if (text.status().error_number() == ENOENT) return std::optional<DataDirConfig>();
    return text.status();
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(ConfigPath(dir) + " is not JSON");
  auto config = DataDirConfig::FromJson(j);
  if (!config.ok()) return config.status().WithContext(ConfigPath(dir));
  return std::optional<DataDirConfig>(*config);
}

}  // namespace

Result<DataDirConfigured> Lifecycle::Configure(const std::string& data_dir, const DataDirConfig& defaults,
                                               const DataDirSettings& settings) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + data_dir);
  InstanceStore store(data_dir);
  UFFD_RETURN_IF_ERROR(store.Prepare());
  auto lock = DataDirLock::Acquire(data_dir);
  if (!lock.ok()) return lock.status();
  auto existing = ReadDataDirConfig(data_dir);
  if (!existing.ok()) return existing.status();
  DataDirConfigured out;
  out.created = !existing->has_value();
  const DataDirConfig before = out.created ? defaults : **existing;
  out.config = settings.AppliedTo(before);
  if (out.config.pager_version_key.empty()) out.config.pager_version_key = kVersion;
  if (out.config.vmm_binary.empty()) return Status::InvalidArgument("a VMM binary is required (--vmm-binary)");
  if (!ValidateInstanceName(out.config.pager_version_key).ok()) {
    return Status::InvalidArgument("pager version key \"" + out.config.pager_version_key +
                                   "\": use 1-64 of [A-Za-z0-9._-], no leading dot");
  }
  if (!out.created) {
    const nlohmann::json old_json = before.ToJson(), new_json = out.config.ToJson();
    for (const auto& [key, value] : new_json.items()) {
      if (!old_json.contains(key) || old_json[key] != value) out.changed.push_back(key);
    }
    for (const auto& [key, value] : old_json.items()) {
      if (!new_json.contains(key)) out.changed.push_back(key);
    }
    // Switching the backend or the pager would strand what the pager serves
    // or must serve next.
    const char* pager_change = out.config.backend != before.backend                       ? "backend"
                               : out.config.pager_version_key != before.pager_version_key ? "pager version key"
                                                                                          : nullptr;
    auto dependents = pager_change ? PagerDependents(store, /*pending_forks=*/true) : std::vector<std::string>();
    if (!dependents.empty()) {
      std::string names;
      for (const auto& n : dependents) names += (names.empty() ? "" : ", ") + n;
      return Status::Conflict("cannot change the " + std::string(pager_change) + " of " + data_dir + ": " + names +
                              " depend(s) on the pager (a VM it serves, or a fork whose first restore it must "
                              "serve); standby, restore or delete them first");
    }
  }
  UFFD_RETURN_IF_ERROR(WriteFileAtomically(ConfigPath(data_dir), out.config.ToJson().dump(2) + "\n"));
  return out;
}

Status Lifecycle::InitDataDir(const std::string& data_dir, const DataDirConfig& config) {
  return Configure(data_dir, config, DataDirSettings::Everything(config)).status();
}

Result<std::unique_ptr<Lifecycle>> Lifecycle::Open(const LifecycleOptions& options) {
  std::string dir = std::filesystem::absolute(options.data_dir).lexically_normal().string();
  if (!dir.empty() && dir.back() == '/') dir.pop_back();
  auto read = ReadDataDirConfig(dir);
  if (!read.ok()) return read.status();
  if (!read->has_value()) return Status::NotFound("no data directory at " + dir + " (snapctl init makes one)");
  DataDirConfig config = **read;
  if (!options.vmm_binary.empty()) config.vmm_binary = options.vmm_binary;
  if (options.backend) config.backend = *options.backend;
  auto context = std::make_unique<Context>(dir, config);
  context->progress = options.progress;
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

Status Lifecycle::Restore(const std::string& name, const RestoreOptions& options) {
  return RunCommand(*context_, [&] {
    auto m = context_->store.Load(name);
    return m.ok() ? RestoreInstance(*context_, *m, options) : m.status();
  });
}

Status Lifecycle::Fork(const std::string& source, const std::string& name, ForkTarget target,
                       const RestoreOptions& restore) {
  return RunCommand(*context_, [&] { return ForkInstance(*context_, source, name, target, restore); });
}

Status Lifecycle::Pause(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->store.Load(name);
    return m.ok() ? SetPaused(*context_, *m, true) : m.status();
  });
}

Status Lifecycle::Resume(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->store.Load(name);
    return m.ok() ? SetPaused(*context_, *m, false) : m.status();
  });
}

Status Lifecycle::Stop(const std::string& name) {
  return RunCommand(*context_, [&]() -> Status {
    auto m = context_->store.Load(name);
    if (!m.ok()) return m.status();
    context_->Step("stopping the VMM of " + name);
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
