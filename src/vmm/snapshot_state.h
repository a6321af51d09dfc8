// SnapshotState: the VM state file of a tinyvmm snapshot (Firecracker's is
// its own format too; this one is the project's).
//
// On disk:  "TINYVMM\0"  u32 format version  u32 0  u64 payload length
//           payload (JSON)  u64 FNV-1a of everything before it
// The payload holds the machine configuration, the memory layout, the guest
// program's parameters and every vCPU's registers (general ones by name,
// special ones as the raw kvm_sregs bytes) and progress. A file that is
// short, has another magic or version, or whose checksum or payload does not
// hold up is refused with a message saying which.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "uffdpager/status.h"
#include "vmm/guest_layout.h"
#include "vmm/guest_program.h"

namespace uffdpager::vmm {

inline constexpr uint32_t kSnapshotFormatVersion = 1;

struct MachineConfig {
  uint32_t vcpu_count = 1;
  uint64_t mem_size_mib = 128;
  bool smt = false;
  bool track_dirty_pages = false;
  std::string huge_pages = "None";  // "None" or "2M"
  bool operator==(const MachineConfig&) const = default;
};

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  VcpuProgress progress;
};

struct SnapshotState {
  MachineConfig machine;
  GuestLayout layout;
  GuestProgramConfig program;
  uint64_t generation = 0;  // how many times this VM's memory was loaded
  std::vector<VcpuState> vcpus;
};

std::string EncodeSnapshotState(const SnapshotState& state);
Result<SnapshotState> DecodeSnapshotState(const std::string& bytes);

// Writes to a temporary file beside `path` and renames it over, so a reader
// never sees half a state file.
Status WriteSnapshotStateFile(const std::string& path, const SnapshotState& state);
Result<SnapshotState> ReadSnapshotStateFile(const std::string& path);

}  // namespace uffdpager::vmm
