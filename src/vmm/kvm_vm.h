// KvmVm: one KVM virtual machine — the /dev/kvm system fd, the VM fd, its
// memory slots and their dirty logs. vCPUs are created from it (vcpu.h).
#pragma once

#include <cstdint>
#include <vector>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager::vmm {

class KvmVm {
 public:
  // Opens /dev/kvm, checks the API version and creates an empty VM.
  static Result<KvmVm> Create();

  // KVM_SET_USER_MEMORY_REGION: guest physical [gpa, gpa+size) is backed by
  // host memory at `host`. With `log_dirty`, KVM records every page the
  // guest writes, which is what Diff snapshots are built from.
  Status SetMemorySlot(uint32_t slot, uint64_t gpa, uint64_t size, void* host, bool log_dirty);

  // KVM_GET_DIRTY_LOG: one bit per 4 KiB page of the slot, set if the guest
  // wrote the page since the previous call (the call clears the log).
  Result<std::vector<uint64_t>> GetDirtyLog(uint32_t slot, uint64_t size);

  // KVM_CREATE_VCPU; the caller maps its kvm_run area (vcpu.h).
  Result<UniqueFd> CreateVcpuFd(uint32_t index);
  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }

  // KVM_GET_SUPPORTED_CPUID, as a KVM_SET_CPUID2 argument; empty if this
  // KVM cannot say (some backends, e.g. PVM, do not implement it).
  const std::vector<uint8_t>& supported_cpuid() const { return cpuid_; }

  int vm_fd() const { return vm_.get(); }

 private:
  UniqueFd kvm_;
  UniqueFd vm_;
  size_t vcpu_mmap_size_ = 0;
  std::vector<uint8_t> cpuid_;
};

}  // namespace uffdpager::vmm
