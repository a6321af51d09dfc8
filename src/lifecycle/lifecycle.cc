// Lifecycle: each public call is one command: take the data directory's
// lock, replay the journal (finish or undo what a crashed command left),
// run the operation, then drop memory blobs nothing references any more.
#include "uffdpager/lifecycle.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>

#include "common/durable_file.h"
#include "lifecycle/data_dir_lock.h"
#include "lifecycle/operations.h"

namespace uffdpager {

using namespace lifecycle;

namespace {

std::string ConfigPath(const std::string& data_dir) { return data_dir + "/config.json"; }

Status RecoverOne(Context& c, const JournalEntry& e) {
  if (e.op == "fork") return RecoverFork(c, e);
  if (e.op == "standby") return RecoverStandby(c, e);
  if (e.op == "restore") return RecoverRestore(c, e);
  if (e.op == "create") return RecoverCreate(c, e);
  return Status::InvalidArgument("journal record of unknown operation \"" + e.op + "\" for " + e.instance);
}

// Drops the memory blobs nothing names; not while an instance is unusable,
// since its metadata or journal record may name any blob.
void CollectGarbage(Context& c) {
  if (!c.unusable.empty()) {
    spdlog::debug("memory blobs are not collected while an instance cannot be used");
    return;
  }
  if (Status gc = c.memory.CollectGarbage({}); !gc.ok()) spdlog::warn("memory blobs not collected: {}", gc.ToString());
}

// Replays the journal: finishes or undoes what crashed commands left. An
// instance whose record or metadata cannot be read, or whose recovery fails,
// is left as it is (and kept in c.unusable); every other one is recovered.
Status RecoverAll(Context& c) {
  c.unusable.clear();
  auto pending = c.journal.Pending();
  if (!pending.ok()) return pending.status();
  for (const auto& [name, why] : pending->unreadable) {
    c.unusable.emplace(name, why.WithContext("instance " + name +
                                             " has a journal record that cannot be replayed (repair or remove it "
                                             "by hand)"));
  }
  for (const auto& e : pending->entries) {
    // Which way to recover depends on the metadata: never guessed.
    auto m = c.store.Load(e.instance);
    Status st = !m.ok() && m.status().code() != ErrorCode::kNotFound ? m.status() : RecoverOne(c, e);
    if (!st.ok()) {
      c.unusable.emplace(e.instance,
                         st.WithContext("the interrupted " + e.op + " of " + e.instance + " could not be recovered"));
    }
  }
  for (const auto& [name, why] : c.unusable) spdlog::warn("{}", why.ToString());
  c.store.SweepLeftovers(c.UnusableNames());
  CollectGarbage(c);
  return Status::Ok();
}

// One command: lock, recover, run, collect.
template <typename F>
auto RunCommand(Context& c, F&& op) -> decltype(op()) {
  auto lock = DataDirLock::Acquire(c.data_dir);
  if (!lock.ok()) return lock.status();
  if (Status st = RecoverAll(c); !st.ok()) return st;
  auto result = op();
  CollectGarbage(c);
  return result;
}

// What list and show say about an instance that cannot be used.
InstanceStatus UnusableStatus(Context& c, const std::string& name, const Status& why) {
  InstanceStatus s;
  s.name = name;
  s.state = InstanceState::kUnknown;
  s.reason = why.ToString();
  // The metadata may be fine (the journal record is what is broken).
  auto m = c.store.Load(name);
  s.details = m.ok() ? m->ToJson() : nlohmann::json::object();
  return s;
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
  auto text = ReadRegularFile(ConfigPath(dir));
  if (!text.ok() && text.status().code() == ErrorCode::kNotFound) {
    return text.status().WithContext("no data directory at " + dir + " (snapctl init)");
  }
  if (!text.ok()) return text.status().WithContext("the data directory's configuration cannot be read");
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
  return RunCommand(*context_, [&]() -> Status {
    UFFD_RETURN_IF_ERROR(context_->Usable(name));
    return CreateInstance(*context_, name, boot);
  });
}

Status Lifecycle::Standby(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? StandbyInstance(*context_, *m) : m.status();
  });
}

Status Lifecycle::Restore(const std::string& name, bool resume) {
  return RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? RestoreInstance(*context_, *m, resume) : m.status();
  });
}

Status Lifecycle::Fork(const std::string& source, const std::string& name, ForkTarget target) {
  return RunCommand(*context_, [&]() -> Status {
    UFFD_RETURN_IF_ERROR(context_->Usable(source));
    UFFD_RETURN_IF_ERROR(context_->Usable(name));
    return ForkInstance(*context_, source, name, target);
  });
}

Status Lifecycle::Stop(const std::string& name) {
  return RunCommand(*context_, [&]() -> Status {
    auto m = context_->Load(name);
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
    auto m = context_->Load(name);
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
    // An instance whose fork never committed has a journal record only.
    std::set<std::string> all(names->begin(), names->end());
    for (const auto& [name, why] : context_->unusable) all.insert(name);
    std::vector<InstanceStatus> out;
    for (const auto& name : all) {
      auto m = context_->Load(name);
      out.push_back(m.ok() ? ProbeInstance(*context_, *m) : UnusableStatus(*context_, name, m.status()));
    }
    return out;
  });
}

Result<InstanceStatus> Lifecycle::Show(const std::string& name) {
  return RunCommand(*context_, [&]() -> Result<InstanceStatus> {
    auto m = context_->Load(name);
    if (m.ok()) return ProbeInstance(*context_, *m);
    if (m.status().code() == ErrorCode::kNotFound && context_->Usable(name).ok()) return m.status();
    return UnusableStatus(*context_, name, m.status());
  });
}

}  // namespace uffdpager
