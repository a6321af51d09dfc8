// ChildProcess: a program the vmm tests run (tinyvmm, uffd-pager), its output
// in a log file, killed and reaped on destruction. Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::vmm::testing {

class ChildProcess {
 public:
  static Result<ChildProcess> Spawn(const std::vector<std::string>& argv, const std::string& log_path);
  ChildProcess() = default;
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !reaped_; }
  void Kill(int signal);
  // True if the process exited within `timeout`; its wait status in *status.
  bool WaitForExit(std::chrono::milliseconds timeout, int* status = nullptr);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::string log_path_;
};

// Polls `condition` every 10 ms until it holds or `timeout` passes.
template <typename F>
bool Eventually(F condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    struct timespec ts{0, 10 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  return condition();
}

}  // namespace uffdpager::vmm::testing
