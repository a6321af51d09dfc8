#include "common/userfaultfd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <string>

namespace uffdpager {

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

Result<Userfaultfd> Userfaultfd::Create(int flags) {
  UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev) {
    int fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags);
    if (fd < 0) return Status::FromErrno(errno, "ioctl USERFAULTFD_IOC_NEW on /dev/userfaultfd");
    return Userfaultfd(UniqueFd(fd));
  }
  if (errno != ENOENT) return Status::FromErrno(errno, "open /dev/userfaultfd");
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd < 0) return Status::FromErrno(errno, "userfaultfd syscall");
  return Userfaultfd(UniqueFd(fd));
}

Result<uint64_t> Userfaultfd::NegotiateApi(uint64_t features) {
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd(), UFFDIO_API, &api) != 0) return Status::FromErrno(errno, "ioctl UFFDIO_API");
  return static_cast<uint64_t>(api.ioctls);
}

Result<uint64_t> Userfaultfd::RegisterMissing(uintptr_t addr, uint64_t len) {
  uffdio_register reg{};
  reg.range.start = addr;
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(fd(), UFFDIO_REGISTER, &reg) != 0) {
    return Status::FromErrno(errno, "ioctl UFFDIO_REGISTER (MISSING) of " + std::to_string(len) + " bytes");
  }
  return static_cast<uint64_t>(reg.ioctls);
}

Status Userfaultfd::Unregister(uintptr_t addr, uint64_t len) {
  uffdio_range range{addr, len};
  if (::ioctl(fd(), UFFDIO_UNREGISTER, &range) != 0) {
    return Status::FromErrno(errno, "ioctl UFFDIO_UNREGISTER of " + std::to_string(len) + " bytes");
  }
  return Status::Ok();
}

// The kernel reports partial progress in the `copy`/`zeropage` field: a
// positive byte count, or a negative errno (some kernels leave 0 on EAGAIN).
static UffdFillOutcome FillOutcome(int rc, int64_t reported, uint64_t len) {
  UffdFillOutcome out;
  if (rc == 0) {
    out.bytes = len;
    return out;
  }
  out.error = errno;
  out.bytes = reported > 0 ? static_cast<uint64_t>(reported) : 0;
  return out;
}

template <typename Fill>
UffdFillOutcome Userfaultfd::TimedFill(Fill fill) {
  if (fill_observer_ == nullptr) return fill();
  auto start = std::chrono::steady_clock::now();
  UffdFillOutcome outcome = fill();  // errno already captured in the outcome
  fill_observer_->OnFill(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count()));
  return outcome;
}

UffdFillOutcome Userfaultfd::Copy(uintptr_t dst, const void* src, uint64_t len, uint64_t mode) {
  return TimedFill([&] {
    uffdio_copy copy{};
    copy.dst = dst;
    copy.src = reinterpret_cast<uintptr_t>(src);
    copy.len = len;
    copy.mode = mode;
    int rc = ::ioctl(fd(), UFFDIO_COPY, &copy);
    return FillOutcome(rc, copy.copy, len);
  });
}

UffdFillOutcome Userfaultfd::ZeroPage(uintptr_t dst, uint64_t len, uint64_t mode) {
  return TimedFill([&] {
    uffdio_zeropage zp{};
    zp.range.start = dst;
    zp.range.len = len;
    zp.mode = mode;
    int rc = ::ioctl(fd(), UFFDIO_ZEROPAGE, &zp);
    return FillOutcome(rc, zp.zeropage, len);
  });
}

Status Userfaultfd::Wake(uintptr_t addr, uint64_t len) {
  uffdio_range range{addr, len};
  if (::ioctl(fd(), UFFDIO_WAKE, &range) != 0) return Status::FromErrno(errno, "ioctl UFFDIO_WAKE");
  return Status::Ok();
}

bool IsUserfaultfd(int fd) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  std::array<char, 128> target{};
  ssize_t n = ::readlink(link.c_str(), target.data(), target.size() - 1);
  if (n <= 0) return false;
  return std::string(target.data(), static_cast<size_t>(n)) == "anon_inode:[userfaultfd]";
}

}  // namespace uffdpager
