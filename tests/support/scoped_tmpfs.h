// ScopedTmpfs: a small tmpfs mounted over a directory while it lives, so a
// test can fill that file system on purpose (ENOSPC). Mounting needs root:
// a test skips, saying so, when mounted() is false.
#pragma once

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

namespace uffdpager::testing {

class ScopedTmpfs {
 public:
  // `size` as mount(8) takes it ("4m", "256k"); `path` is created if absent.
  ScopedTmpfs(std::string path, const std::string& size) : path_(std::move(path)) {
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    const std::string options = "size=" + size;
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = "cannot mount a " + size + " tmpfs at " + path_ + " (needs root): " + std::strerror(errno);
    }
  }
  ~ScopedTmpfs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  ScopedTmpfs(const ScopedTmpfs&) = delete;
  ScopedTmpfs& operator=(const ScopedTmpfs&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string path_;
  bool mounted_ = false;
  std::string error_;
};

}  // namespace uffdpager::testing
