#include "pager/continuity/systemd_fd_store.h"

#include <fcntl.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace uffdpager {

SystemdFdStore::SystemdFdStore() { enabled_ = std::getenv("NOTIFY_SOCKET") != nullptr; }

Status SystemdFdStore::Send(const std::string& state, const int* fds, unsigned n_fds) {
  if (!enabled_) return Status::Ok();
  int rc = sd_pid_notify_with_fds(0, /*unset_environment=*/0, state.c_str(), fds, n_fds);
  if (rc < 0) return Status::FromErrno(-rc, "sd_notify " + state.substr(0, state.find('\n')));
  if (rc == 0) return Status::Unavailable("NOTIFY_SOCKET vanished");
  return Status::Ok();
}

Status SystemdFdStore::Add(const std::string& name, int fd) {
  return Send("FDSTORE=1\nFDPOLL=0\nFDNAME=" + name, &fd, 1).WithContext("store fd " + name);
}

Status SystemdFdStore::Remove(const std::string& name) {
  return Send("FDSTOREREMOVE=1\nFDNAME=" + name, nullptr, 0).WithContext("remove stored fd " + name);
}

std::vector<std::pair<std::string, UniqueFd>> SystemdFdStore::TakePassedFds() {
  std::vector<std::pair<std::string, UniqueFd>> out;
  char** names = nullptr;
  int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n < 0) {
    spdlog::warn("LISTEN_FDS could not be read: errno {}", -n);
    return out;
  }
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    // Passed fds come without close-on-exec; a VMM we never start must not
    // inherit a userfaultfd either way.
    (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
    std::string name = (names != nullptr && names[i] != nullptr) ? names[i] : "unknown";
    out.emplace_back(std::move(name), UniqueFd(fd));
  }
  if (names != nullptr) {
    for (int i = 0; names[i] != nullptr; ++i) std::free(names[i]);
    std::free(names);
  }
  return out;
}

}  // namespace uffdpager
