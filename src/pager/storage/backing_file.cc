#include "pager/storage/backing_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/file_extents.h"
#include "pager/storage/positional_io.h"

namespace uffdpager {

std::string FileIdentity::ToString() const {
  return fmt::format("{}:{}:{}:{}", static_cast<uint64_t>(device), static_cast<uint64_t>(inode), size, mtime_ns);
}

namespace {

// What a file that is not a regular file is, for the refusal.
const char* FileTypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFDIR: return "a directory";
    case S_IFLNK: return "a symbolic link";
    default: return "of an unknown type";
  }
}

Status NotARegularFile(const std::string& path, mode_t mode) {
  return Status::InvalidArgument(
      fmt::format("backing memory file {} is not a regular file (it is {})", path, FileTypeName(mode)));
}

}  // namespace

Result<std::shared_ptr<BackingFile>> BackingFile::Open(const std::string& path) {
  return Open(path, [&path]() -> Result<UniqueFd> {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) return Status::FromErrno(errno, "open backing memory file " + path);
    return fd;
  });
}

Result<std::shared_ptr<BackingFile>> BackingFile::Open(const std::string& path, const Resolver& resolve) {
  // Found first, opening nothing (O_PATH): what is not a regular file is
  // refused before any open for reading could block (a FIFO) or act (a
  // device's driver).
  auto found = resolve();
  if (!found.ok()) return found.status();
  struct stat st {};
  if (::fstat(found->get(), &st) != 0) return Status::FromErrno(errno, "stat backing memory file " + path);
  if (!S_ISREG(st.st_mode)) return NotARegularFile(path, st.st_mode);
  // Then that very inode is opened for reading through its /proc link: the
  // path is not looked up again. Still O_NONBLOCK, and checked again, in
  // case what was found is not what opened; O_NOCTTY: a terminal never
  // becomes ours.
  const std::string link = "/proc/self/fd/" + std::to_string(found->get());
  UniqueFd fd(::open(link.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) {
      return Status::Error(ErrorCode::kIoError,
                           "open backing memory file " + path + ": /proc/self/fd is missing (is /proc mounted?)");
    }
    return Status::FromErrno(errno, "open backing memory file " + path);
  }
  struct stat opened {};
  if (::fstat(fd.get(), &opened) != 0) return Status::FromErrno(errno, "stat backing memory file " + path);
  if (!S_ISREG(opened.st_mode)) return NotARegularFile(path, opened.st_mode);
  // Reads must wait for their bytes (a FUSE or network file system may
  // honour the flag and answer EAGAIN).
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return Status::FromErrno(errno, "clear O_NONBLOCK on backing memory file " + path);
  }
  // The pager decides what it reads: its reads are the pages it installs
  // (and the runs it chose to read), never readahead the kernel adds around
  // them (8 MiB per miss with this host's disks). Prefetch and completion
  // read large runs of their own.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  FileIdentity id{opened.st_dev, opened.st_ino, static_cast<uint64_t>(opened.st_size),
                  static_cast<int64_t>(opened.st_mtim.tv_sec) * 1000000000LL + opened.st_mtim.tv_nsec};
  std::shared_ptr<BackingFile> file(new BackingFile(path, std::move(fd), id));
  file->MapExtents();
  return file;
}

Result<std::shared_ptr<BackingFile>> BackingFile::OpenFilled(const std::string& local_path, std::string name,
                                                             std::string identity, std::shared_ptr<RangeFiller> filler,
                                                             std::optional<DataExtents> data_extents) {
  auto file = Open(local_path);
  if (!file.ok()) return file.status();
  BackingFile& f = **file;
  f.path_ = std::move(name);
  f.identity_text_ = std::move(identity);
  f.filler_ = std::move(filler);
  // Unfetched chunks are holes of the local file but not zeros: only a page
  // map tells where the data is.
  if (data_extents) {
    f.data_extents_ = std::move(*data_extents);
  } else {
    f.data_extents_.assign({{0, f.identity_.size}});
  }
  return file;
}

void BackingFile::MapExtents() {
  auto extents = FileDataExtents(fd_.get(), identity_.size, path_);
  // Cannot tell: all data, which is never wrong.
  data_extents_ = extents.ok() ? std::move(*extents) : DataExtents{{0, identity_.size}};
}

Status BackingFile::EnsureRange(uint64_t offset, uint64_t length) const {
  if (!filler_ || length == 0) return Status::Ok();
  const uint64_t end = offset + length;
  // The extent holding the range's last byte, if any.
  auto it = ExtentEndingAfter(end - 1);
  const uint64_t readahead_end = it != data_extents_.end() && it->first < end ? std::max(it->second, end) : end;
  return filler_->EnsureRange(offset, length, readahead_end);
}

DataExtents::const_iterator BackingFile::ExtentEndingAfter(uint64_t offset) const {
  return std::upper_bound(data_extents_.begin(), data_extents_.end(), offset,
                          [](uint64_t off, const auto& extent) { return off < extent.second; });
}

bool BackingFile::IsHole(uint64_t offset, uint64_t length) const {
  // A hole if the first extent ending after `offset` begins at or past the range's end.
  auto it = ExtentEndingAfter(offset);
  return it == data_extents_.end() || it->first >= offset + length;
}

Status BackingFile::TruncatedError(uint64_t offset, uint64_t length) const {
  return Status::Error(ErrorCode::kIoError, fmt::format("{} ends before offset {} (wanted {} bytes; was it truncated?)",
                                                        path_, offset, length));
}

Status BackingFile::ReadExact(uint64_t offset, void* buffer, size_t length) const {
  UFFD_RETURN_IF_ERROR(EnsureRange(offset, length));
  auto done = PreadUpTo(fd_.get(), buffer, length, offset, path_);
  if (!done.ok()) return done.status();
  if (*done < length) return TruncatedError(offset + *done, length);
  return Status::Ok();
}

}  // namespace uffdpager
