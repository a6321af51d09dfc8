#include "lifecycle/snapshot_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "common/durable_file.h"
#include "common/file_extents.h"
#include "common/object_url.h"
#include "common/unique_fd.h"

namespace uffdpager::lifecycle {

namespace {

// Copies [offset, offset+len) with copy_file_range, falling back to
// read/write where the kernel refuses (cross-device on old kernels).
Status CopyRange(int in, int out, uint64_t offset, uint64_t len, const std::string& what) {
  while (len > 0) {
    loff_t in_off = static_cast<loff_t>(offset), out_off = static_cast<loff_t>(offset);
    ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
      char buf[1 << 16];
      ssize_t r = ::pread(in, buf, std::min<uint64_t>(len, sizeof(buf)), static_cast<off_t>(offset));
      if (r <= 0) return Status::FromErrno(r < 0 ? errno : EIO, "read " + what);
      ssize_t w = ::pwrite(out, buf, static_cast<size_t>(r), static_cast<off_t>(offset));
      if (w != r) return Status::FromErrno(w < 0 ? errno : EIO, "write copy of " + what);
      n = r;
    } else if (n < 0) {
      return Status::FromErrno(errno, "copy_file_range " + what);
    } else if (n == 0) {
      return Status::Error(ErrorCode::kIoError, what + " ended early while copying");
    }
    offset += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// Copies the data extents of `in` below `size` to the same offsets of
// `out`, leaving the rest of `out` as it is. Returns the bytes copied.
Result<uint64_t> CopyDataExtents(int in, int out, uint64_t size, const std::string& what) {
  auto extents = FileDataExtents(in, size, what);
  if (!extents.ok()) return extents.status();
  uint64_t copied = 0;
  for (const auto& [start, end] : *extents) {
    UFFD_RETURN_IF_ERROR(CopyRange(in, out, start, end - start, what));
    copied += end - start;
  }
  return copied;
}

}  // namespace

Result<CopyReport> CopyFileCheaply(const std::string& from, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Status::FromErrno(errno, "open " + from);
  struct stat st {};
  if (::fstat(in.get(), &st) < 0) return Status::FromErrno(errno, "stat " + from);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out) return Status::FromErrno(errno, "create " + to);
  CopyReport report;
  auto fail = [&](Status st) {
    ::unlink(to.c_str());
    return st;
  };
  if (::ioctl(out.get(), FICLONE, in.get()) == 0) {
    report.reflinked = true;
  } else {
    // No reflink here (EOPNOTSUPP, EXDEV, EINVAL): copy the data extents;
    // the holes stay holes.
    if (::ftruncate(out.get(), st.st_size) < 0) return fail(Status::FromErrno(errno, "size " + to));
    auto copied = CopyDataExtents(in.get(), out.get(), static_cast<uint64_t>(st.st_size), from);
    if (!copied.ok()) return fail(copied.status());
    report.bytes_copied = *copied;
  }
  if (::fsync(out.get()) < 0) return fail(Status::FromErrno(errno, "fsync " + to));
  return report;
}

Result<CopyReport> MergeLayers(const std::vector<std::string>& layers, const std::string& to) {
  if (layers.empty()) return Status::InvalidArgument("no layers to merge into " + to);
  for (const auto& layer : layers) {
    if (IsObjectUrl(layer)) {
      return Status::Conflict("layer " + layer + " is in object storage: a chain with such a layer is not merged here");
    }
  }
  auto report = CopyFileCheaply(layers.front(), to);
  if (!report.ok() || layers.size() == 1) return report;
  auto fail = [&](Status st) {
    ::unlink(to.c_str());
    return st;
  };
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CLOEXEC));
  if (!out) return fail(Status::FromErrno(errno, "open " + to));
  struct stat base {};
  if (::fstat(out.get(), &base) < 0) return fail(Status::FromErrno(errno, "stat " + to));
  for (size_t i = 1; i < layers.size(); ++i) {
    UniqueFd in(::open(layers[i].c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) return fail(Status::FromErrno(errno, "open " + layers[i]));
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) return fail(Status::FromErrno(errno, "stat " + layers[i]));
    if (st.st_size != base.st_size) {
      return fail(Status::InvalidArgument("layer " + layers[i] + " has " + std::to_string(st.st_size) +
                                          " bytes, its base " + layers.front() + " " + std::to_string(base.st_size)));
    }
    auto copied = CopyDataExtents(in.get(), out.get(), static_cast<uint64_t>(st.st_size), layers[i]);
    if (!copied.ok()) return fail(copied.status());
    report->bytes_copied += *copied;
  }
  if (::fsync(out.get()) < 0) return fail(Status::FromErrno(errno, "fsync " + to));
  return report;
}

Status CopySnapshotDirectory(const std::string& from_dir, const std::string& to_dir) {
  std::error_code ec;
  std::filesystem::create_directories(to_dir, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + to_dir);
  for (const auto& entry : std::filesystem::directory_iterator(from_dir, ec)) {
    std::string name = entry.path().filename().string();
    // symlink_status: a socket or a link is never followed or copied.
    auto type = entry.symlink_status(ec).type();
    if (type != std::filesystem::file_type::regular) continue;
    if (name.rfind("memory", 0) == 0) continue;
    if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".sock") == 0) continue;
    if (name.find(".tmp.") != std::string::npos) continue;  // never a half-written file
    auto copied = CopyFileCheaply(entry.path().string(), to_dir + "/" + name);
    if (!copied.ok()) return copied.status();
  }
  if (ec) return Status::FromErrno(ec.value(), "list " + from_dir);
  return SyncDirectory(to_dir);
}

}  // namespace uffdpager::lifecycle
