// TempDir: a fresh directory under /tmp (short, so socket paths fit in
// sun_path), removed with everything in it on destruction.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace uffdpager::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/uffdt.XXXXXX";
    char* p = ::mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace uffdpager::testing
