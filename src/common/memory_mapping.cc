#include "common/memory_mapping.h"

#include <sys/mman.h>

#include <cerrno>
#include <string>

namespace uffdpager {

Result<MemoryMapping> MemoryMapping::Map(void* hint, size_t length, int prot, int flags, int fd, off_t offset,
                                         const char* what) {
  void* p = ::mmap(hint, length, prot, flags, fd, offset);
  if (p == MAP_FAILED) {
    return Status::FromErrno(errno, std::string("mmap ") + what + " (" + std::to_string(length) + " bytes)");
  }
  return MemoryMapping(p, length);
}

Result<MemoryMapping> MemoryMapping::MapAlignedAnonymous(size_t length, size_t alignment, int extra_flags) {
  // Reserve length + alignment of address space with no access, then place the
  // real mapping at the aligned address inside it with MAP_FIXED and give the
  // slack back. The reservation is never touched, so it costs no memory.
  auto reservation = Map(nullptr, length + alignment, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                         "address reservation");
  if (!reservation.ok()) return reservation.status();
  uintptr_t start = reservation->address();
  uintptr_t aligned = (start + alignment - 1) & ~(uintptr_t(alignment) - 1);
  void* p = ::mmap(reinterpret_cast<void*>(aligned), length, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED | extra_flags, -1, 0);
  if (p == MAP_FAILED) {
    return Status::FromErrno(errno, "mmap aligned anonymous region (" + std::to_string(length) + " bytes)");
  }
  // The reservation's pages outside [aligned, aligned+length) are released;
  // the middle now belongs to the new mapping.
  size_t total = reservation->size();
  reservation->release();
  if (aligned > start) ::munmap(reinterpret_cast<void*>(start), aligned - start);
  uintptr_t end = aligned + length;
  if (start + total > end) ::munmap(reinterpret_cast<void*>(end), start + total - end);
  return MemoryMapping(p, length);
}

void MemoryMapping::reset() {
  if (addr_ != nullptr) ::munmap(addr_, length_);
  addr_ = nullptr;
  length_ = 0;
}

}  // namespace uffdpager
