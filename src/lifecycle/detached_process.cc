#include "lifecycle/detached_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/process_handle.h"
#include "common/unique_fd.h"
#include "common/wait_for.h"
#include "common/durable_file.h"
#include "common/exec_child.h"

namespace uffdpager::lifecycle {

namespace {

struct ProcStat {
  char state = '?';
  uint64_t start_time = 0;
};

Result<ProcStat> ReadProcStat(pid_t pid) {
  auto text = ReadWholeFile("/proc/" + std::to_string(pid) + "/stat");
  if (!text.ok()) return text.status();
  // "pid (comm) S ppid ..." — comm may hold spaces and parentheses, so parse
  // from the last ')'.
  size_t close = text->rfind(')');
  if (close == std::string::npos || close + 2 >= text->size()) {
    return Status::Protocol("unreadable /proc/" + std::to_string(pid) + "/stat");
  }
  ProcStat out;
  out.state = (*text)[close + 2];
  // Fields after comm: 3 state, 4 ppid, ... 22 starttime.
  size_t at = close + 2;
  for (int field = 3; field < 22; ++field) {
    at = text->find(' ', at);
    if (at == std::string::npos) return Status::Protocol("short /proc/" + std::to_string(pid) + "/stat");
    ++at;
  }
  out.start_time = std::strtoull(text->c_str() + at, nullptr, 10);
  return out;
}

bool WriteAll(int fd, const void* data, size_t len) {
  return ::write(fd, data, len) == static_cast<ssize_t>(len);
}

}  // namespace

Result<ProcessIdentity> IdentifyProcess(pid_t pid) {
  auto st = ReadProcStat(pid);
  if (!st.ok()) return st.status();
  return ProcessIdentity{pid, st->start_time};
}

bool ProcessIdentity::IsAlive() const {
  if (pid <= 0) return false;
  auto st = ReadProcStat(pid);
  return st.ok() && st->start_time == start_time && st->state != 'Z' && st->state != 'X';
}

Status ProcessIdentity::Terminate(std::chrono::milliseconds grace) const {
  if (!IsAlive()) return Status::Ok();
  // Signal through a pidfd opened after the identity check: the pid cannot be
  // reused between the check and the signal.
  auto handle = ProcessHandle::Open(pid);
  if (!handle.ok()) return IsAlive() ? handle.status() : Status::Ok();
  if (!IsAlive()) return Status::Ok();
  (void)handle->Signal(SIGTERM);
  if (WaitFor([&] { return !IsAlive(); }, grace)) return Status::Ok();
  (void)handle->Signal(SIGKILL);
  if (WaitFor([&] { return !IsAlive(); }, std::chrono::seconds(10))) return Status::Ok();
  return Status::Timeout("process " + std::to_string(pid) + " did not exit after SIGKILL");
}

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
