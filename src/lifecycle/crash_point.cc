#include "lifecycle/crash_point.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace uffdpager::lifecycle {

void CrashPoint(const char* name) {
  const char* at = std::getenv("UFFDPAGER_LIFECYCLE_CRASH_AT");
  if (at != nullptr && std::strcmp(at, name) == 0) ::_exit(kCrashExitCode);
}

}  // namespace uffdpager::lifecycle
