// StallWatchdog: notices when something that should make progress does not.
//
// A vCPU whose guest memory fault is never served (the page server died
// after the UFFD handshake) blocks in the kernel forever; so does the VMM
// thread writing guest memory during a Uffd snapshot load. Nothing returns
// an error in either case, so tinyvmm watches instead: every activity it is
// given is sampled periodically, and one that is expected to move but whose
// counter stays the same for longer than the timeout is reported, once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace uffdpager::vmm {

struct ActivitySample {
  std::string name;        // "vCPU 0", "snapshot load"
  bool expecting = false;  // should be moving right now
  uint64_t counter = 0;    // changes whenever it moves
};

class StallWatchdog {
 public:
  using Sampler = std::function<std::vector<ActivitySample>()>;
  using OnStall = std::function<void(const std::string& reason)>;

  StallWatchdog(std::chrono::milliseconds timeout, Sampler sampler, OnStall on_stall);
  ~StallWatchdog();

  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

 private:
  void Loop();

  std::chrono::milliseconds timeout_;
  Sampler sampler_;
  OnStall on_stall_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace uffdpager::vmm
