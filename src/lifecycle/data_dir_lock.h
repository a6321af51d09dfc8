// DataDirLock: one lifecycle command at a time per data directory (flock on
// DATA/lock). Held for a whole command, recovery included, so recovery never
// mistakes another live command's work for a crashed one. The fd is
// O_CLOEXEC: the VMMs a command starts never inherit the lock.
#pragma once

#include <string>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

class DataDirLock {
 public:
  static Result<DataDirLock> Acquire(const std::string& data_dir);

 private:
  explicit DataDirLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the lock
};

}  // namespace uffdpager::lifecycle
