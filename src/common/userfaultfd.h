// Userfaultfd: an owned userfaultfd and the ioctls both sides of the UFFD
// protocol use. The VMM side (tinyvmm, the test client) creates it the way
// Firecracker does; the pager side receives it over a socket and serves it.
#pragma once

#include <linux/userfaultfd.h>

#include <cstddef>
#include <cstdint>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager {

// Outcome of one UFFDIO_COPY / UFFDIO_ZEROPAGE: how many bytes went in, and
// the errno when the call stopped short (0 on full success).
struct UffdFillOutcome {
  uint64_t bytes = 0;
  int error = 0;
};

// Told how long each UFFDIO_COPY / UFFDIO_ZEROPAGE took: the pager's copy
// latency metric. Implementations must be thread-safe and cheap.
class UffdFillObserver {
 public:
  virtual void OnFill(uint64_t nanoseconds) = 0;

 protected:
  ~UffdFillObserver() = default;
};

class Userfaultfd {
 public:
  Userfaultfd() = default;
  explicit Userfaultfd(UniqueFd fd) : fd_(std::move(fd)) {}

  // Creates a userfaultfd as Firecracker does: through /dev/userfaultfd
  // (USERFAULTFD_IOC_NEW), falling back to the syscall only when the device
  // does not exist. Not user-mode-only: kernel-side faults reach the handler.
  static Result<Userfaultfd> Create(int flags);

  // UFFDIO_API with the requested features; returns the supported ioctls mask.
  Result<uint64_t> NegotiateApi(uint64_t features);

  // Registers [addr, addr+len) in MISSING mode; returns the ioctls allowed on it.
  Result<uint64_t> RegisterMissing(uintptr_t addr, uint64_t len);
  Status Unregister(uintptr_t addr, uint64_t len);

  // Installs `len` bytes from `src` at `dst`. mode: 0 or UFFDIO_COPY_MODE_DONTWAKE.
  UffdFillOutcome Copy(uintptr_t dst, const void* src, uint64_t len, uint64_t mode = 0);
  // Installs zero pages (4 KiB pages only; hugetlb has no ZEROPAGE).
  UffdFillOutcome ZeroPage(uintptr_t dst, uint64_t len, uint64_t mode = 0);
  // Wakes threads waiting on faults in [addr, addr+len).
  Status Wake(uintptr_t addr, uint64_t len);

  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  UniqueFd& owned_fd() { return fd_; }

  // Times every Copy and ZeroPage for `observer` (null: no timing). The
  // observer must outlive this object.
  void set_fill_observer(UffdFillObserver* observer) { fill_observer_ = observer; }

 private:
  // Runs one fill ioctl, timed when an observer is set.
  template <typename Fill>
  UffdFillOutcome TimedFill(Fill fill);

  UniqueFd fd_;
  UffdFillObserver* fill_observer_ = nullptr;
};

// True if `fd` refers to a userfaultfd (checked through /proc/self/fd).
bool IsUserfaultfd(int fd);

}  // namespace uffdpager
