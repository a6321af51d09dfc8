// ProcessIdentity: one process, told apart from any later process that
// reuses its pid: the pid plus the kernel's start time of the process
// (/proc/PID/stat). What a file records to name a process that may be gone
// by the time the file is read: the lifecycle's VMMs and pager, the pager's
// own pid file.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>

#include "uffdpager/status.h"

namespace uffdpager {

struct ProcessIdentity {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat field 22, clock ticks since boot

  // The process of this identity exists and has not exited. A zombie has
  // exited (killed, say, and not yet reaped by its parent): not alive.
  bool IsAlive() const;
  // SIGTERM, then SIGKILL after `grace`; OK once it is gone (or was).
  Status Terminate(std::chrono::milliseconds grace = std::chrono::seconds(3)) const;
  bool operator==(const ProcessIdentity&) const = default;
};

// Reads the identity of the process `pid` is now (from /proc/PID/stat); an
// error if there is none. A zombie still has one: check IsAlive().
Result<ProcessIdentity> IdentifyProcess(pid_t pid);

}  // namespace uffdpager
