// Detached processes: the VMMs and the pager that snapctl starts must outlive
// it. They are started in a new session (setsid, double fork, so they are
// nobody's child here), with stdin on /dev/null and stdout/stderr appended to
// a log file. A started process is remembered by its identity
// (common/process_identity.h): pid plus the kernel's start time, so a later
// command never mistakes a new process that reused the pid for the VMM it
// started.
#pragma once

#include <string>
#include <vector>

#include "common/process_identity.h"
#include "uffdpager/status.h"

namespace uffdpager::lifecycle {

Result<ProcessIdentity> SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path);

}  // namespace uffdpager::lifecycle
