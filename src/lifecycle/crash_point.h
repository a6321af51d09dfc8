// Crash points: fault injection for the crash-safety tests. When the
// environment variable UFFDPAGER_LIFECYCLE_CRASH_AT names a point, the
// process _exits there (status 86) as if it had been killed: no destructor,
// no cleanup, nothing flushed that was not already durable.
//
// Hold points: for tests that must act while a command is between two
// steps (another command runs in the middle of a compaction). When
// UFFDPAGER_LIFECYCLE_HOLD_AT names the point, the process creates the file
// $UFFDPAGER_LIFECYCLE_HOLD_FILE.held and waits there until
// $UFFDPAGER_LIFECYCLE_HOLD_FILE exists. Only where no lock is held.
#pragma once

namespace uffdpager::lifecycle {

inline constexpr int kCrashExitCode = 86;
void CrashPoint(const char* name);
void HoldPoint(const char* name);

}  // namespace uffdpager::lifecycle
