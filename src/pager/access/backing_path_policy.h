// BackingPathPolicy: which memory files the pager may open for a session.
//
// The pager usually runs with more privilege than the orchestrators that ask
// it to serve a file; without a policy, a caller could have it serve any file
// it can read (/etc/shadow, another tenant's snapshot) into a VM it controls.
// With --allowed-backing-root set, a backing path must name a file beneath
// one of the roots, and it is opened with openat2(RESOLVE_BENEATH) from the
// root's directory fd, so neither "..", nor a symlink, nor a /proc magic link
// can lead out of it, and nothing is resolved twice (no check-then-open race).
// Before a path is matched against the roots, "//" and "/./" are folded away
// (they are spelling); ".." is left to RESOLVE_BENEATH.
//
// Whatever the policy, only a regular file opens, and opening never blocks
// (BackingFile::Open); errors and BackingFile::path() name the path as the
// caller gave it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "pager/storage/backing_file.h"
#include "uffdpager/status.h"

namespace uffdpager {

class BackingPathPolicy {
 public:
  // No roots: any absolute path the pager can read is allowed.
  static Result<BackingPathPolicy> Create(const std::vector<std::string>& allowed_roots);

  // Opens `path` if the policy allows it. A path outside every root, or one
  // that leads out of its root, is kPermissionDenied (403) with a message
  // naming the roots; a file the pager may not read is too (EACCES).
  // Anything but a regular file is kInvalidArgument (BackingFile::Open).
  Result<std::shared_ptr<BackingFile>> Open(const std::string& path) const;

  bool restricted() const { return !roots_.empty(); }
  std::string DescribeRoots() const;

 private:
  struct Root {
    std::string path;  // as configured, without trailing slashes
    UniqueFd dir;      // O_PATH directory fd, resolved once at start-up
  };
  // An O_PATH fd of `relative` beneath the root (openat2 from the root's
  // fd); `path` is what errors name.
  Result<UniqueFd> FindBeneath(const Root& root, const std::string& relative, const std::string& path) const;

  std::vector<Root> roots_;
};

// Opens `path` through `policy`, or as BackingFile::Open does where there is
// no policy (null).
Result<std::shared_ptr<BackingFile>> OpenBackingFile(const BackingPathPolicy* policy, const std::string& path);

}  // namespace uffdpager
