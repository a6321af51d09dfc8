#include "vmm/stall_watchdog.h"

#include <algorithm>
#include <map>

namespace uffdpager::vmm {

StallWatchdog::StallWatchdog(std::chrono::milliseconds timeout, Sampler sampler, OnStall on_stall)
    : timeout_(timeout), sampler_(std::move(sampler)), on_stall_(std::move(on_stall)) {
  thread_ = std::thread([this] { Loop(); });
}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StallWatchdog::Loop() {
  using Clock = std::chrono::steady_clock;
  struct Seen {
    uint64_t counter = 0;
    Clock::time_point since;
    bool expecting = false;
  };
  std::map<std::string, Seen> seen;
  bool reported = false;
  auto period = std::clamp(timeout_ / 5, std::chrono::milliseconds(10), std::chrono::milliseconds(200));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, period, [&] { return stop_; });
    if (stop_) break;
    lock.unlock();
    auto now = Clock::now();
    std::string stalled;
    for (const auto& a : sampler_()) {
      auto it = seen.find(a.name);
      if (it == seen.end() || it->second.counter != a.counter || it->second.expecting != a.expecting) {
        // Moved, or only now expected to move: the clock starts again.
        seen[a.name] = {a.counter, now, a.expecting};
        continue;
      }
      auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.since);
      if (a.expecting && idle > timeout_ && stalled.empty()) {
        stalled = a.name + " made no progress for " + std::to_string(idle.count()) +
                  " ms (a guest memory fault is not being served; is the page server gone?)";
      }
    }
    if (!stalled.empty() && !reported) {
      reported = true;
      on_stall_(stalled);
    }
    lock.lock();
  }
}

}  // namespace uffdpager::vmm
