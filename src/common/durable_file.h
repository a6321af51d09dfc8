// Durable files: what the lifecycle, tinyvmm's state files and the pager's
// working-set records trust after a crash must have been
// written completely or not at all. A file is written to a temporary name,
// fsync'd, renamed over the final name, and the directory fsync'd, so a
// reader sees the old contents or the new ones, never a mix.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

// What a written file must survive. The pager's session records only need to
// outlive the pager process (a host crash takes the VMs with it), and they are
// written on the restore path, where an fsync costs milliseconds.
enum class Durability {
  kPowerLoss,     // fsync the file and its directory
  kProcessCrash,  // rename only: the page cache keeps it if the writer dies
};

Status WriteFileAtomically(const std::string& path, const std::string& contents,
                           Durability durability = Durability::kPowerLoss);
// Reads a file that is expected to be small; one larger than `max_bytes` is
// an error rather than an allocation the caller did not plan for. Follows
// symlinks and reads whatever is there: for /proc and paths a user names.
Result<std::string> ReadWholeFile(const std::string& path, size_t max_bytes = SIZE_MAX);
// The same as bytes, for memory images compared or walked byte by byte.
// Copied with one memcpy: an element-wise copy is a checked load per byte
// under TSan, minutes for a guest's memory.
Result<std::vector<uint8_t>> ReadWholeFileBytes(const std::string& path, size_t max_bytes = SIZE_MAX);

// What the lifecycle's metadata and journal files, and the pager's own
// records, may hold: far more than any of them needs.
inline constexpr size_t kMaxMetadataBytes = 1 << 20;

// Reads a file this program wrote itself and trusts (metadata, journal
// records, session records, working sets), refusing anything else that may
// have been put at `path`: a symlink is not followed (O_NOFOLLOW), the open
// never blocks (O_NONBLOCK: a FIFO with no writer), and anything but a
// regular file (FIFO, device, socket, directory) is refused before a byte is
// read, as is a file larger than `max_bytes`. Errors name the path and say
// what was found there; a missing file is kNotFound (errno ENOENT).
Result<std::string> ReadRegularFile(const std::string& path, size_t max_bytes = kMaxMetadataBytes);

// "a FIFO", "a character device", ... for messages about a file's type.
const char* FileTypeName(mode_t mode);
// Makes a rename or unlink in `dir` durable.
Status SyncDirectory(const std::string& dir);
// rename(2) plus the fsync of the target's directory.
Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace uffdpager
