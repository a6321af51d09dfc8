// ChildProcess: a program this process started (uffd-pager, tinyvmm, a VMM),
// its output in a log file (or our own stderr), killed and reaped on
// destruction. Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

class ChildProcess {
 public:
  // Starts argv[0] with `argv`; stdout and stderr go to `log_path` (appended),
  // or stay ours if it is empty.
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

}  // namespace uffdpager
