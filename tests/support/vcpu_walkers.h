// VcpuWalkers: vCPU-like threads that read a VM's memory page by page, over
// and over, until stopped, so faults are in flight whenever a test crashes or
// replaces the pager under them.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/guest_memory.h"
#include "common/wait_for.h"
#include "support/vmm_stand_in.h"

namespace uffdpager::testing {

class VcpuWalkers {
 public:
  VcpuWalkers(const GuestMemory& memory, int threads) : memory_(memory) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t, threads] {
        const uint64_t pages = PageCount(memory_);
        while (!stop_.load()) {
          for (uint64_t p = t; p < pages && !stop_.load(); p += threads) {
            (void)*reinterpret_cast<volatile const uint8_t*>(memory_.AtFileOffset(p * 4096));
            touched_.fetch_add(1);
          }
        }
        finished_.fetch_add(1);
      });
    }
  }
  ~VcpuWalkers() {
    if (!Stop()) {
      // A thread is stuck on a page: the test has failed already; leaving it
      // blocked would hang the process, so let it go with the process.
      for (auto& t : threads_) t.detach();
    }
  }
  uint64_t touched() const { return touched_.load(); }
  // True if every thread came back within `timeout` (none is stuck on a page).
  bool Stop(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    stop_.store(true);
    if (!WaitFor([&] { return finished_.load() == threads_.size(); }, timeout)) return false;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    return true;
  }

 private:
  const GuestMemory& memory_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> touched_{0};
  std::atomic<size_t> finished_{0};
  std::vector<std::thread> threads_;
};

}  // namespace uffdpager::testing
