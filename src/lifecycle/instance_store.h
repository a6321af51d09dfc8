// InstanceStore: the data directory's layout and the instances in it.
//
//   DATA/config.json              DataDirConfig
//   DATA/lock                     DataDirLock
//   DATA/instances/NAME/          one folder per instance:
//       instance.json             InstanceMetadata (atomic writes)
//       snapshot/                 the VM state files (no memory: see blobs)
//       api.sock, vmm.log         the running VMM's API socket and output
//   DATA/instances/.staging-NAME/ a fork or an import being built; renamed into place
//   DATA/blobs/ID                 memory files; live while metadata names them
//                                 (a chain may also name s3:// objects: not here)
//   DATA/journal/NAME.json        the operation in flight on NAME
//   DATA/compactions/BLOB.json    a compaction in flight (CompactionRecords)
//   DATA/compactions/compact.log  the output of background compactions
//   DATA/trash/                   instance folders being deleted
//   DATA/uffd/VERSION/            the pager's own files
#pragma once

#include <set>
#include <string>
#include <vector>

#include "lifecycle/instance_metadata.h"
#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

class InstanceStore {
 public:
  explicit InstanceStore(std::string data_dir) : data_dir_(std::move(data_dir)) {}

  // Creates the folders that every command expects.
  Status Prepare() const;

  const std::string& data_dir() const { return data_dir_; }
  std::string InstanceDir(const std::string& name) const { return data_dir_ + "/instances/" + name; }
  std::string MetadataPath(const std::string& name) const { return InstanceDir(name) + "/instance.json"; }
  std::string SnapshotDir(const std::string& name) const { return InstanceDir(name) + "/snapshot"; }
  std::string StateFilePath(const std::string& name, const std::string& file) const {
    return SnapshotDir(name) + "/" + file;
  }
  std::string ApiSocketPath(const std::string& name) const { return InstanceDir(name) + "/api.sock"; }
  std::string VmmLogPath(const std::string& name) const { return InstanceDir(name) + "/vmm.log"; }
  std::string StagingDir(const std::string& name) const { return data_dir_ + "/instances/.staging-" + name; }
  std::string BlobPath(const std::string& id) const { return data_dir_ + "/blobs/" + id; }
  // Where each layer of `chain` is, in order: a blob's path, an object's
  // URL as it is (the pager reads both).
  std::vector<std::string> BlobPaths(const LayerChain& chain) const {
    std::vector<std::string> out;
    for (const auto& layer : chain) out.push_back(IsObjectLayer(layer) ? layer : BlobPath(layer));
    return out;
  }
  std::string JournalDir() const { return data_dir_ + "/journal"; }
  std::string CompactionsDir() const { return data_dir_ + "/compactions"; }
  std::string CompactionLogPath() const { return CompactionsDir() + "/compact.log"; }

  // A fresh blob id; the blob does not exist yet.
  std::string NewBlobId() const;
  // A fresh state file name for NAME's next snapshot.
  static std::string NewStateFileName();

  // Whether NAME's folder has an instance.json, readable or not.
  bool Exists(const std::string& name) const;
  // kNotFound if there is no instance.json. Metadata is read only through
  // ReadRegularFile (no symlink, FIFO or device; at most 1 MiB), and
  // metadata whose "name" is not its folder's is refused: every such error
  // names the file and what was wrong with it.
  Result<InstanceMetadata> Load(const std::string& name) const;
  Status Save(const InstanceMetadata& metadata) const;
  // Writes metadata into a folder that is not (yet) the instance's own.
  Status SaveInto(const std::string& dir, const InstanceMetadata& metadata) const;
  Result<std::vector<std::string>> Names() const;
  // Moves the folder to the trash (one atomic rename), then removes it.
  Status Remove(const std::string& name) const;
  // Empties the trash and drops staging folders (called after the journal
  // has been replayed), except those of the instances `left_alone`, whose
  // journal records could not be replayed.
  void SweepLeftovers(const std::set<std::string>& left_alone) const;

 private:
  std::string data_dir_;
};

}  // namespace uffdpager::lifecycle
