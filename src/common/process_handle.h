// ProcessHandle: a pidfd, a reference to one process that cannot be confused
// with a later process reusing its pid. Tells when the process exits (the fd
// turns readable) and can signal it.
#pragma once

#include <sys/types.h>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

class ProcessHandle {
 public:
  ProcessHandle() = default;
  static Result<ProcessHandle> Open(pid_t pid);
  // Takes a pidfd opened elsewhere (kept across a restart or handed over).
  static ProcessHandle Adopt(UniqueFd pidfd, pid_t pid) { return ProcessHandle(std::move(pidfd), pid); }

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  pid_t pid() const { return pid_; }
  Status Signal(int signal) const;
  // Gives up the pidfd (to park it in the fd store or hand it over).
  UniqueFd TakeFd() { return std::move(fd_); }

 private:
  ProcessHandle(UniqueFd fd, pid_t pid) : fd_(std::move(fd)), pid_(pid) {}
  UniqueFd fd_;
  pid_t pid_ = 0;
};

}  // namespace uffdpager
