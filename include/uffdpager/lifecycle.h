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
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager {

// Created: the folder of an instance whose boot has not finished (an
// interrupted create, which the next command removes).
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

// The most layers one pager session serves (its `backing_layers` limit).
inline constexpr uint32_t kMaxPagerLayers = 16;

// DATA/config.json: chosen per data directory (Lifecycle::Configure).
struct DataDirConfig {
  MemoryBackend backend = MemoryBackend::kUffd;
  std::string vmm_binary;             // Firecracker or tinyvmm
  std::vector<std::string> vmm_args;  // after --api-sock PATH --id NAME
  std::string pager_binary;           // uffd-pager, started when not running
  // DATA/uffd/KEY/: which pager serves this directory's forks. Empty in a
  // request means the pager's version; config.json always names one.
  std::string pager_version_key;
  bool pager_autostart = true;
  uint64_t pager_cache_bytes = 1ULL << 30;
  // A jailed VMM's user and group (Firecracker's jailer --uid/--gid): every
  // pager session is given to them (socket_uid/socket_gid) and accepts only
  // a VMM running as vmm_uid (expected_uid). Unset: the pager's defaults.
  std::optional<uint32_t> vmm_uid;
  std::optional<uint32_t> vmm_gid;
  // The longest chain of memory layers a snapshot may have (1 to
  // kMaxPagerLayers). With the uffd backend a standby, or a fork of a
  // running instance, writes only the pages the VM changed, as a new layer
  // over the chain its VMM was restored from; a snapshot whose chain would
  // grow past this gets a merged memory file instead (a chain of one, which
  // costs a copy of the whole memory). 1: never layer.
  uint32_t max_layers = 8;
  // A snapshot whose chain is deeper than this is merged into a new base in
  // the background after the standby or fork that made it (snapctl
  // compact): restores, standbys and forks go on meanwhile, and no byte any
  // instance reads changes. 0: never in the background. At most
  // max_layers, which stays the hard bound (a synchronous merge).
  uint32_t compact_depth = 4;

  // The rules between fields: compact_depth at most max_layers.
  Status Check() const;
  nlohmann::json ToJson() const;
  static Result<DataDirConfig> FromJson(const nlohmann::json& j);
};

// What one `snapctl init` sets. A field left unset keeps the data
// directory's current value, or for a new directory the defaults' value.
struct DataDirSettings {
  std::optional<MemoryBackend> backend;
  std::optional<std::string> vmm_binary;
  std::optional<std::vector<std::string>> vmm_args;
  std::optional<std::string> pager_binary;
  std::optional<std::string> pager_version_key;
  std::optional<bool> pager_autostart;
  std::optional<uint64_t> pager_cache_bytes;
  std::optional<std::optional<uint32_t>> vmm_uid;  // set to nullopt: no uid any more
  std::optional<std::optional<uint32_t>> vmm_gid;
  std::optional<uint32_t> max_layers;
  // Unset: the current compact_depth stays, except that it follows
  // max_layers down when that is set below it.
  std::optional<uint32_t> compact_depth;

  // Every field set from `config`.
  static DataDirSettings Everything(const DataDirConfig& config);
  DataDirConfig AppliedTo(DataDirConfig config) const;
};

// What Lifecycle::Configure did.
struct DataDirConfigured {
  DataDirConfig config;              // now in config.json
  bool created = false;              // there was no config.json before
  std::vector<std::string> changed;  // the config.json fields that changed (empty when created)
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

// Firecracker 1.12+ restores a snapshot with other host devices than the
// ones it was taken with (PUT /snapshot/load's network_overrides and
// vsock_override): a fork gets its own TAP device and vsock socket.
struct NetworkOverride {
  std::string iface_id;       // the guest interface, as configured at boot
  std::string host_dev_name;  // the TAP device it uses from this restore on
};

struct RestoreOptions {
  bool resume = true;  // false: leave the restored VM Paused
  std::vector<NetworkOverride> network_overrides;
  std::string vsock_uds_path;  // empty: the vsock device keeps its socket
};

struct InstanceStatus {
  std::string name;
  InstanceState state = InstanceState::kUnknown;
  std::string reason;      // why Unknown (empty otherwise)
  nlohmann::json details;  // the metadata plus what the checks found

  nlohmann::json ToJson() const;
};

// What Lifecycle::Compact did with one chain.
struct CompactedChain {
  std::vector<std::string> layers;     // the chain merged, base first
  std::string blob;                    // the new base
  std::vector<std::string> instances;  // now on `blob` alone; empty: all moved on meanwhile, blob dropped
};

// What Lifecycle::Publish did.
struct PublishedSnapshot {
  std::string manifest_url;         // s3://BUCKET/PREFIX/NAME.json, what `import` takes
  std::vector<std::string> layers;  // the layers' URLs, base first
  uint32_t layers_uploaded = 0;
  uint32_t layers_reused = 0;         // already in the bucket (a shared base published before)
  uint64_t layer_bytes_uploaded = 0;  // the layers' bytes sent (page maps and state file aside)
};

struct LifecycleOptions {
  std::string data_dir;
  // Overrides of DATA/config.json for this process (empty: the config's).
  std::string vmm_binary;
  std::optional<MemoryBackend> backend;
  // Told each step of an operation as it begins ("pausing src", "writing
  // the snapshot"), from the calling thread; may be empty.
  std::function<void(const std::string& step)> progress;
  // The command that compacts this data directory in the background (snapctl
  // passes itself: `snapctl --data-dir DATA compact`), started detached after
  // a standby or fork leaves a chain deeper than compact_depth, its output
  // appended to DATA/compactions/compact.log. Empty: only Compact() does.
  std::vector<std::string> background_compactor;
};

class Lifecycle {
 public:
  // Creates DATA with `defaults` changed by `settings`, or changes an
  // existing DATA's config by `settings` alone: what is not set stays. A
  // change of backend or pager version key is kConflict while an instance
  // depends on the pager (a live VM it serves, or a fork whose first
  // restore it must serve), naming them. Refuses a directory that already
  // has a different schema.
  static Result<DataDirConfigured> Configure(const std::string& data_dir, const DataDirConfig& defaults,
                                             const DataDirSettings& settings);
  // Configure with every field of `config`.
  static Status InitDataDir(const std::string& data_dir, const DataDirConfig& config);
  static Result<std::unique_ptr<Lifecycle>> Open(const LifecycleOptions& options);
  ~Lifecycle();
  Lifecycle(const Lifecycle&) = delete;
  Lifecycle& operator=(const Lifecycle&) = delete;

  // Boots a new instance (Running). If the boot fails (the VMM cannot start,
  // or refuses the machine configuration), nothing is left of it.
  Status Create(const std::string& name, const BootConfig& boot);
  // Snapshot a Running/Paused instance into memory it owns, stop its VMM.
  // With the uffd backend that is a new layer of only the pages the VM
  // changed over the chain its memory came from (DataDirConfig::max_layers).
  Status Standby(const std::string& name);
  // Start a VMM from the instance's snapshot (Standby or Stopped); a chain
  // of layers is restored through the pager.
  Status Restore(const std::string& name, const RestoreOptions& options = {});
  // A new instance from `source`: from its standby snapshot without copying
  // memory (uffd backend), or from a running source by snapshotting it (a
  // Diff of what it changed, which the source then counts its changes from).
  // With kRunning the fork is then restored with `restore`; if that fails
  // the fork is removed again, so the command can simply be repeated.
  Status Fork(const std::string& source, const std::string& name, ForkTarget target,
              const RestoreOptions& restore = {});
  // Running -> Paused and back; asking for the state it is in is no error.
  Status Pause(const std::string& name);
  Status Resume(const std::string& name);
  Status Stop(const std::string& name);
  Status Delete(const std::string& name);
  Result<std::vector<InstanceStatus>> List();
  Result<InstanceStatus> Show(const std::string& name);
  // Only the recovery every call does first (snapctl recover).
  Status Recover();
  // Merges the snapshot chains of `names` (none: of every instance whose
  // chain is deeper than compact_depth) into new bases, each chain once for
  // all instances on it. The lock is held to plan and to commit, not while
  // merging, so other commands run meanwhile; an instance whose chain
  // changed by then is left as it is. A chain of one, or one another live
  // compaction is merging, is skipped.
  Result<std::vector<CompactedChain>> Compact(const std::vector<std::string>& names);

  // Uploads the snapshot of a Standby or Stopped instance to object storage
  // under `destination` ("s3://BUCKET/PREFIX"; the store from the AWS_*
  // environment) for another host to import: each layer as PREFIX/ID (one
  // already there with that size is not sent again: blobs never change
  // once named), a page map beside each layer above the base, the state
  // file, and last the manifest PREFIX/NAME.json. A layer larger than one
  // PUT takes (5 GiB) is refused before anything is sent. The data
  // directory is only read.
  Result<PublishedSnapshot> Publish(const std::string& name, const std::string& destination);
  // A new Standby instance `name` from a published manifest
  // ("s3://BUCKET/PREFIX/SOURCE.json"): the state file is downloaded, the
  // memory stays in the store (its chain names the layer URLs) and is paged
  // by the pager from the first restore on. Refused, with nothing changed,
  // when the manifest is missing or a layer no longer has the ETag it
  // names. Such a chain is never merged here: a standby over it adds layers
  // up to max_layers, then is refused; compaction skips it.
  Status Import(const std::string& name, const std::string& manifest_url);

  const DataDirConfig& config() const;

  struct Context;  // the parts an operation uses (lifecycle_context.h)

 private:
  explicit Lifecycle(std::unique_ptr<Context> context);
  std::unique_ptr<Context> context_;
};

}  // namespace uffdpager
