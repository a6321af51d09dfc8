#include "pager/storage/backing_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace uffdpager {

std::string FileIdentity::ToString() const {
  return fmt::format("{}:{}:{}:{}", static_cast<uint64_t>(device), static_cast<uint64_t>(inode), size, mtime_ns);
}

Result<std::shared_ptr<BackingFile>> BackingFile::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open backing memory file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat backing memory file " + path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("backing memory file " + path + " is not a regular file");
  FileIdentity id{st.st_dev, st.st_ino, static_cast<uint64_t>(st.st_size),
                  static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
  // The pager decides what it reads: its reads are the pages it installs
  // (and the runs it chose to read), never readahead the kernel adds around
  // them (8 MiB per miss with this host's disks). Prefetch and completion
  // read large runs of their own.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  std::shared_ptr<BackingFile> file(new BackingFile(path, std::move(fd), id));
  file->MapExtents();
  return file;
}

void BackingFile::MapExtents() {
  const off_t size = static_cast<off_t>(identity_.size);
  off_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;                    // only a hole from `pos` to the end
      data_extents_.assign({{0, identity_.size}});  // cannot tell: all data
      return;
    }
    off_t hole = ::lseek(fd_.get(), data, SEEK_HOLE);
    if (hole < 0) hole = size;
    data_extents_.emplace_back(static_cast<uint64_t>(data), static_cast<uint64_t>(hole));
    pos = hole;
  }
}

bool BackingFile::IsHole(uint64_t offset, uint64_t length) const {
  bool hole = true;
  ForEachDataPiece(offset, length, [&hole](uint64_t, uint64_t) { hole = false; });
  return hole;
}

Status BackingFile::TruncatedError(uint64_t offset, uint64_t length) const {
  return Status::Error(ErrorCode::kIoError, fmt::format("{} ends before offset {} (wanted {} bytes; was it truncated?)",
                                                        path_, offset, length));
}

Status BackingFile::ReadExact(uint64_t offset, void* buffer, size_t length) const {
  auto* out = static_cast<uint8_t*>(buffer);
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd_.get(), out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("read {} bytes at offset {} of {}", length, offset, path_));
    }
    if (n == 0) return TruncatedError(offset + done, length);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status BackingFile::ReadRange(uint64_t offset, void* buffer, size_t length, uint64_t* bytes_read) const {
  auto* out = static_cast<uint8_t*>(buffer);
  uint64_t pos = offset;  // everything before it is filled
  Status status;
  ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t end) {
    if (!status.ok()) return;
    std::memset(out + (pos - offset), 0, start - pos);  // a hole: zeros, nothing to read
    status = ReadExact(start, out + (start - offset), end - start);
    if (status.ok()) *bytes_read += end - start;
    pos = end;
  });
  if (!status.ok()) return status;
  std::memset(out + (pos - offset), 0, offset + length - pos);
  return Status::Ok();
}

}  // namespace uffdpager
