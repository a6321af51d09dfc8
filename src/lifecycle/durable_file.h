// Durable files: what the lifecycle trusts after a crash must have been
// written completely or not at all. A file is written to a temporary name,
// fsync'd, renamed over the final name, and the directory fsync'd, so a
// reader sees the old contents or the new ones, never a mix.
#pragma once

#include <string>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

Status WriteFileAtomically(const std::string& path, const std::string& contents);
Result<std::string> ReadWholeFile(const std::string& path);
// Makes a rename or unlink in `dir` durable.
Status SyncDirectory(const std::string& dir);
// rename(2) plus the fsync of the target's directory.
Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace uffdpager::lifecycle
