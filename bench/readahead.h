// The readahead of the block device behind a file, which decides how much a
// cold read of that file really fetches: Linux reads `read_ahead_kb` around
// a faulting page of a file mapping, and opening a file copies the device's
// value into the file's own readahead state. restore_bench's cold section
// sets it per variant and ALWAYS puts the device's original value back: when
// the override ends, when the benchmark fails (destructor), on SIGINT,
// SIGTERM, SIGHUP, SIGQUIT and on crashes (signal handlers), and when a
// Deadline gives up (RestoreReadaheadNow before its _exit).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager::bench {

// Linux's default readahead (VM_READAHEAD_PAGES), for comparison with the
// device's own.
inline constexpr uint64_t kLinuxDefaultReadaheadKib = 128;

struct ReadaheadDevice {
  std::string disk;        // "vda", "nvme0n1", "dm-0"
  std::string sysfs_path;  // /sys/devices/.../block/<disk>/queue/read_ahead_kb
  std::string node;        // /dev/<disk>, for BLKRAGET/BLKRASET (may not open: device cgroups)
  uint64_t original_kib = 0;
};

// The device whose readahead applies to reads of `path`: /sys/dev/block/
// MAJ:MIN of the file's st_dev, walked up from a partition to the disk that
// has a queue/read_ahead_kb (a device-mapper or md device has its own).
// NotFound when the filesystem has no block device (tmpfs, overlayfs, btrfs'
// anonymous st_dev, network filesystems).
Result<ReadaheadDevice> FindReadaheadDevice(const std::string& path);

// One device's readahead under the benchmark's control. At most one exists
// at a time (the signal handlers restore exactly one device).
//
// Setting: read_ahead_kb in sysfs, the same knob `blockdev --setra` turns
// through BLKRASET (both are the disk's bdi->ra_pages; BLKRASET counts 512-byte
// sectors). When the device node opens, BLKRAGET cross-checks every value
// written; where only the node is writable (sysfs read-only), BLKRASET sets it.
// Not thread-safe; the signal path only reads what Take wrote before arming.
class ReadaheadOverride {
 public:
  // Checks that the value can be written (by writing the original back) and
  // arms the restore on signals and exits. PermissionDenied without root or
  // with a read-only /sys and no usable device node.
  // REQUIRES: no other ReadaheadOverride alive.
  static Result<std::unique_ptr<ReadaheadOverride>> Take(const ReadaheadDevice& device);
  ~ReadaheadOverride();  // Restore(), then disarms

  ReadaheadOverride(const ReadaheadOverride&) = delete;
  ReadaheadOverride& operator=(const ReadaheadOverride&) = delete;

  // Sets `kib` (a multiple of 4) and reads it back.
  Status Set(uint64_t kib);
  // Puts the original value back and reads it back.
  Status Restore();

  uint64_t original_kib() const { return device_.original_kib; }

  // What was found and how it is set, for the JSON: device, paths, the
  // original value, and why BLKRAGET/BLKRASET were not used if they were not.
  nlohmann::json Describe() const;

 private:
  explicit ReadaheadOverride(ReadaheadDevice device);
  Status Write(uint64_t kib);
  Result<uint64_t> ReadBack() const;

  ReadaheadDevice device_;
  UniqueFd node_;          // the device node opened read-only, if it opens
  std::string node_note_;  // why the node is not used, when it is not
  bool sysfs_writable_ = false;
  bool armed_ = false;  // Take finished: the signal handlers are ours
};

// Writes the original readahead back if an override is armed. Async-signal-
// safe (open/write/ioctl/close on values prepared by Take): for the signal
// handlers and for exits that skip destructors.
void RestoreReadaheadNow();

}  // namespace uffdpager::bench
