// GuestRam: the host memory behind a guest's RAM, laid out by a GuestLayout.
// Either fresh anonymous memory exactly as Firecracker allocates it
// (GuestMemory: private, NORESERVE, 2 MiB aligned, HUGETLB for 2M) — used at
// boot and for Uffd restores — or the memory file mapped privately, as
// Firecracker's File backend does.
//
// Writes the VMM itself makes into guest memory go through WriteFromVmm,
// which remembers the pages: KVM's dirty log only sees the guest's writes,
// and a Diff snapshot must contain both (Firecracker keeps the same kind of
// bitmap of its own writes).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/guest_memory.h"
#include "common/memory_mapping.h"
#include "uffdpager/status.h"
#include "vmm/guest_layout.h"

namespace uffdpager::vmm {

class GuestRam {
 public:
  static Result<GuestRam> AllocateAnonymous(const GuestLayout& layout);
  static Result<GuestRam> MapFilePrivately(const GuestLayout& layout, const std::string& path);

  GuestRam(GuestRam&&) noexcept;
  GuestRam& operator=(GuestRam&&) noexcept;

  const GuestLayout& layout() const { return layout_; }
  // The anonymous memory, for the UFFD handshake; nullptr for a file mapping.
  const GuestMemory* anonymous() const { return anonymous_ ? &*anonymous_ : nullptr; }

  uint8_t* region_host(size_t i) const { return hosts_[i]; }
  // Host address of [gpa, gpa+len) if it is RAM within one region.
  uint8_t* HostAddress(uint64_t gpa, uint64_t len) const;

  // Copies bytes into guest memory on the VMM's behalf and marks the pages
  // dirty in the VMM's own bitmap.
  Status WriteFromVmm(uint64_t gpa, const void* data, uint64_t len);
  // The VMM's dirty bitmap of region `i` (one bit per 4 KiB page), cleared.
  std::vector<uint64_t> TakeVmmDirtyBitmap(size_t i);

 private:
  GuestRam() = default;
  void InitBitmaps();

  GuestLayout layout_;
  std::optional<GuestMemory> anonymous_;
  std::vector<MemoryMapping> file_regions_;
  std::vector<uint8_t*> hosts_;
  std::mutex dirty_mu_;
  std::vector<std::vector<uint64_t>> vmm_dirty_;
};

}  // namespace uffdpager::vmm
