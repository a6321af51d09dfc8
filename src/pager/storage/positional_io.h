// Whole reads and writes at an offset (pread/pwrite until done, EINTR
// retried), for the pager's own files: compact working sets and the object
// disk tier.
#pragma once

#include <cstdint>
#include <string>

#include "uffdpager/status.h"

namespace uffdpager {

// Writes `length` bytes at `offset`; errors name `what` (the file).
Status PwriteAll(int fd, const void* data, uint64_t length, uint64_t offset, const std::string& what);

// Reads `length` bytes at `offset`, or fewer where the file ends first: the
// count read.
Result<uint64_t> PreadUpTo(int fd, void* data, uint64_t length, uint64_t offset, const std::string& what);

// Reads exactly `length` bytes at `offset`. The file ending first is
// kInvalidArgument "`what` ends before byte N" (a file shorter than the
// caller's own header says).
Status PreadAll(int fd, void* data, uint64_t length, uint64_t offset, const std::string& what);

}  // namespace uffdpager
