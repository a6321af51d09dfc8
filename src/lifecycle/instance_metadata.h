// InstanceMetadata: what the lifecycle knows about one instance, stored as
// DATA/instances/NAME/instance.json (schema_version 2; schema 1 is still
// read).
//
// Memory is described by the snapshot, not by the instance: `memory_layers`
// names the files (DATA/blobs/ID), base first, whose layered bytes are the
// snapshot's memory. The base is a whole memory file; each layer above it is
// a Diff snapshot: a sparse file of the same size whose data extents are the
// pages that changed, so a page's bytes come from the topmost layer whose
// data holds it. A chain of one is a plain memory file (schema 1's
// `memory_blob`). `owns_memory` says whether this instance created the top
// layer (and so may write a Diff into it when no one else reads it). A fork
// that has not materialized records its source's chain directly, so a chain
// of such forks resolves to the real owners of the bytes without walking
// anything; forks share every layer they name and never write one.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/object_url.h"
#include "lifecycle/detached_process.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager::lifecycle {

inline constexpr int kMetadataSchemaVersion = 2;

// The layers of a memory chain, base first. Never empty where it names
// memory. A layer is a blob id (DATA/blobs/ID) or, for a snapshot imported
// from object storage (snapctl import), the URL of an object
// ("s3://BUCKET/KEY"): such a layer is read only through the pager, never
// collected, written or merged here.
using LayerChain = std::vector<std::string>;

// Whether `layer` is an object in object storage rather than a local blob.
inline bool IsObjectLayer(const std::string& layer) { return IsObjectUrl(layer); }
// Whether any layer of `chain` is such an object.
bool HasObjectLayer(const LayerChain& chain);

struct SnapshotRecord {
  std::string state_file;    // name inside the instance's snapshot/ folder
  LayerChain memory_layers;  // blob ids or object URLs, base first
  bool owns_memory = false;  // this instance created the top layer

  const std::string& top() const { return memory_layers.back(); }
};

// How the live VMM got its memory.
enum class MemorySource { kBoot, kFile, kUffd };
const char* MemorySourceName(MemorySource s);

struct VmmRecord {
  ProcessIdentity process;
  std::string api_socket;
  MemorySource memory_source = MemorySource::kBoot;
  std::string pager_session;  // set for kUffd
  // The chain the VMM's memory came from (kFile: one blob, mapped; kUffd:
  // served by the pager session). After a fork of the running VMM wrote a
  // layer of what it had changed, that layer is on top: the VMM's dirty log
  // then counts from there. Empty for kBoot.
  LayerChain backing_layers;
};

struct InstanceMetadata {
  std::string name;
  InstanceState state = InstanceState::kCreated;  // what was last recorded
  uint32_t vcpu_count = 0;
  uint64_t mem_size_mib = 0;
  std::string forked_from;
  std::optional<SnapshotRecord> snapshot;
  std::optional<VmmRecord> vmm;  // while Running/Paused
  // The next restore goes through a pager session over memory_layers; cleared
  // only after one succeeded.
  bool one_shot_uffd = false;
  // The VMM's dirty log is no base for a Diff (fresh boot, or a Full
  // snapshot taken for a fork reset it): the next standby writes Full.
  bool needs_full_snapshot = true;

  // The number of layers of the snapshot's memory (0: no snapshot).
  size_t ChainDepth() const { return snapshot ? snapshot->memory_layers.size() : 0; }
  // A Diff of the live VMM is correct over the chain its memory came from:
  // its dirty log counts every change since that chain.
  bool HasDiffBase() const { return !needs_full_snapshot && vmm && !vmm->backing_layers.empty(); }
  // The live VMM's memory is served by a pager session.
  bool ServedByPager() const { return vmm && vmm->memory_source == MemorySource::kUffd; }
  // The next restore must go through the pager: a fork's first restore
  // (one-shot UFFD), a chain of layers, which no file mapping can be, or
  // memory in object storage, which only the pager reads.
  bool RestoreNeedsPager() const {
    return one_shot_uffd || ChainDepth() > 1 || (snapshot && HasObjectLayer(snapshot->memory_layers));
  }

  nlohmann::json ToJson() const;
  // Reads schema 2, and schema 1 (`memory_blob`, `backing_blob`: a chain of
  // one). Every layer must be a plain file name (a blob id) or a valid
  // object URL.
  static Result<InstanceMetadata> FromJson(const nlohmann::json& j);
};

// Instance names become directory names and pager session ids.
Status ValidateInstanceName(const std::string& name);

}  // namespace uffdpager::lifecycle
