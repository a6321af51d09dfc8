// HugePageReservation: reserves 2 MiB huge pages for one test through
// /proc/sys/vm/nr_hugepages and gives the old count back afterwards. The
// count is machine-wide and ctest runs suites in parallel, so reservations
// are serialized across processes with a lock file.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>

namespace uffdpager::testing {

class HugePageReservation {
 public:
  explicit HugePageReservation(long extra) {
    lock_fd_ = ::open("/tmp/uffdpager-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ >= 0) ::flock(lock_fd_, LOCK_EX);
    old_ = Read();
    if (old_ < 0) return;
    Write(old_ + extra);
    ok_ = FreeHugePages() >= extra;
  }
  ~HugePageReservation() {
    if (old_ >= 0) Write(old_);
    if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  }
  HugePageReservation(const HugePageReservation&) = delete;
  HugePageReservation& operator=(const HugePageReservation&) = delete;
  bool ok() const { return ok_; }
  long old() const { return old_; }

 private:
  static constexpr const char* kPath = "/proc/sys/vm/nr_hugepages";
  static long Read() {
    std::ifstream in(kPath);
    long v = -1;
    in >> v;
    return v;
  }
  static void Write(long v) {
    std::ofstream out(kPath);
    out << v;
  }
  static long FreeHugePages() {
    std::ifstream in("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    long v = 0;
    in >> v;
    return v;
  }
  int lock_fd_ = -1;
  long old_ = -1;
  bool ok_ = false;
};

}  // namespace uffdpager::testing
