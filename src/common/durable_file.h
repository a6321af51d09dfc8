// Durable files: what the lifecycle, tinyvmm's state files and the pager's
// working-set records trust after a crash must have been
// written completely or not at all. A file is written to a temporary name,
// fsync'd, renamed over the final name, and the directory fsync'd, so a
// reader sees the old contents or the new ones, never a mix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

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
// an error rather than an allocation the caller did not plan for.
Result<std::string> ReadWholeFile(const std::string& path, size_t max_bytes = SIZE_MAX);
// Makes a rename or unlink in `dir` durable.
Status SyncDirectory(const std::string& dir);
// rename(2) plus the fsync of the target's directory.
Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace uffdpager
