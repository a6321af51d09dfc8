#include "vmm/vcpu.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>
#include <vector>

namespace uffdpager::vmm {

Result<Vcpu> Vcpu::Create(KvmVm& vm, uint32_t index) {
  auto fd = vm.CreateVcpuFd(index);
  if (!fd.ok()) return fd.status();
  auto area = MemoryMapping::Map(nullptr, vm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0,
                                 "kvm_run area");
  if (!area.ok()) return area.status();
  if (!vm.supported_cpuid().empty()) {
    // Long mode needs CPUID to advertise it before EFER.LME may be set.
    std::vector<uint8_t> cpuid = vm.supported_cpuid();
    if (::ioctl(fd->get(), KVM_SET_CPUID2, cpuid.data()) < 0) return Status::FromErrno(errno, "KVM_SET_CPUID2");
  }
  Vcpu vcpu;
  vcpu.index_ = index;
  vcpu.fd_ = std::move(*fd);
  vcpu.run_area_ = std::move(*area);
  return vcpu;
}

Status Vcpu::Run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) return Status::FromErrno(errno, "KVM_RUN vCPU " + std::to_string(index_));
  return Status::Ok();
}

Result<kvm_regs> Vcpu::GetRegs() const {
  kvm_regs regs{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &regs) < 0) return Status::FromErrno(errno, "KVM_GET_REGS");
  return regs;
}

Status Vcpu::SetRegs(const kvm_regs& regs) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &regs) < 0) return Status::FromErrno(errno, "KVM_SET_REGS");
  return Status::Ok();
}

Result<kvm_sregs> Vcpu::GetSregs() const {
  kvm_sregs sregs{};
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &sregs) < 0) return Status::FromErrno(errno, "KVM_GET_SREGS");
  return sregs;
}

Status Vcpu::SetSregs(const kvm_sregs& sregs) {
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &sregs) < 0) return Status::FromErrno(errno, "KVM_SET_SREGS");
  return Status::Ok();
}

}  // namespace uffdpager::vmm
