#include "lifecycle/data_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

namespace uffdpager::lifecycle {

Result<DataDirLock> DataDirLock::Acquire(const std::string& data_dir) {
  std::string path = data_dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  while (::flock(fd.get(), LOCK_EX) < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "lock " + path);
  }
  return DataDirLock(std::move(fd));
}

}  // namespace uffdpager::lifecycle
