// InstanceMetadata: what the lifecycle knows about one instance, stored as
// DATA/instances/NAME/instance.json (schema_version 1).
//
// Memory is described by the snapshot, not by the instance: `memory_blob`
// names the file (DATA/blobs/ID) that holds the snapshot's memory bytes, and
// `owns_memory` says whether this instance created it (and so may write a
// Diff into it when no one else reads it). A fork that has not materialized
// records its source's blob id directly, so a chain of such forks resolves
// to the real owner of the bytes without walking anything.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "lifecycle/detached_process.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager::lifecycle {

inline constexpr int kMetadataSchemaVersion = 1;

struct SnapshotRecord {
  std::string state_file;   // name inside the instance's snapshot/ folder
  std::string memory_blob;  // id of DATA/blobs/ID
  bool owns_memory = false;
};

// How the live VMM got its memory.
enum class MemorySource { kBoot, kFile, kUffd };
const char* MemorySourceName(MemorySource s);

struct VmmRecord {
  ProcessIdentity process;
  std::string api_socket;
  MemorySource memory_source = MemorySource::kBoot;
  std::string pager_session;  // set for kUffd
  std::string backing_blob;   // the blob the VMM's memory came from (kFile, kUffd)
};

struct InstanceMetadata {
  std::string name;
  InstanceState state = InstanceState::kCreated;  // what was last recorded
  uint32_t vcpu_count = 0;
  uint64_t mem_size_mib = 0;
  std::string forked_from;
  std::optional<SnapshotRecord> snapshot;
  std::optional<VmmRecord> vmm;  // while Running/Paused
  // The next restore goes through a pager session over memory_blob; cleared
  // only after one succeeded.
  bool one_shot_uffd = false;
  // The VMM's dirty log is no base for a Diff (fresh boot, or a Full
  // snapshot taken for a fork reset it): the next standby writes Full.
  bool needs_full_snapshot = true;

  nlohmann::json ToJson() const;
  static Result<InstanceMetadata> FromJson(const nlohmann::json& j);
};

// Instance names become directory names and pager session ids.
Status ValidateInstanceName(const std::string& name);

}  // namespace uffdpager::lifecycle
