#include "common/durable_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "common/unique_fd.h"

namespace uffdpager {

namespace {

std::string ParentOf(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
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
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "read " + path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      return Status::InvalidArgument(path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  return out;
}

}  // namespace uffdpager
