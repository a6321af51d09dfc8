#include "pager/access/backing_path_policy.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string_view>

namespace uffdpager {

namespace {

std::string WithoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// `path` with empty and "." components folded away: "/a//b/./c" is
// "/a/b/c". ".." is kept (what it means depends on symlinks; the kernel
// judges it during the one resolution). A path ending in "/" or "/." still
// ends in "/", which names a directory, as before.
std::string WithoutEmptyAndDotComponents(const std::string& path) {
  std::string out = !path.empty() && path[0] == '/' ? "/" : "";
  bool names_a_directory = false;
  size_t i = 0;
  while (i < path.size()) {
    size_t end = path.find('/', i);
    if (end == std::string::npos) end = path.size();
    std::string_view component(path.data() + i, end - i);
    names_a_directory = component.empty() || component == ".";
    if (!names_a_directory) {
      if (!out.empty() && out.back() != '/') out += '/';
      out += component;
    }
    i = end + 1;
  }
  if (names_a_directory && !out.empty() && out.back() != '/') out += '/';
  return out;
}

}  // namespace

Result<BackingPathPolicy> BackingPathPolicy::Create(const std::vector<std::string>& allowed_roots) {
  BackingPathPolicy policy;
  for (const auto& configured : allowed_roots) {
    std::string path = WithoutTrailingSlashes(WithoutEmptyAndDotComponents(configured));
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

Result<UniqueFd> BackingPathPolicy::FindBeneath(const Root& root, const std::string& relative,
                                                const std::string& path) const {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a rename or mount raced the resolution of "..". Retried a few
  // times only, so that nothing can keep this thread here.
  for (int again = 0;;) {
    long fd = ::syscall(SYS_openat2, root.dir.get(), relative.c_str(), &how, sizeof(how));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == EINTR || (errno == EAGAIN && ++again < 16)) continue;
    if (errno == EXDEV || errno == ELOOP) {
      return Status::PermissionDenied(
          fmt::format("backing memory path {} leads outside the allowed root {}", path, root.path));
    }
    return Status::FromErrno(errno, "open backing memory file " + path);
  }
}

Result<std::shared_ptr<BackingFile>> BackingPathPolicy::Open(const std::string& path) const {
  if (roots_.empty()) return BackingFile::Open(path);
  const std::string normal = WithoutEmptyAndDotComponents(path);
  for (const auto& root : roots_) {
    std::string prefix = root.path == "/" ? "/" : root.path + "/";
    if (normal.size() <= prefix.size() || normal.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string relative = normal.substr(prefix.size());
    // One resolution, beneath the root; the file is then opened through
    // the fd it gave, never looked up by path again.
    return BackingFile::Open(path, [&] { return FindBeneath(root, relative, path); });
  }
  return Status::PermissionDenied(
      fmt::format("backing memory path {} is not beneath an allowed backing root ({})", path, DescribeRoots()));
}

Result<std::shared_ptr<BackingFile>> OpenBackingFile(const BackingPathPolicy* policy, const std::string& path) {
  return policy ? policy->Open(path) : BackingFile::Open(path);
}

}  // namespace uffdpager
