#include "lifecycle/detached_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/exec_child.h"
#include "common/unique_fd.h"

namespace uffdpager::lifecycle {

namespace {

bool WriteAll(int fd, const void* data, size_t len) { return ::write(fd, data, len) == static_cast<ssize_t>(len); }

}  // namespace

Result<ProcessIdentity> SpawnDetached(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Everything is opened before fork: between fork and exec only
  // async-signal-safe calls.
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log) return Status::FromErrno(errno, "open log " + log_path);
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return Status::FromErrno(errno, "open /dev/null");
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) < 0) return Status::FromErrno(errno, "pipe");
  UniqueFd reader(pipe_fds[0]), writer(pipe_fds[1]);

  pid_t middle = ::fork();
  if (middle < 0) return Status::FromErrno(errno, "fork");
  if (middle == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) {
      // Report the grandchild's pid (or -errno) and leave it to init.
      int32_t value = grandchild > 0 ? grandchild : -errno;
      WriteAll(writer.get(), &value, sizeof(value));
      ::_exit(0);
    }
    // Nothing of ours leaks into the VMM (the data directory's lock above
    // all); the pipe stays open only until exec succeeds (O_CLOEXEC).
    PrepareChildForExec(null.get(), log.get(), log.get());
    ::execv(argv[0], argv.data());
    int32_t error = -errno;
    WriteAll(writer.get(), &error, sizeof(error));
    ::_exit(127);
  }
  writer.reset();
  int status = 0;
  while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
  }
  int32_t pid = 0, exec_error = 0;
  if (::read(reader.get(), &pid, sizeof(pid)) != sizeof(pid)) return Status::Internal("detached spawn failed");
  if (pid < 0) return Status::FromErrno(-pid, "fork");
  // EOF (exec closed the pipe) or the exec's errno.
  if (::read(reader.get(), &exec_error, sizeof(exec_error)) == sizeof(exec_error) && exec_error < 0) {
    return Status::FromErrno(-exec_error, "exec " + args[0]);
  }
  auto identity = IdentifyProcess(pid);
  if (!identity.ok()) return identity.status().WithContext(args[0] + " exited at once; see " + log_path);
  return *identity;
}

}  // namespace uffdpager::lifecycle
