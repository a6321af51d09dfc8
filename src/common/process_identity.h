// ProcessIdentity: one process, told apart from any later process that
// reuses its pid: the pid plus the kernel's start time of the process
// (/proc/PID/stat). What a file records to name a process that may be gone
// by the time the file is read: the lifecycle's VMMs and pager, the pager's
// own pid file.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>

#include "common/process_handle.h"
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
  // A pidfd on this very process: opened first, then the identity checked,
  // so the handle can never signal a later process that reused the pid.
  // kNotFound if the process is gone or the pid is another process's now.
  Result<ProcessHandle> Open() const;
  bool operator==(const ProcessIdentity&) const = default;
};

// Reads the identity of the process `pid` is now (from /proc/PID/stat); an
// error if there is none. A zombie still has one: check IsAlive().
Result<ProcessIdentity> IdentifyProcess(pid_t pid);

// Now, in the unit of ProcessIdentity::start_time (clock ticks since boot):
// a process whose start time is later cannot be one that existed before.
uint64_t BootTicksNow();

}  // namespace uffdpager
