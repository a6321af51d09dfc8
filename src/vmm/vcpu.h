// Vcpu: one KVM vCPU — its fd, its shared kvm_run area, its registers.
// Not thread-safe by itself: Machine (machine.h) runs it on one thread and
// reads or writes its registers only while that thread is parked.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "uffdpager/status.h"
#include "vmm/kvm_vm.h"

namespace uffdpager::vmm {

class Vcpu {
 public:
  static Result<Vcpu> Create(KvmVm& vm, uint32_t index);

  // One KVM_RUN. Returns the errno-carrying error when the ioctl fails
  // (EINTR included); on success the exit is described by run().
  Status Run();
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_area_.data()); }

  Result<kvm_regs> GetRegs() const;
  Status SetRegs(const kvm_regs& regs);
  Result<kvm_sregs> GetSregs() const;
  Status SetSregs(const kvm_sregs& sregs);

  uint32_t index() const { return index_; }

 private:
  uint32_t index_ = 0;
  UniqueFd fd_;
  MemoryMapping run_area_;
};

}  // namespace uffdpager::vmm
