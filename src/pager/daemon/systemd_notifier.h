// SystemdNotifier: the sd_notify protocol, when systemd runs the pager
// (Type=notify in uffd-pager@.service): READY=1 once the control socket
// answers, STATUS= lines, STOPPING=1, and watchdog keep-alives. Outside
// systemd (no NOTIFY_SOCKET) every call does nothing.
#pragma once

#include <chrono>
#include <string>

namespace uffdpager {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the environment.
  SystemdNotifier();

  bool enabled() const { return enabled_; }
  void Ready(const std::string& status);
  void Status(const std::string& status);
  void Stopping();

  // True when the watchdog wants a keep-alive (half its interval passed since
  // the last). The caller checks that it is healthy, then calls PingWatchdog.
  bool WatchdogDue() const;
  void PingWatchdog();

 private:
  void Send(const std::string& state);

  bool enabled_ = false;
  std::chrono::microseconds watchdog_interval_{0};  // 0: no watchdog
  std::chrono::steady_clock::time_point last_ping_;
};

}  // namespace uffdpager
