#include "lifecycle/crash_point.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace uffdpager::lifecycle {

namespace {

bool Armed(const char* variable, const char* name) {
  const char* at = std::getenv(variable);
  return at != nullptr && std::strcmp(at, name) == 0;
}

}  // namespace

void CrashPoint(const char* name) {
  if (Armed("UFFDPAGER_LIFECYCLE_CRASH_AT", name)) ::_exit(kCrashExitCode);
}

void HoldPoint(const char* name) {
  const char* file = std::getenv("UFFDPAGER_LIFECYCLE_HOLD_FILE");
  if (!Armed("UFFDPAGER_LIFECYCLE_HOLD_AT", name) || file == nullptr) return;
  const std::string held = std::string(file) + ".held";
  int fd = ::open(held.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) ::close(fd);
  // A test hook: no bound, the test releases it (or kills the process).
  while (::access(file, F_OK) != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

}  // namespace uffdpager::lifecycle
