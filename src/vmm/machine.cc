#include "vmm/machine.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace uffdpager::vmm {

Machine::Machine(const MachineConfig& config, const GuestProgramConfig& program, GuestRam ram, KvmVm vm,
                 uint64_t generation)
    : config_(config), program_(program), ram_(std::move(ram)), vm_(std::move(vm)), generation_(generation) {}

Result<std::unique_ptr<Machine>> Machine::Create(const MachineConfig& config, const GuestProgramConfig& program,
                                                 GuestRam ram, const VcpuInitializer& init, uint64_t generation) {
  auto vm = KvmVm::Create();
  if (!vm.ok()) return vm.status();
  const auto& layout = ram.layout();
  for (size_t i = 0; i < layout.regions.size(); ++i) {
    UFFD_RETURN_IF_ERROR(vm->SetMemorySlot(static_cast<uint32_t>(i), layout.regions[i].gpa, layout.regions[i].size,
                                           ram.region_host(i), config.track_dirty_pages));
  }
  std::unique_ptr<Machine> m(new Machine(config, program, std::move(ram), std::move(*vm), generation));
  for (uint32_t i = 0; i < config.vcpu_count; ++i) {
    auto vcpu = Vcpu::Create(m->vm_, i);
    if (!vcpu.ok()) return vcpu.status();
    auto sregs = vcpu->GetSregs();
    if (!sregs.ok()) return sregs.status();
    kvm_regs regs{};
    init(i, &regs, &*sregs);
    UFFD_RETURN_IF_ERROR(vcpu->SetSregs(*sregs));
    UFFD_RETURN_IF_ERROR(vcpu->SetRegs(regs));
    auto slot = std::make_unique<VcpuSlot>();
    slot->vcpu = std::move(*vcpu);
    slot->step = static_cast<uint32_t>(regs.rdi);
    slot->checksum = static_cast<uint32_t>(regs.rbp);
    slot->prng = static_cast<uint32_t>(regs.rbx);
    m->slots_.push_back(std::move(slot));
  }
  for (auto& slot : m->slots_) {
    VcpuSlot* s = slot.get();
    s->thread = std::thread([mp = m.get(), s] { mp->VcpuLoop(s); });
  }
  return m;
}

Machine::~Machine() {
  if (!Shutdown(std::chrono::seconds(2))) {
    // A vCPU thread is stuck in the kernel (e.g. on a guest memory fault that
    // nobody will ever serve); there is no safe way to free what it uses.
    spdlog::critical("vCPU threads did not stop; exiting");
    std::_Exit(3);
  }
}

void Machine::Fail(VcpuSlot* slot, const std::string& message) {
  spdlog::error("vCPU {}: {}", slot->vcpu.index(), message);
  std::lock_guard<std::mutex> lock(mu_);
  if (fatal_.empty()) fatal_ = "vCPU " + std::to_string(slot->vcpu.index()) + ": " + message;
  slot->parked = true;
  slot->exited = true;
  cv_.notify_all();
}

void Machine::VcpuLoop(VcpuSlot* slot) {
  const uint64_t status_gpa = kStatusGpa + 16 * slot->vcpu.index();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      slot->parked = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return quit_ || run_; });
      if (quit_) {
        slot->exited = true;
        cv_.notify_all();
        return;
      }
      slot->parked = false;
    }
    for (;;) {
      Status st = slot->vcpu.Run();
      if (!st.ok()) {
        if (st.error_number() == EINTR || st.error_number() == EAGAIN) continue;
        return Fail(slot, st.ToString());
      }
      kvm_run* run = slot->vcpu.run();
      if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT && run->io.port == kProgressPort) {
        // The guest stored (step, checksum, state) in its status slot just
        // before the `out`; only this thread's guest writes that slot.
        const uint8_t* status = ram_.HostAddress(status_gpa, 12);
        uint32_t words[3];
        std::memcpy(words, status, sizeof(words));
        slot->step.store(words[0], std::memory_order_relaxed);
        slot->checksum.store(words[1], std::memory_order_relaxed);
        slot->prng.store(words[2], std::memory_order_relaxed);
        slot->exits.fetch_add(1, std::memory_order_release);
        if (stop_requested_.load(std::memory_order_acquire)) {
          // Complete the `out` so RIP is past it before anyone reads the
          // registers: KVM finishes pending I/O on the next KVM_RUN, and
          // immediate_exit makes that KVM_RUN return at once with EINTR.
          run->immediate_exit = 1;
          Status done = slot->vcpu.Run();
          run->immediate_exit = 0;
          if (!done.ok() && done.error_number() != EINTR) return Fail(slot, done.ToString());
          break;
        }
        continue;
      }
      if (run->exit_reason == KVM_EXIT_HLT) return Fail(slot, "the guest halted");
      return Fail(slot,
                  "unexpected KVM exit reason " + std::to_string(run->exit_reason) +
                      (run->exit_reason == KVM_EXIT_FAIL_ENTRY
                           ? " (entry failure " + std::to_string(run->fail_entry.hardware_entry_failure_reason) + ")"
                           : ""));
    }
  }
}

void Machine::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  run_ = true;
  stop_requested_.store(false, std::memory_order_release);
  cv_.notify_all();
}

Status Machine::Pause(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  run_ = false;
  stop_requested_.store(true, std::memory_order_release);
  bool parked = cv_.wait_for(lock, timeout, [&] {
    for (const auto& s : slots_) {
      if (!s->parked) return false;
    }
    return true;
  });
  if (!fatal_.empty()) return Status::Internal(fatal_);
  if (!parked) {
    std::string stuck;
    for (const auto& s : slots_) {
      if (!s->parked) stuck += (stuck.empty() ? "" : ", ") + std::to_string(s->vcpu.index());
    }
    return Status::Timeout("vCPU(s) " + stuck + " did not stop within " + std::to_string(timeout.count()) +
                           " ms (stuck on a guest memory fault?)");
  }
  return Status::Ok();
}

Result<SnapshotState> Machine::CaptureState() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_.empty()) return Status::Internal(fatal_);
    for (const auto& s : slots_) {
      if (!s->parked || run_) return Status::Conflict("the vCPUs are not paused");
    }
  }
  SnapshotState state;
  state.machine = config_;
  state.layout = ram_.layout();
  state.program = program_;
  state.generation = generation_;
  for (const auto& s : slots_) {
    VcpuState vs;
    auto regs = s->vcpu.GetRegs();
    if (!regs.ok()) return regs.status();
    auto sregs = s->vcpu.GetSregs();
    if (!sregs.ok()) return sregs.status();
    vs.regs = *regs;
    vs.sregs = *sregs;
    vs.progress = {static_cast<uint32_t>(regs->rdi), static_cast<uint32_t>(regs->rbp),
                   static_cast<uint32_t>(regs->rbx)};
    state.vcpus.push_back(vs);
  }
  return state;
}

Result<MemoryWriteStats> Machine::WriteFullMemory(const std::string& path) {
  auto stats = WriteFullMemoryFile(path, ram_);
  if (!stats.ok()) return stats;
  if (config_.track_dirty_pages) {
    // Everything is in this file now; the next Diff starts from here.
    for (size_t i = 0; i < ram_.layout().regions.size(); ++i) {
      auto log = vm_.GetDirtyLog(static_cast<uint32_t>(i), ram_.layout().regions[i].size);
      if (!log.ok()) return log.status();
      (void)ram_.TakeVmmDirtyBitmap(i);
    }
  }
  return stats;
}

Result<MemoryWriteStats> Machine::WriteDiffMemory(const std::string& path) {
  if (!config_.track_dirty_pages) {
    return Status::InvalidArgument("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
  }
  std::vector<std::vector<uint64_t>> dirty;
  for (size_t i = 0; i < ram_.layout().regions.size(); ++i) {
    auto log = vm_.GetDirtyLog(static_cast<uint32_t>(i), ram_.layout().regions[i].size);
    if (!log.ok()) return log.status();
    auto own = ram_.TakeVmmDirtyBitmap(i);
    for (size_t w = 0; w < log->size(); ++w) (*log)[w] |= own[w];
    dirty.push_back(std::move(*log));
  }
  return WriteDiffMemoryFile(path, ram_, dirty);
}

std::vector<VcpuActivity> Machine::Activity() const {
  std::vector<VcpuActivity> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : slots_) {
    VcpuActivity a;
    a.running = run_ && !s->parked;
    a.exits = s->exits.load(std::memory_order_acquire);
    a.progress = {s->step.load(std::memory_order_relaxed), s->checksum.load(std::memory_order_relaxed),
                  s->prng.load(std::memory_order_relaxed)};
    out.push_back(a);
  }
  return out;
}

std::string Machine::FatalError() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fatal_;
}

bool Machine::Shutdown(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  quit_ = true;
  stop_requested_.store(true, std::memory_order_release);
  cv_.notify_all();
  bool all = cv_.wait_for(lock, timeout, [&] {
    for (const auto& s : slots_) {
      if (!s->exited && s->thread.joinable()) return false;
    }
    return true;
  });
  lock.unlock();
  if (!all) return false;
  for (auto& s : slots_) {
    if (s->thread.joinable()) s->thread.join();
  }
  return true;
}

}  // namespace uffdpager::vmm
