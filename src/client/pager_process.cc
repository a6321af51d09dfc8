#include "uffdpager/pager_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

namespace uffdpager {

PagerProcess::PagerProcess(pid_t pid, std::string root_dir)
    : pid_(pid), root_dir_(std::move(root_dir)), client_(root_dir_ + "/control.sock") {}

Result<std::unique_ptr<PagerProcess>> PagerProcess::Launch(const PagerLaunchOptions& options) {
  std::vector<std::string> args = {options.binary,
                                   "--data-dir", options.data_dir,
                                   "--version-key", options.version_key,
                                   "--cache-max-bytes", std::to_string(options.cache_max_bytes),
                                   "--handshake-timeout-ms", std::to_string(options.handshake_timeout_ms)};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Opened before fork: the child may only make async-signal-safe calls.
  int log_fd = -1;
  if (!options.log_path.empty()) {
    log_fd = ::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return Status::FromErrno(errno, "open pager log " + options.log_path);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    if (log_fd >= 0) ::close(log_fd);
    return Status::FromErrno(err, "fork");
  }
  if (pid == 0) {
    if (log_fd >= 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);
  std::unique_ptr<PagerProcess> p(new PagerProcess(pid, options.data_dir + "/uffd/" + options.version_key));
  auto deadline = std::chrono::steady_clock::now() + options.ready_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      p->reaped_ = true;
      return Status::Internal("uffd-pager exited at start-up with status " + std::to_string(status) +
                              (options.log_path.empty() ? "" : "; see " + options.log_path));
    }
    if (p->client_.Health().ok()) return p;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::Timeout("uffd-pager did not answer /health on " + p->client_.control_socket_path());
}

PagerProcess::~PagerProcess() {
  if (reaped_) return;
  Signal(SIGTERM);
  if (!WaitForExit(std::chrono::seconds(10))) {
    Signal(SIGKILL);
    WaitForExit(std::chrono::seconds(10));
  }
}

void PagerProcess::Signal(int signal) {
  if (!reaped_) ::kill(pid_, signal);
}

bool PagerProcess::WaitForExit(std::chrono::milliseconds timeout, int* wait_status) {
  if (reaped_) return true;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      if (wait_status) *wait_status = status;
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace uffdpager
