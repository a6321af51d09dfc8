// WaitFor: polls a condition until it holds or a timeout passes. For waits
// on things that announce nothing (another process's state, a file).
#pragma once

#include <time.h>

#include <chrono>

namespace uffdpager {

template <typename F>
bool WaitFor(F condition, std::chrono::milliseconds timeout = std::chrono::seconds(10),
             std::chrono::milliseconds interval = std::chrono::milliseconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    struct timespec ts {
      0, static_cast<long>(std::chrono::nanoseconds(interval).count())
    };
    nanosleep(&ts, nullptr);
  }
  return condition();
}

}  // namespace uffdpager
