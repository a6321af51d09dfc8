// MemoryMapping: sole owner of an mmap'ed range; unmaps it on destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "uffdpager/status.h"

namespace uffdpager {

class MemoryMapping {
 public:
  MemoryMapping() = default;
  MemoryMapping(void* addr, size_t length) : addr_(addr), length_(length) {}
  ~MemoryMapping() { reset(); }

  MemoryMapping(const MemoryMapping&) = delete;
  MemoryMapping& operator=(const MemoryMapping&) = delete;
  MemoryMapping(MemoryMapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  MemoryMapping& operator=(MemoryMapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }

  // mmap(2) wrapper; `what` names the mapping in the error.
  static Result<MemoryMapping> Map(void* hint, size_t length, int prot, int flags, int fd, off_t offset,
                                   const char* what);

  // An anonymous private mapping of `length` bytes whose start is aligned to
  // `alignment` (a power of two). Over-reserves and trims, as Firecracker does
  // for its 2 MiB-aligned guest regions.
  static Result<MemoryMapping> MapAlignedAnonymous(size_t length, size_t alignment, int extra_flags);

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(addr_); }
  size_t size() const { return length_; }
  bool valid() const { return addr_ != nullptr; }

  void reset();

  // Gives up ownership without unmapping.
  void release() {
    addr_ = nullptr;
    length_ = 0;
  }

 private:
  void* addr_ = nullptr;
  size_t length_ = 0;
};

}  // namespace uffdpager
