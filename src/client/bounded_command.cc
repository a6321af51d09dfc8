#include "client/bounded_command.h"

#include "common/exec_child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/unique_fd.h"

namespace uffdpager {

namespace {

// Enough to show why a start failed; systemctl's message is a few lines.
constexpr size_t kMaxOutput = 16 * 1024;

// argv[0] as execv needs it. PATH is searched here, before fork, because
// execvp is not async-signal-safe and the caller may be multi-threaded.
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  size_t begin = 0;
  while (begin <= dirs.size()) {
    size_t end = dirs.find(':', begin);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = end > begin ? dirs.substr(begin, end - begin) : ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return name;  // execv fails with ENOENT, which names it
}

void KeepTail(std::string* output) {
  if (output->size() > kMaxOutput) output->erase(0, output->size() - kMaxOutput);
}

}  // namespace

std::string DescribeCommand(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("@%+=:,./_-{}", c) != nullptr;
    });
    if (plain) {
      out += arg;
      continue;
    }
    out += '\'';
    for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

std::string OutputForMessage(const std::string& output) {
  size_t end = output.find_last_not_of(" \t\r\n");
  return end == std::string::npos ? "(none)" : output.substr(0, end + 1);
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return "was killed by signal " + std::to_string(WTERMSIG(wait_status));
  return "ended with wait status " + std::to_string(wait_status);
}

Result<CommandOutcome> RunBoundedCommand(const std::vector<std::string>& args,
                                         std::chrono::steady_clock::time_point deadline) {
  if (args.empty() || args[0].empty()) return Status::InvalidArgument("empty command");
  std::vector<std::string> copy = args;
  copy[0] = ResolveProgram(args[0]);
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Everything is opened before fork: between fork and exec only
  // async-signal-safe calls.
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return Status::FromErrno(errno, "open /dev/null");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) return Status::FromErrno(errno, "pipe");
  UniqueFd out_reader(fds[0]), out_writer(fds[1]);
  // Carries exec's errno; closes unwritten (EOF) when exec succeeds.
  if (::pipe2(fds, O_CLOEXEC) < 0) return Status::FromErrno(errno, "pipe");
  UniqueFd err_reader(fds[0]), err_writer(fds[1]);

  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    // Its own process group, so a timeout kills whatever it started too
    // (a pager it starts detached leaves the group with setsid).
    ::setpgid(0, 0);
    PrepareChildForExec(null.get(), out_writer.get(), out_writer.get());
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(argv[0], argv.data());
    int error = errno;
    (void)!::write(err_writer.get(), &error, sizeof(error));
    ::_exit(127);
  }
  // Also here, so the group exists even if the deadline passes before the
  // child has run (a killpg would then miss it).
  ::setpgid(pid, pid);
  out_writer.reset();
  err_writer.reset();

  CommandOutcome outcome;
  bool output_open = true;
  auto read_some = [&] {
    char buf[4096];
    ssize_t n = ::read(out_reader.get(), buf, sizeof(buf));
    if (n > 0) {
      outcome.output.append(buf, static_cast<size_t>(n));
      KeepTail(&outcome.output);
    } else if (n == 0 || errno != EINTR) {
      output_open = false;
    }
  };
  for (;;) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      outcome.wait_status = st;
      break;
    }
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      // SIGKILL cannot be ignored: this returns.
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      return Status::Timeout("`" + DescribeCommand(args) + "` did not finish in time and was killed; its output: " +
                             OutputForMessage(outcome.output));
    }
    int wait_ms = static_cast<int>(std::min<int64_t>(left.count(), 20));
    pollfd p{out_reader.get(), POLLIN, 0};
    if (output_open && ::poll(&p, 1, wait_ms) > 0) {
      read_some();
    } else if (!output_open) {
      ::poll(nullptr, 0, wait_ms);
    }
  }
  // After the exit, read only what is already there (and not without end): a
  // daemon the command started in the background may hold the pipe open, and
  // write to it, for ever.
  pollfd p{out_reader.get(), POLLIN, 0};
  for (int i = 0; i < 64 && output_open && ::poll(&p, 1, 0) > 0; ++i) read_some();

  int exec_error = 0;
  if (::read(err_reader.get(), &exec_error, sizeof(exec_error)) == static_cast<ssize_t>(sizeof(exec_error))) {
    return Status::FromErrno(exec_error, "execute " + copy[0] + " (" + DescribeCommand(args) + ")");
  }
  return outcome;
}

}  // namespace uffdpager
