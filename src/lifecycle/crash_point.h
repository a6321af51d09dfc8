// Crash points: fault injection for the crash-safety tests. When the
// environment variable UFFDPAGER_LIFECYCLE_CRASH_AT names a point, the
// process _exits there (status 86) as if it had been killed: no destructor,
// no cleanup, nothing flushed that was not already durable.
#pragma once

namespace uffdpager::lifecycle {

inline constexpr int kCrashExitCode = 86;
void CrashPoint(const char* name);

}  // namespace uffdpager::lifecycle
