// Lifecycle: the snapshot life of microVM instances over a data directory —
// boot, standby, restore, fork, stop, delete — with forks that never copy
// their source's memory on the hot path.
//
// A data directory holds one folder per instance (metadata as JSON, written
// atomically, with a schema version), the memory files ("blobs") that
// snapshots point to, a journal of operations in flight, and the pager's own
// directory (DATA/uffd/VERSION/). Every public call takes the directory's
// lock, first finishes or rolls back whatever a crashed earlier call left
// half done, then does its work. The VMM is driven through Firecracker's HTTP
// API, so the same code drives Firecracker and tinyvmm.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager {

// Created: booted from nothing, never snapshotted and not running any more.
// Running/Paused: a live VMM. Standby: a snapshot and no VMM, restorable.
// Stopped: no VMM; restorable only if it holds a snapshot. Unknown: what the
// metadata says cannot be confirmed (VMM gone, pager session failed, ...).
enum class InstanceState { kCreated, kRunning, kPaused, kStandby, kStopped, kUnknown };
const char* InstanceStateName(InstanceState state);
Result<InstanceState> ParseInstanceState(const std::string& name);

// How a fork gets its memory. kUffd: forks reference the source's bytes and
// their first restore is served lazily by the pager (one-shot UFFD). kFile:
// forks copy the memory file eagerly (a reflink where the filesystem can).
enum class MemoryBackend { kUffd, kFile };
const char* MemoryBackendName(MemoryBackend backend);
Result<MemoryBackend> ParseMemoryBackend(const std::string& name);

// DATA/config.json: chosen once per data directory.
struct DataDirConfig {
  MemoryBackend backend = MemoryBackend::kUffd;
  std::string vmm_binary;             // Firecracker or tinyvmm
  std::vector<std::string> vmm_args;  // after --api-sock PATH --id NAME
  std::string pager_binary;           // uffd-pager, started when not running
  std::string pager_version_key = "default";
  bool pager_autostart = true;
  uint64_t pager_cache_bytes = 1ULL << 30;

  nlohmann::json ToJson() const;
  static Result<DataDirConfig> FromJson(const nlohmann::json& j);
};

struct BootConfig {
  uint32_t vcpu_count = 1;
  uint64_t mem_size_mib = 128;
  // Extra pre-boot requests, {"/boot-source": {...}, "/drives/rootfs": {...}},
  // each sent as a PUT before InstanceStart (what Firecracker needs; tinyvmm
  // needs none).
  nlohmann::json pre_boot_requests = nlohmann::json::object();
};

enum class ForkTarget { kRunning, kStandby, kStopped };
Result<ForkTarget> ParseForkTarget(const std::string& name);

struct InstanceStatus {
  std::string name;
  InstanceState state = InstanceState::kUnknown;
  std::string reason;      // why Unknown (empty otherwise)
  nlohmann::json details;  // the metadata plus what the checks found

  nlohmann::json ToJson() const;
};

struct LifecycleOptions {
  std::string data_dir;
  // Overrides of DATA/config.json for this process (empty: the config's).
  std::string vmm_binary;
  std::optional<MemoryBackend> backend;
};

class Lifecycle {
 public:
  // Creates DATA (if needed) with `config`; refuses a directory that already
  // has a different schema.
  static Status InitDataDir(const std::string& data_dir, const DataDirConfig& config);
  static Result<std::unique_ptr<Lifecycle>> Open(const LifecycleOptions& options);
  ~Lifecycle();
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  // Boots a new instance (Running).
  Status Create(const std::string& name, const BootConfig& boot);
  // Snapshot a Running/Paused instance into memory it owns, stop its VMM.
  Status Standby(const std::string& name);
  // Start a VMM from the instance's snapshot (Standby or Stopped).
  Status Restore(const std::string& name, bool resume = true);
  // A new instance from `source`: from its standby snapshot without copying
  // memory (uffd backend), or from a running source by snapshotting it.
  Status Fork(const std::string& source, const std::string& name, ForkTarget target);
  Status Stop(const std::string& name);
  Status Delete(const std::string& name);
  Result<std::vector<InstanceStatus>> List();
  Result<InstanceStatus> Show(const std::string& name);
  // Only the recovery every call does first (snapctl recover).
  Status Recover();

  const DataDirConfig& config() const;

  struct Context;  // the parts an operation uses (lifecycle_context.h)

 private:
  explicit Lifecycle(std::unique_ptr<Context> context);
  std::unique_ptr<Context> context_;
};

}  // namespace uffdpager
