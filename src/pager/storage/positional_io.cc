#include "pager/storage/positional_io.h"

#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace uffdpager {

Status PwriteAll(int fd, const void* data, uint64_t length, uint64_t offset, const std::string& what) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = ::pwrite(fd, p + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("write {} bytes at offset {} of {}", length, offset, what));
    }
    done += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Result<uint64_t> PreadUpTo(int fd, void* data, uint64_t length, uint64_t offset, const std::string& what) {
  auto* p = static_cast<uint8_t*>(data);
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, p + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("read {} bytes at offset {} of {}", length, offset, what));
    }
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  return done;
}

Status PreadAll(int fd, void* data, uint64_t length, uint64_t offset, const std::string& what) {
  auto done = PreadUpTo(fd, data, length, offset, what);
  if (!done.ok()) return done.status();
  if (*done < length) return Status::InvalidArgument(fmt::format("{} ends before byte {}", what, offset + length));
  return Status::Ok();
}

}  // namespace uffdpager
