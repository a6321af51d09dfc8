// Detached processes: the VMMs and the pager that snapctl starts must outlive
// it. They are started in a new session (setsid, double fork, so they are
// nobody's child here), with stdin on /dev/null and stdout/stderr appended to
// a log file. A started process is remembered by its identity: pid plus the
// kernel's start time, so a later command never mistakes a new process that
// reused the pid for the VMM it started.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

struct ProcessIdentity {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat field 22, clock ticks since boot

  // The process of this identity exists and has not exited (a zombie has).
  bool IsAlive() const;
  // SIGTERM, then SIGKILL after `grace`; OK once it is gone (or was).
  Status Terminate(std::chrono::milliseconds grace = std::chrono::seconds(3)) const;
  bool operator==(const ProcessIdentity&) const = default;
};

// Reads the identity of a live process.
Result<ProcessIdentity> IdentifyProcess(pid_t pid);

Result<ProcessIdentity> SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path);

}  // namespace uffdpager::lifecycle
