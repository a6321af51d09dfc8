#include "vmm/kvm_vm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <string>

namespace uffdpager::vmm {

Result<KvmVm> KvmVm::Create() {
  KvmVm vm;
  vm.kvm_.reset(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!vm.kvm_) return Status::FromErrno(errno, "open /dev/kvm");
  int version = ::ioctl(vm.kvm_.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return Status::Internal("KVM API version " + std::to_string(version) + ", expected " +
                            std::to_string(KVM_API_VERSION));
  }
  int vm_fd;
  do {
    vm_fd = ::ioctl(vm.kvm_.get(), KVM_CREATE_VM, 0);
  } while (vm_fd < 0 && errno == EINTR);
  if (vm_fd < 0) return Status::FromErrno(errno, "KVM_CREATE_VM");
  vm.vm_.reset(vm_fd);
  // Intel VMX needs three pages of guest physical space for the TSS used to
  // emulate real mode; put them where guest memory never is (below 4 GiB,
  // above any hole-split layout tinyvmm builds).
  if (::ioctl(vm.vm_.get(), KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) {
    return Status::FromErrno(errno, "KVM_SET_TSS_ADDR");
  }
  int mmap_size = ::ioctl(vm.kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0) return Status::FromErrno(errno, "KVM_GET_VCPU_MMAP_SIZE");
  vm.vcpu_mmap_size_ = static_cast<size_t>(mmap_size);
  std::vector<uint8_t> cpuid(sizeof(kvm_cpuid2) + 256 * sizeof(kvm_cpuid_entry2), 0);
  reinterpret_cast<kvm_cpuid2*>(cpuid.data())->nent = 256;
  if (::ioctl(vm.kvm_.get(), KVM_GET_SUPPORTED_CPUID, cpuid.data()) == 0) vm.cpuid_ = std::move(cpuid);
  return vm;
}

Status KvmVm::SetMemorySlot(uint32_t slot, uint64_t gpa, uint64_t size, void* host, bool log_dirty) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    return Status::FromErrno(errno, "KVM_SET_USER_MEMORY_REGION slot " + std::to_string(slot));
  }
  return Status::Ok();
}

Result<std::vector<uint64_t>> KvmVm::GetDirtyLog(uint32_t slot, uint64_t size) {
  uint64_t pages = size / 4096;
  std::vector<uint64_t> bitmap((pages + 63) / 64, 0);
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  if (::ioctl(vm_.get(), KVM_GET_DIRTY_LOG, &log) < 0) {
    return Status::FromErrno(errno, "KVM_GET_DIRTY_LOG slot " + std::to_string(slot));
  }
  return bitmap;
}

Result<UniqueFd> KvmVm::CreateVcpuFd(uint32_t index) {
  int fd = ::ioctl(vm_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
  if (fd < 0) return Status::FromErrno(errno, "KVM_CREATE_VCPU " + std::to_string(index));
  return UniqueFd(fd);
}

}  // namespace uffdpager::vmm
