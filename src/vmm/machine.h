// Machine: a running tinyvmm guest — the KVM VM, its RAM, its vCPUs and one
// thread per vCPU.
//
// vCPU threads park only at a step boundary of the guest program: after the
// progress `out`, with the pending port I/O completed (KVM_RUN with
// immediate_exit, as Firecracker does before saving state), so saved
// registers always describe a whole number of steps. Registers are read and
// snapshots written only while every vCPU is parked.
//
// Thread safety: Resume/Pause/Capture/Write* are called by one API thread at
// a time (the API serializes them); Progress and Activity may be called from
// any thread at any time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "uffdpager/status.h"
#include "vmm/guest_program.h"
#include "vmm/guest_ram.h"
#include "vmm/kvm_vm.h"
#include "vmm/snapshot_state.h"
#include "vmm/snapshot_writer.h"
#include "vmm/vcpu.h"

namespace uffdpager::vmm {

// What one vCPU has done, for the progress report and the stall watchdog.
struct VcpuActivity {
  bool running = false;  // asked to run and not parked: it should make progress
  uint64_t exits = 0;    // progress reports seen so far
  VcpuProgress progress;
};

class Machine {
 public:
  // Decides a vCPU's registers: it gets KVM's reset values (which include
  // what a VM entry needs, such as a usable task register) and sets the
  // ones it means: the program's entry state at boot, saved ones at restore.
  using VcpuInitializer = std::function<void(uint32_t index, kvm_regs* regs, kvm_sregs* sregs)>;

  // A VM over `ram` with `vcpu_count` vCPUs. The vCPU threads start parked.
  static Result<std::unique_ptr<Machine>> Create(const MachineConfig& config, const GuestProgramConfig& program,
                                                 GuestRam ram, const VcpuInitializer& init, uint64_t generation);
  ~Machine();

  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  void Resume();
  // Asks every vCPU to park and waits for it, at most `timeout`. A vCPU that
  // does not park (stuck on a guest memory fault nobody serves) fails it.
  Status Pause(std::chrono::milliseconds timeout);

  // Snapshots; every vCPU must be parked.
  Result<SnapshotState> CaptureState() const;
  // Full resets the dirty logs, so the next Diff holds what changed since.
  Result<MemoryWriteStats> WriteFullMemory(const std::string& path);
  Result<MemoryWriteStats> WriteDiffMemory(const std::string& path);

  std::vector<VcpuActivity> Activity() const;
  // Non-empty once a vCPU stopped on something it cannot handle.
  std::string FatalError() const;

  // Stops the vCPU threads; false if some stayed stuck in the kernel after
  // `timeout` (then the Machine must not be destroyed: the process exits).
  bool Shutdown(std::chrono::milliseconds timeout);

  const MachineConfig& config() const { return config_; }
  const GuestProgramConfig& program() const { return program_; }
  GuestRam& ram() { return ram_; }
  uint64_t generation() const { return generation_; }

 private:
  struct VcpuSlot {
    Vcpu vcpu;
    std::thread thread;
    std::atomic<uint64_t> exits{0};
    std::atomic<uint32_t> step{0}, checksum{0}, prng{0};
    bool parked = true;   // guarded by mu_
    bool exited = false;  // guarded by mu_
  };

  Machine(const MachineConfig& config, const GuestProgramConfig& program, GuestRam ram, KvmVm vm, uint64_t generation);
  void VcpuLoop(VcpuSlot* slot);
  void Fail(VcpuSlot* slot, const std::string& message);

  MachineConfig config_;
  GuestProgramConfig program_;
  GuestRam ram_;
  KvmVm vm_;
  uint64_t generation_;
  std::vector<std::unique_ptr<VcpuSlot>> slots_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool run_ = false;                        // guarded by mu_
  bool quit_ = false;                       // guarded by mu_
  std::atomic<bool> stop_requested_{true};  // !run_ || quit_, read on the vCPU fast path
  std::string fatal_;                       // guarded by mu_
};

}  // namespace uffdpager::vmm
