#include "common/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "common/wait_for.h"

namespace uffdpager {

Result<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Opened before fork: between fork and exec only async-signal-safe calls.
  int log = -1;
  if (!log_path.empty()) {
    log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) return Status::FromErrno(errno, "open log " + log_path);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    if (log >= 0) ::close(log);
    return Status::FromErrno(err, "fork");
  }
  if (pid == 0) {
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    // The test's signal mask must not leak into the child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (log >= 0) ::close(log);
  ChildProcess p;
  p.pid_ = pid;
  p.log_path_ = log_path;
  return p;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      reaped_(o.reaped_),
      wait_status_(o.wait_status_),
      log_path_(std::move(o.log_path_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    this->~ChildProcess();
    pid_ = std::exchange(o.pid_, -1);
    reaped_ = o.reaped_;
    wait_status_ = o.wait_status_;
    log_path_ = std::move(o.log_path_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (!running()) return;
  Kill(SIGTERM);
  if (!WaitForExit(std::chrono::seconds(5))) {
    Kill(SIGKILL);
    WaitForExit(std::chrono::seconds(10));
  }
}

void ChildProcess::Kill(int signal) {
  if (running()) ::kill(pid_, signal);
}

bool ChildProcess::WaitForExit(std::chrono::milliseconds timeout, int* status) {
  if (pid_ <= 0) return true;
  bool done = reaped_ || WaitFor(
                             [&] {
                               int st = 0;
                               if (::waitpid(pid_, &st, WNOHANG) == pid_) {
                                 reaped_ = true;
                                 wait_status_ = st;
                                 return true;
                               }
                               return false;
                             },
                             timeout);
  if (done && status) *status = wait_status_;
  return done;
}

std::string ChildProcess::Log() const {
  if (log_path_.empty()) return "";
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace uffdpager
