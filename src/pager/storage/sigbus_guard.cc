#include "pager/storage/sigbus_guard.h"

#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <mutex>

namespace uffdpager {

namespace {

// What a thread inside a guarded read armed. Plain data: the handler reads it.
struct ArmedRange {
  sigjmp_buf resume;
  uintptr_t start = 0;
  uintptr_t end = 0;
  volatile sig_atomic_t armed = 0;
};

thread_local ArmedRange armed_range;

void OnSigbus(int signal_number, siginfo_t* info, void*) {
  ArmedRange& r = armed_range;
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  if (r.armed && address >= r.start && address < r.end) {
    r.armed = 0;
    siglongjmp(r.resume, 1);
  }
  // Not ours: die of it as the process would have. Returning re-runs the
  // faulting access with the default action in place.
  ::signal(signal_number, SIG_DFL);
}

void InstallHandlerOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, nullptr);
  });
}

}  // namespace

bool RunWithSigbusGuard(const void* range, size_t length, void (*read)(void* context), void* context) {
  InstallHandlerOnce();
  ArmedRange& r = armed_range;
  r.start = reinterpret_cast<uintptr_t>(range);
  r.end = r.start + length;
  // Saves the signal mask, so the jump back also unblocks SIGBUS again.
  if (sigsetjmp(r.resume, 1) != 0) return false;
  r.armed = 1;
  read(context);
  r.armed = 0;
  return true;
}

}  // namespace uffdpager
