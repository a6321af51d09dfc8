#include "pager/daemon/systemd_notifier.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>

namespace uffdpager {

SystemdNotifier::SystemdNotifier() : last_ping_(std::chrono::steady_clock::now()) {
  enabled_ = std::getenv("NOTIFY_SOCKET") != nullptr;
  uint64_t usec = 0;
  // > 0 only if the watchdog is on and meant for this process (WATCHDOG_PID).
  if (enabled_ && sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0) {
    watchdog_interval_ = std::chrono::microseconds(usec);
  }
}

void SystemdNotifier::Send(const std::string& state) {
  if (!enabled_) return;
  int rc = sd_notify(/*unset_environment=*/0, state.c_str());
  if (rc < 0) spdlog::warn("sd_notify({}) failed: errno {}", state, -rc);
}

void SystemdNotifier::Ready(const std::string& status) { Send("READY=1\nSTATUS=" + status); }
void SystemdNotifier::Status(const std::string& status) { Send("STATUS=" + status); }
void SystemdNotifier::Stopping() { Send("STOPPING=1"); }

bool SystemdNotifier::WatchdogDue() const {
  return watchdog_interval_.count() > 0 && std::chrono::steady_clock::now() - last_ping_ >= watchdog_interval_ / 2;
}

void SystemdNotifier::PingWatchdog() {
  last_ping_ = std::chrono::steady_clock::now();
  Send("WATCHDOG=1");
}

}  // namespace uffdpager
