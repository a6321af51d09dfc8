#include "common/process_handle.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <string>

namespace uffdpager {

Result<ProcessHandle> ProcessHandle::Open(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return Status::FromErrno(errno, "pidfd_open " + std::to_string(pid));
  return ProcessHandle(UniqueFd(fd), pid);
}

Status ProcessHandle::Signal(int signal) const {
  if (::syscall(SYS_pidfd_send_signal, fd_.get(), signal, nullptr, 0) != 0) {
    return Status::FromErrno(errno, "signal " + std::to_string(signal) + " to pid " + std::to_string(pid_));
  }
  return Status::Ok();
}

}  // namespace uffdpager
