#include "common/file_extents.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace uffdpager {

Result<DataExtents> FileDataExtents(int fd, uint64_t size, const std::string& what) {
  DataExtents extents;
  for (uint64_t at = 0; at < size;) {
    off_t data = ::lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
      // No SEEK_DATA here: every byte counts as data.
      return DataExtents{{0, size}};
    }
    if (data < 0) return Status::FromErrno(errno, "SEEK_DATA in " + what);
    if (static_cast<uint64_t>(data) >= size) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return Status::FromErrno(errno, "SEEK_HOLE in " + what);
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(hole), size);
    extents.emplace_back(static_cast<uint64_t>(data), end);
    at = end;
  }
  return extents;
}

}  // namespace uffdpager
