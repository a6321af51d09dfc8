// Lifecycle: each public call is one command: take the data directory's
// lock, replay the journal (finish or undo what a crashed command left),
// run the operation, then drop memory blobs nothing references any more.
// A compaction is two such commands with the merge between them.
#include "uffdpager/lifecycle.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <set>

#include "common/durable_file.h"
#include "common/version.h"
#include "lifecycle/crash_point.h"
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
  if (e.op == "import") return RecoverImport(c, e);
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
  RecoverCompactions(c);
  CollectGarbage(c);
  return Status::Ok();
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
// with `pending_forks`, those whose next restore it must serve (a fork's
// first, or any of a chain of layers).
// Unreadable metadata counts as needing it: nothing is assumed unused.
std::vector<std::string> PagerDependents(const InstanceStore& store, bool pending_forks) {
  std::vector<std::string> out;
  auto names = store.Names();
  if (!names.ok()) return {"(the instance list: " + names.status().ToString() + ")"};
  for (const auto& name : *names) {
    auto m = store.Load(name);
    if (!m.ok() || m->ServedByPager() || (pending_forks && m->RestoreNeedsPager())) {
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
  CollectGarbage(c);
  if (PagerDependents(c.store, /*pending_forks=*/false).empty()) {
    if (Status stop = c.pager.StopIfStartedHere(); !stop.ok()) spdlog::warn("stopping the pager: {}", stop.ToString());
  }
  return OnlyInstancesAreNotFound(std::move(result));
}

// DATA/config.json, or nullopt where there is none.
Result<std::optional<DataDirConfig>> ReadDataDirConfig(const std::string& dir) {
  auto text = ReadRegularFile(ConfigPath(dir));
  if (!text.ok()) {
    if (text.status().error_number() == ENOENT) return std::optional<DataDirConfig>();
    return text.status().WithContext("the data directory's configuration cannot be read");
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument(ConfigPath(dir) + " is not JSON");
  auto config = DataDirConfig::FromJson(j);
  if (!config.ok()) return config.status().WithContext(ConfigPath(dir));
  return std::optional<DataDirConfig>(*config);
}

// What list and show say about an instance that cannot be used.
InstanceStatus UnusableStatus(Context& c, const std::string& name, const Status& why) {
  InstanceStatus s;
  s.name = name;
  s.state = InstanceState::kUnknown;
  s.reason = why.ToString();
  // The metadata may be fine (the journal record is what is broken).
  auto m = c.store.Load(name);
  s.details = m.ok() ? StatusDetails(*m) : nlohmann::json::object();
  return s;
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
  UFFD_RETURN_IF_ERROR(out.config.Check());
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
  context->background_compactor = options.background_compactor;
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
  Status done = RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? StandbyInstance(*context_, *m) : m.status();
  });
  if (done.ok()) StartBackgroundCompaction(*context_, name);
  return done;
}

Status Lifecycle::Restore(const std::string& name, const RestoreOptions& options) {
  return RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? RestoreInstance(*context_, *m, options) : m.status();
  });
}

Status Lifecycle::Fork(const std::string& source, const std::string& name, ForkTarget target,
                       const RestoreOptions& restore) {
  Status done = RunCommand(*context_, [&]() -> Status {
    UFFD_RETURN_IF_ERROR(context_->Usable(source));
    UFFD_RETURN_IF_ERROR(context_->Usable(name));
    return ForkInstance(*context_, source, name, target, restore);
  });
  if (done.ok()) StartBackgroundCompaction(*context_, name);
  return done;
}

Status Lifecycle::Pause(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? SetPaused(*context_, *m, true) : m.status();
  });
}

Status Lifecycle::Resume(const std::string& name) {
  return RunCommand(*context_, [&] {
    auto m = context_->Load(name);
    return m.ok() ? SetPaused(*context_, *m, false) : m.status();
  });
}

Status Lifecycle::Stop(const std::string& name) {
  return RunCommand(*context_, [&]() -> Status {
    auto m = context_->Load(name);
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
    auto m = context_->Load(name);
    if (!m.ok()) return m.status();
    if (m->vmm) UFFD_RETURN_IF_ERROR(context_->EndVmm(*m->vmm));
    // Its blobs stay while any fork names them; the collection after the
    // command removes the rest.
    return context_->store.Remove(name);
  });
}

Result<std::vector<CompactedChain>> Lifecycle::Compact(const std::vector<std::string>& names) {
  Context& c = *context_;
  auto planned = RunCommand(c, [&] { return PlanCompactions(c, names); });
  if (!planned.ok()) return planned.status();
  if (planned->empty()) return std::vector<CompactedChain>();
  CrashPoint("compact.after_record");
  HoldPoint("compact.after_record");
  // Unlocked: every other command may run meanwhile.
  Status failed;
  for (auto& record : *planned) {
    Status merged = MergeCompaction(c, record);
    if (!merged.ok()) spdlog::warn("{}", merged.ToString());
    if (failed.ok()) failed = merged;
  }
  CrashPoint("compact.after_merge");
  HoldPoint("compact.after_merge");
  auto committed = RunCommand(c, [&]() -> Result<std::vector<CompactedChain>> {
    std::vector<CompactedChain> out;
    for (const auto& record : *planned) {
      auto moved = CommitCompaction(c, record);
      if (!moved.ok()) return moved.status().WithContext("compact into " + record.blob);
      CrashPoint("compact.after_commit");
      UFFD_RETURN_IF_ERROR(c.compactions.Finish(record.blob));
      if (record.merged) out.push_back({record.chain, record.blob, *moved});
    }
    return out;
  });
  if (committed.ok() && !failed.ok()) return failed;
  return committed;
}

Result<PublishedSnapshot> Lifecycle::Publish(const std::string& name, const std::string& destination) {
  return RunCommand(*context_, [&]() -> Result<PublishedSnapshot> {
    auto m = context_->Load(name);
    if (!m.ok()) return m.status();
    return PublishInstance(*context_, *m, destination);
  });
}

Status Lifecycle::Import(const std::string& name, const std::string& manifest_url) {
  return RunCommand(*context_, [&]() -> Status {
    UFFD_RETURN_IF_ERROR(context_->Usable(name));
    return ImportInstance(*context_, name, manifest_url);
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
