#include "pager/access/backing_path_policy.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace uffdpager {

namespace {

std::string WithoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

Result<BackingPathPolicy> BackingPathPolicy::Create(const std::vector<std::string>& allowed_roots) {
  BackingPathPolicy policy;
  for (const auto& configured : allowed_roots) {
    std::string path = WithoutTrailingSlashes(configured);
    if (path.empty() || path[0] != '/') {
      return Status::InvalidArgument("--allowed-backing-root \"" + configured + "\" must be an absolute path");
    }
    UniqueFd dir(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return Status::FromErrno(errno, "open --allowed-backing-root " + path);
    policy.roots_.push_back(Root{std::move(path), std::move(dir)});
  }
  return policy;
}

std::string BackingPathPolicy::DescribeRoots() const {
  std::string out;
  for (const auto& root : roots_) out += (out.empty() ? "" : ", ") + root.path;
  return out;
}

Result<UniqueFd> BackingPathPolicy::OpenBeneath(const Root& root, const std::string& relative,
                                                const std::string& path) const {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, root.dir.get(), relative.c_str(), &how, sizeof(how));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == EINTR || errno == EAGAIN) continue;
    if (errno == EXDEV || errno == ELOOP) {
      return Status::PermissionDenied(
          fmt::format("backing memory path {} leads outside the allowed root {}", path, root.path));
    }
    return Status::FromErrno(errno, "open backing memory file " + path);
  }
}

Result<std::shared_ptr<BackingFile>> BackingPathPolicy::Open(const std::string& path) const {
  if (roots_.empty()) return BackingFile::Open(path);
  for (const auto& root : roots_) {
    std::string prefix = root.path == "/" ? "/" : root.path + "/";
    if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) continue;
    auto fd = OpenBeneath(root, path.substr(prefix.size()), path);
    if (!fd.ok()) return fd.status();
    // BackingFile opens by path; handing it our fd's /proc entry reopens
    // exactly the inode we resolved beneath the root, never a new lookup of
    // `path`.
    auto file = BackingFile::Open("/proc/self/fd/" + std::to_string(fd->get()));
    if (!file.ok()) return file.status().WithContext("backing memory file " + path);
    return file;
  }
  return Status::PermissionDenied(
      fmt::format("backing memory path {} is not beneath an allowed backing root ({})", path, DescribeRoots()));
}

}  // namespace uffdpager
