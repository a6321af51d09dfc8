#include "common/durable_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/unique_fd.h"

namespace uffdpager {

namespace {

std::string ParentOf(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// Reads `fd` to its end into a string or a byte vector (one loop for both);
// more than `max_bytes` is an error (a file that grows while it is read, or a
// /proc file whose size is not known ahead).
template <typename Bytes>
Result<Bytes> ReadToEnd(int fd, const std::string& path, size_t max_bytes) {
  Bytes out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) <= max_bytes) {
    out.reserve(static_cast<size_t>(st.st_size));  // one allocation for a file that stays its size
  }
  // Of the container's own element type: the insert below is then one
  // memmove, not a byte-by-byte conversion (which sanitizer builds at -O0
  // make seconds long for a memory file).
  typename Bytes::value_type buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "read " + path);
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
    if (out.size() > max_bytes) {
      return Status::InvalidArgument(path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  return out;
}

template <typename Bytes>
Result<Bytes> OpenAndReadToEnd(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  return ReadToEnd<Bytes>(fd.get(), path, max_bytes);
}

}  // namespace

Status SyncDirectory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open directory " + dir);
  if (::fsync(fd.get()) < 0) return Status::FromErrno(errno, "fsync directory " + dir);
  return Status::Ok();
}

Status RenameDurably(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) < 0) return Status::FromErrno(errno, "rename " + from + " to " + to);
  UFFD_RETURN_IF_ERROR(SyncDirectory(ParentOf(to)));
  if (ParentOf(from) != ParentOf(to)) return SyncDirectory(ParentOf(from));
  return Status::Ok();
}

Status WriteFileAtomically(const std::string& path, const std::string& contents, Durability durability) {
  // The temporary name is unique per process so two writers never share it;
  // a crash leaves at most a "*.tmp.PID" file that nothing ever reads.
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return Status::FromErrno(errno, "create " + tmp);
    const char* p = contents.data();
    size_t left = contents.size();
    while (left > 0) {
      ssize_t n = ::write(fd.get(), p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Status st = Status::FromErrno(errno, "write " + tmp);
        ::unlink(tmp.c_str());
        return st;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    if (durability == Durability::kPowerLoss && ::fsync(fd.get()) < 0) {
      Status st = Status::FromErrno(errno, "fsync " + tmp);
      ::unlink(tmp.c_str());
      return st;
    }
  }
  if (durability == Durability::kPowerLoss) return RenameDurably(tmp, path);
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    Status st = Status::FromErrno(errno, "rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return st;
  }
  return Status::Ok();
}

Result<std::string> ReadWholeFile(const std::string& path, size_t max_bytes) {
  return OpenAndReadToEnd<std::string>(path, max_bytes);
}

Result<std::vector<uint8_t>> ReadWholeFileBytes(const std::string& path, size_t max_bytes) {
  return OpenAndReadToEnd<std::vector<uint8_t>>(path, max_bytes);
}

const char* FileTypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFLNK: return "a symbolic link";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    default: return "of an unknown type";
  }
}

Result<std::string> ReadRegularFile(const std::string& path, size_t max_bytes) {
  // O_NOCTTY: a terminal put there must not become ours by being opened.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
  if (!fd) {
    const int error = errno;
    struct stat link {};
    if (error == ELOOP && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
      return Status::InvalidArgument(path + " is a symbolic link, which is not followed here; it was not read");
    }
    return Status::FromErrno(error, "open " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "fstat " + path);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(path + " is not a regular file (it is " + FileTypeName(st.st_mode) +
                                   "); it was not read");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Status::InvalidArgument(path + " is " + std::to_string(st.st_size) + " bytes, more than the " +
                                   std::to_string(max_bytes) + " such a file may hold; it was not read");
  }
  // Regular files never block; the flag only had to keep the open itself
  // from blocking.
  (void)::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return ReadToEnd<std::string>(fd.get(), path, max_bytes);
}

}  // namespace uffdpager
