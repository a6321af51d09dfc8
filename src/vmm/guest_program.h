// The guest tinyvmm runs, and a host-side model of it.
//
// The guest is about a hundred bytes of 64-bit machine code that runs in user
// mode (CPL 3, IOPL 3) over identity-mapped page tables, with interrupts off
// and no kernel at all. Every vCPU runs the same loop with its own registers:
//
//   EBX  xorshift32 state       EBP  running checksum
//   EDI  steps done             RSI  guest address of this vCPU's parameters
//
// One step: advance the xorshift state, pick page idx = state % pages_per_vcpu
// of this vCPU's partition (walk pages vcpu, vcpu+V, vcpu+2V, ...), fold its
// 1024 dwords into the checksum (csum = rol(csum, 5) + dword), count the step,
// and on every `write_every`-th step write (step, checksum) into the page's
// first 8 bytes. Then it stores (step, checksum, state) in its status slot
// and executes `out 0xE0, al`, which exits to the VMM: that is the progress
// report, the point where the VMM may park the vCPU, and what the stall
// watchdog counts.
//
// The partitions are disjoint, so no page is touched by two vCPUs and the
// whole run is deterministic whatever the interleaving. That is what makes
// the model exact: replaying the walk over the bytes of a memory file gives
// the very checksums the guest computes, and the very bytes it leaves.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"
#include "vmm/guest_layout.h"

namespace uffdpager::vmm {

class GuestRam;

// Guest physical addresses of the program's reserved pages.
inline constexpr uint64_t kCodeGpa = 0x1000;
inline constexpr uint64_t kParamsGpa = 0x2000;      // 32 bytes per vCPU
inline constexpr uint64_t kStatusGpa = 0x3000;      // 16 bytes per vCPU
inline constexpr uint64_t kGenerationGpa = 0x4000;  // the VMM writes here on every load
inline constexpr uint32_t kReservedPages = 16;      // pages 0..15 (code, data, page tables) are never walked
inline constexpr uint16_t kProgressPort = 0xE0;
inline constexpr uint32_t kMaxVcpus = 32;

struct GuestProgramConfig {
  uint64_t seed = 1;
  uint32_t write_every = 3;
  bool operator==(const GuestProgramConfig&) const = default;
};

// Where one vCPU is: its registers EDI, EBP, EBX at a step boundary.
struct VcpuProgress {
  uint32_t step = 0;
  uint32_t checksum = 0;
  uint32_t prng = 0;
  bool operator==(const VcpuProgress&) const = default;
};
nlohmann::json ProgressToJson(const VcpuProgress& p);
Result<VcpuProgress> ProgressFromJson(const nlohmann::json& j);

class GuestWalk {
 public:
  static Result<GuestWalk> Create(const GuestLayout& layout, uint32_t vcpu_count, const GuestProgramConfig& config);

  uint32_t vcpu_count() const { return vcpu_count_; }
  uint32_t pages_per_vcpu() const { return pages_per_vcpu_; }
  const GuestProgramConfig& config() const { return config_; }
  const GuestLayout& layout() const { return layout_; }

  VcpuProgress InitialProgress(uint32_t vcpu) const;

  // Fills fresh RAM at boot: the code, each vCPU's parameters, and seeded
  // pseudo-random content in every other page (so every page is distinct
  // and a page served from the wrong offset changes the checksums).
  Status Install(GuestRam& ram) const;

  // Registers for vCPU `vcpu` at its first instruction. `sregs` must come
  // from KVM_GET_SREGS of a fresh vCPU; segments and paging are set for 64-bit user mode.
  void InitialRegisters(uint32_t vcpu, kvm_regs* regs, kvm_sregs* sregs) const;

  // Guest physical address of the page step `p` of `vcpu` will read next,
  // and the step itself, exactly as the machine code does it. `page_at`
  // returns the host bytes of a 4 KiB page by guest physical address.
  VcpuProgress Step(uint32_t vcpu, const VcpuProgress& p, const std::function<uint8_t*(uint64_t)>& page_at) const;

  // Replays the walk over `image` (a memory file's bytes, in file order) in
  // place, taking every vCPU from `from[i]` to step `to_steps[i]`.
  Result<std::vector<VcpuProgress>> Replay(std::vector<uint8_t>& image, const std::vector<VcpuProgress>& from,
                                           const std::vector<uint32_t>& to_steps) const;

  // True for pages the walk may touch (everything but the reserved pages).
  bool IsWalkedPage(uint64_t gpa) const { return gpa >= kReservedPages * kGuestPageSize; }

 private:
  GuestLayout layout_;
  GuestProgramConfig config_;
  uint32_t vcpu_count_ = 0;
  uint32_t pages_per_vcpu_ = 0;
  uint32_t region0_end_page_ = 0;
  uint32_t hole_pages_ = 0;
};

}  // namespace uffdpager::vmm
