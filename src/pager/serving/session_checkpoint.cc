#include "pager/serving/session_checkpoint.h"

#include <algorithm>
#include <atomic>
#include <chrono>

namespace uffdpager {

const char* SessionPhaseName(SessionPhase phase) { return phase == SessionPhase::kServing ? "serving" : "waiting"; }

const char* SessionFdRoleName(SessionFdRole role) {
  switch (role) {
    case SessionFdRole::kListener: return "listen";
    case SessionFdRole::kUffd: return "uffd";
    case SessionFdRole::kConnection: return "conn";
    case SessionFdRole::kClient: return "pidfd";
  }
  return "unknown";
}

UniqueFd& FdForRole(SessionFds& fds, SessionFdRole role) {
  switch (role) {
    case SessionFdRole::kListener: return fds.listener;
    case SessionFdRole::kUffd: return fds.uffd;
    case SessionFdRole::kConnection: return fds.connection;
    case SessionFdRole::kClient: break;
  }
  return fds.client;
}

uint64_t NextSessionIncarnation() {
  static std::atomic<uint64_t> last{0};
  uint64_t now = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  uint64_t prev = last.load();
  uint64_t next;
  do {
    next = std::max(now, prev + 1);
  } while (!last.compare_exchange_weak(prev, next));
  return next;
}

}  // namespace uffdpager
