#include "support/fd_store_supervisor.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

extern char** environ;

namespace uffdpager::testing {

namespace {

constexpr int kListenFdsStart = 3;         // SD_LISTEN_FDS_START
constexpr size_t kNotifyBufferMax = 4096;  // systemd's NOTIFY_BUFFER_MAX (PIPE_BUF)
constexpr size_t kFdNameMax = 255;         // systemd's FDNAME_MAX
constexpr size_t kMaxErrorsKept = 1000;
constexpr int kPollIntervalMs = 1000;  // a safety net; changes wake the thread at once

// systemd's fdname_is_valid: printable ASCII without ':' (the separator in
// LISTEN_FDNAMES), at most 255 characters; empty is allowed.
bool FdNameIsValid(std::string_view name) {
  if (name.size() > kFdNameMax) return false;
  for (char c : name) {
    if (c < ' ' || c >= 127 || c == ':') return false;
  }
  return true;
}

std::string ReadFdInfo(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Whether `a` and `b` are the same open file description (dup'ed or passed
// twice), which systemd stores once. The same inode alone is not enough: two
// open()s of one file, or two eventfds on the shared anonymous inode, differ.
bool SameOpenFile(int a, int b, bool use_kcmp) {
  if (a == b) return true;
  struct stat sa {
  }, sb{};
  if (::fstat(a, &sa) != 0 || ::fstat(b, &sb) != 0) return false;
  if (sa.st_dev != sb.st_dev || sa.st_ino != sb.st_ino) return false;
  if (use_kcmp) {
    pid_t self = ::getpid();
    long r = ::syscall(SYS_kcmp, self, self, KCMP_FILE, a, b);
    if (r >= 0) return r == 0;
  }
  // Without kcmp: everything the kernel shows per description (position,
  // flags, and type-specific state such as an eventfd's id) must match.
  std::string ia = ReadFdInfo(a);
  return !ia.empty() && ia == ReadFdInfo(b);
}

// Writes `value` in decimal, NUL-terminated. Async-signal-safe: used between
// fork and exec.
void WriteDecimal(char* out, unsigned long value) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
}

// Everything the child needs between fork and exec, prepared before fork:
// the parent has other threads, so the child may only make async-signal-safe
// calls (no malloc, no setenv, no locks). Pointers refer into the plan
// itself, so it is built in place and never moved.
class ExecPlan {
 public:
  ExecPlan() = default;
  ExecPlan(const ExecPlan&) = delete;
  ExecPlan& operator=(const ExecPlan&) = delete;

  Status Build(const std::vector<std::string>& argv, const std::string& log_path, const std::string& notify_socket,
               const std::vector<int>& store_fds, const std::vector<std::string>& store_names) {
    const int n = static_cast<int>(store_fds.size());
    // Every fd the child dup2()s from sits above the target range
    // 0..kListenFdsStart+n-1, so no dup2 overwrites a source still needed.
    const int above = kListenFdsStart + n;
    first_unused_ = above;
    if (!log_path.empty()) {
      UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!log) return Status::FromErrno(errno, "open log " + log_path);
      UFFD_RETURN_IF_ERROR(MoveAbove(log, above, &log_));
    }
    UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null) return Status::FromErrno(errno, "open /dev/null");
    UFFD_RETURN_IF_ERROR(MoveAbove(null, above, &null_));
    for (int fd : store_fds) {
      UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, above));
      if (!copy) return Status::FromErrno(errno, "dup stored fd " + std::to_string(fd));
      passed_.push_back(std::move(copy));
    }

    argv_strings_ = argv;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view entry(*e);
      // Ours describe whoever supervises us; the child gets its own.
      if (entry.starts_with("NOTIFY_SOCKET=") || entry.starts_with("LISTEN_FDS=") || entry.starts_with("LISTEN_PID=") ||
          entry.starts_with("LISTEN_FDNAMES=") || entry.starts_with("WATCHDOG_PID=") ||
          entry.starts_with("WATCHDOG_USEC=")) {
        continue;
      }
      env_strings_.emplace_back(entry);
    }
    env_strings_.push_back("NOTIFY_SOCKET=" + notify_socket);
    if (n > 0) {
      env_strings_.push_back("LISTEN_FDS=" + std::to_string(n));
      std::string names = "LISTEN_FDNAMES=";
      for (size_t i = 0; i < store_names.size(); ++i) {
        if (i > 0) names += ':';
        names += store_names[i];
      }
      env_strings_.push_back(std::move(names));
      pass_listen_pid_ = true;
    }
    // Pointers last: the strings no longer move.
    for (auto& a : argv_strings_) argv_.push_back(a.data());
    argv_.push_back(nullptr);
    for (auto& e : env_strings_) envp_.push_back(e.data());
    if (pass_listen_pid_) envp_.push_back(listen_pid_);  // digits written in the child
    envp_.push_back(nullptr);
    return Status::Ok();
  }

  // In the child after fork: async-signal-safe calls only.
  [[noreturn]] void RunInChild() {
    if (log_) {
      ::dup2(log_.get(), 1);
      ::dup2(log_.get(), 2);
    }
    ::dup2(null_.get(), 0);
    for (size_t i = 0; i < passed_.size(); ++i) {
      // dup2 leaves the new fd without FD_CLOEXEC: it survives exec.
      ::dup2(passed_[i].get(), kListenFdsStart + static_cast<int>(i));
    }
    // Like systemd, nothing else of ours reaches the program: not the
    // sources above, nor fds another thread of the test opened without
    // O_CLOEXEC.
    if (::syscall(SYS_close_range, static_cast<unsigned>(first_unused_), ~0U, 0) != 0) {
      for (int fd = first_unused_; fd < 65536; ++fd) ::close(fd);
    }
    if (pass_listen_pid_) WriteDecimal(listen_pid_ + kListenPidPrefixLength, static_cast<unsigned long>(::getpid()));
    // A service starts with default signal handling and nothing blocked.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv_[0], argv_.data(), envp_.data());
    ::_exit(127);
  }

 private:
  static Status MoveAbove(UniqueFd& fd, int above, UniqueFd* out) {
    if (fd.get() >= above) {
      *out = std::move(fd);
      return Status::Ok();
    }
    out->reset(::fcntl(fd.get(), F_DUPFD_CLOEXEC, above));
    if (!*out) return Status::FromErrno(errno, "fcntl F_DUPFD_CLOEXEC");
    return Status::Ok();
  }

  static constexpr size_t kListenPidPrefixLength = sizeof("LISTEN_PID=") - 1;

  std::vector<std::string> argv_strings_;
  std::vector<std::string> env_strings_;
  std::vector<char*> argv_;
  std::vector<char*> envp_;
  // Room for "LISTEN_PID=" and any pid: the pid is only known after fork.
  char listen_pid_[32] = "LISTEN_PID=";
  bool pass_listen_pid_ = false;
  int first_unused_ = kListenFdsStart;
  UniqueFd log_;
  UniqueFd null_;
  std::vector<UniqueFd> passed_;  // close-on-exec copies of the store, in order
};

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

}  // namespace

FdStoreSupervisor::FdStoreSupervisor(FdStoreSupervisorOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<FdStoreSupervisor>> FdStoreSupervisor::Start(FdStoreSupervisorOptions options) {
  if (options.argv.empty()) return Status::InvalidArgument("FdStoreSupervisor: empty argv");
  std::unique_ptr<FdStoreSupervisor> s(new FdStoreSupervisor(std::move(options)));
  UFFD_RETURN_IF_ERROR(s->Bind());
  s->wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake_fd_) return Status::FromErrno(errno, "eventfd");
  FdStoreSupervisor* self = s.get();
  s->thread_ = std::thread([self] { self->Run(); });
  Status st;
  {
    std::lock_guard<std::mutex> lock(s->mu_);
    st = s->SpawnLocked();
  }
  if (!st.ok()) return st;
  return s;
}

Status FdStoreSupervisor::Bind() {
  std::string dir = options_.socket_dir;
  if (dir.empty()) {
    char tmpl[] = "/tmp/uffdfs.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return Status::FromErrno(errno, "mkdtemp");
    own_dir_ = dir = tmpl;
  }
  socket_path_ = dir + "/notify.sock";
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("notify socket path too long: " + socket_path_);
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  notify_fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!notify_fd_) return Status::FromErrno(errno, "socket AF_UNIX SOCK_DGRAM");
  ::unlink(socket_path_.c_str());  // a stale socket of an earlier run
  if (::bind(notify_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::FromErrno(errno, "bind " + socket_path_);
  }
  // The kernel then attaches the sender's pid to every datagram: that is how
  // NotifyAccess=main tells the main process from anyone else.
  int one = 1;
  if (::setsockopt(notify_fd_.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
    return Status::FromErrno(errno, "setsockopt SO_PASSCRED");
  }
  // As systemd: a large receive buffer, so a burst of FDSTORE messages does
  // not stall the sender. Best effort (SO_RCVBUFFORCE needs CAP_NET_ADMIN).
  int size = 8 << 20;
  if (::setsockopt(notify_fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0) {
    (void)::setsockopt(notify_fd_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  return Status::Ok();
}

FdStoreSupervisor::~FdStoreSupervisor() {
  if (thread_.joinable()) (void)Stop(std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  // Only if the thread could not reap the child (it did not exit even after
  // SIGKILL, or the thread never ran): a last bounded attempt.
  if (child_running_) {
    SignalLocked(SIGKILL);
    for (int i = 0; i < 1000; ++i) {
      if (::waitpid(child_pid_, nullptr, WNOHANG) != 0) break;
      ::usleep(10000);
    }
    child_running_ = false;
  }
  store_.clear();
  notify_fd_.reset();
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
  if (!own_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(own_dir_, ec);
  }
}

void FdStoreSupervisor::Wake() {
  uint64_t one = 1;
  if (wake_fd_) (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

Status FdStoreSupervisor::SpawnLocked() {
  std::vector<int> fds;
  std::vector<std::string> names;
  for (const auto& s : store_) {
    fds.push_back(s.fd.get());
    names.push_back(s.name);
  }
  ExecPlan plan;
  UFFD_RETURN_IF_ERROR(plan.Build(options_.argv, options_.log_path, socket_path_, fds, names));
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) plan.RunInChild();
  // A pidfd tells the thread when the child exited, and signals it without
  // the risk of hitting a recycled pid.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    Status st = Status::FromErrno(errno, "pidfd_open " + std::to_string(pid));
    ::kill(pid, SIGKILL);
    for (int i = 0; i < 1000 && ::waitpid(pid, nullptr, WNOHANG) == 0; ++i) ::usleep(10000);
    return st;
  }
  child_pid_ = pid;
  child_pidfd_ = std::move(pidfd);
  child_running_ = true;
  wait_status_ = 0;
  ready_ = false;
  stopping_ = false;
  status_.clear();
  ++starts_;
  changed_.notify_all();
  Wake();
  return Status::Ok();
}

void FdStoreSupervisor::SignalLocked(int signal) {
  if (!child_running_) return;
  if (child_pidfd_ && ::syscall(SYS_pidfd_send_signal, child_pidfd_.get(), signal, nullptr, 0) == 0) return;
  // Not reaped yet (only the thread reaps, under mu_), so the pid is still ours.
  ::kill(child_pid_, signal);
}

bool FdStoreSupervisor::WaitForExitLocked(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds timeout) {
  return changed_.wait_for(lock, timeout, [this] { return !child_running_; });
}

Status FdStoreSupervisor::KillAndRestart(int signal, std::chrono::milliseconds exit_timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  SignalLocked(signal);
  if (!WaitForExitLocked(lock, exit_timeout)) {
    return Status::Timeout("pid " + std::to_string(child_pid_) + " did not exit after signal " +
                           std::to_string(signal));
  }
  return SpawnLocked();
}

Status FdStoreSupervisor::Restart(std::chrono::milliseconds exit_timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!WaitForExitLocked(lock, exit_timeout)) {
    return Status::Conflict("pid " + std::to_string(child_pid_) + " is still running");
  }
  return SpawnLocked();
}

Status FdStoreSupervisor::Stop(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  Status st;
  if (child_running_) {
    SignalLocked(SIGTERM);
    if (!WaitForExitLocked(lock, timeout)) {
      SignalLocked(SIGKILL);
      if (!WaitForExitLocked(lock, std::chrono::seconds(10))) {
        st = Status::Timeout("pid " + std::to_string(child_pid_) + " survived SIGKILL");
      }
    }
  }
  // Stopped for good: systemd releases the store.
  store_.clear();
  ++store_generation_;
  ready_ = false;
  stopping_ = false;
  changed_.notify_all();
  Wake();
  return st;
}

void FdStoreSupervisor::Run() {
  std::vector<pollfd> pfds;
  for (;;) {
    int polled_pidfd = -1;
    uint64_t generation = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (quit_) return;
      pfds.clear();
      pfds.push_back({wake_fd_.get(), POLLIN, 0});
      pfds.push_back({notify_fd_.get(), POLLIN, 0});
      polled_pidfd = child_pidfd_.get();
      pfds.push_back({polled_pidfd, POLLIN, 0});  // -1: poll skips it
      // events = 0: only POLLHUP and POLLERR, which poll always reports, as
      // systemd watches stored fds (sd_event_add_io with no events).
      for (const auto& s : store_) {
        if (s.poll) pfds.push_back({s.fd.get(), 0, 0});
      }
      generation = store_generation_;
    }
    int n = ::poll(pfds.data(), pfds.size(), kPollIntervalMs);
    int poll_errno = errno;
    std::lock_guard<std::mutex> lock(mu_);
    if (n < 0) {
      if (poll_errno != EINTR) RecordErrorLocked("poll: " + std::string(std::strerror(poll_errno)));
      continue;
    }
    if (pfds[0].revents & POLLIN) {
      uint64_t count;
      (void)!::read(wake_fd_.get(), &count, sizeof(count));
    }
    // Datagrams first, then the exit: a child's last messages (sent before it
    // died) count as its own, as systemd dispatches notify before SIGCHLD.
    DrainNotifySocketLocked();
    if (polled_pidfd >= 0 && polled_pidfd == child_pidfd_.get() && pfds[2].revents != 0) ReapLocked();
    // Only if the store did not change since poll: the fd numbers still mean
    // the same files.
    if (generation == store_generation_) {
      for (size_t i = 3; i < pfds.size(); ++i) {
        if (pfds[i].revents & (POLLHUP | POLLERR)) DropHungUpLocked(pfds[i].fd);
      }
    }
    changed_.notify_all();
  }
}

void FdStoreSupervisor::DrainNotifySocketLocked() {
  char buf[kNotifyBufferMax + 1];
  const size_t control_size =
      CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * std::max<size_t>(options_.max_fds_per_message, 1));
  std::vector<cmsghdr> control(control_size / sizeof(cmsghdr) + 1);  // aligned for cmsghdr
  for (;;) {
    struct iovec iov {
      buf, kNotifyBufferMax
    };
    struct msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control_size;
    // MSG_TRUNC: the real length comes back, so an overlong datagram shows.
    ssize_t n = ::recvmsg(notify_fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        RecordErrorLocked("recvmsg on notify socket: " + std::string(std::strerror(errno)));
      }
      return;
    }
    std::vector<UniqueFd> fds;  // closed unless the store takes them
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          fds.emplace_back(fd);
        }
      } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
        struct ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof(cred));
        sender = cred.pid;
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      RecordErrorLocked("notify message with truncated control data (too many fds?), dropped with " +
                        std::to_string(fds.size()) + " fds that did arrive");
      continue;
    }
    if (sender <= 0) {
      ++rejected_;
      RecordErrorLocked("notify message without valid credentials, ignored");
      continue;
    }
    if (static_cast<size_t>(n) > kNotifyBufferMax || (msg.msg_flags & MSG_TRUNC)) {
      RecordErrorLocked("notify message of " + std::to_string(n) + " bytes exceeds the maximum size, ignored");
      continue;
    }
    // One trailing NUL is allowed; embedded ones are not.
    if (n > 1 && std::memchr(buf, 0, static_cast<size_t>(n) - 1) != nullptr) {
      RecordErrorLocked("notify message with embedded NUL bytes, ignored");
      continue;
    }
    std::string_view text(buf, static_cast<size_t>(n));
    if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
    HandleMessageLocked(text, sender, std::move(fds));
  }
}

void FdStoreSupervisor::HandleMessageLocked(std::string_view text, pid_t sender, std::vector<UniqueFd> fds) {
  // NotifyAccess=main: only the current child; a reaped child is nobody.
  if (!child_running_ || sender != child_pid_) {
    ++rejected_;
    RecordErrorLocked("notify message from pid " + std::to_string(sender) +
                      ", but reception only permitted for main pid " +
                      (child_running_ ? std::to_string(child_pid_) : std::string("(none)")) + ", ignored" +
                      (fds.empty() ? "" : " with its " + std::to_string(fds.size()) + " fds"));
    return;
  }
  ++accepted_;
  const std::vector<std::string_view> lines = SplitLines(text);
  auto has = [&](std::string_view line) { return std::find(lines.begin(), lines.end(), line) != lines.end(); };
  // The first assignment of `key` wins, as strv_find_startswith.
  auto value = [&](std::string_view key) -> std::optional<std::string_view> {
    for (auto line : lines) {
      if (line.starts_with(key)) return line.substr(key.size());
    }
    return std::nullopt;
  };

  if (has("READY=1")) ready_ = true;
  if (has("STOPPING=1")) stopping_ = true;
  if (auto status = value("STATUS=")) status_ = std::string(*status);
  if (auto watchdog = value("WATCHDOG=")) {
    if (*watchdog == "1") {
      ++watchdog_pings_;
    } else if (*watchdog != "trigger") {
      RecordErrorLocked("invalid WATCHDOG=" + std::string(*watchdog) + ", ignored");
    }
  }
  // FDSTOREREMOVE=1 needs FDNAME=; FDSTORE=1 defaults it. Removal wins.
  if (has("FDSTOREREMOVE=1")) {
    auto name = value("FDNAME=");
    if (!name || !FdNameIsValid(*name)) {
      RecordErrorLocked("FDSTOREREMOVE=1 without a valid FDNAME=, ignored");
    } else {
      RemoveFromStoreLocked(std::string(*name));
    }
  } else if (has("FDSTORE=1")) {
    auto name = value("FDNAME=");
    if (name && !FdNameIsValid(*name)) {
      RecordErrorLocked("invalid FDNAME=" + std::string(*name) + ", storing as \"stored\"");
      name.reset();
    }
    AddToStoreLocked(std::move(fds), name ? std::string(*name) : std::string("stored"), !has("FDPOLL=0"));
    fds.clear();
  }
  if (!fds.empty()) {
    RecordErrorLocked("got " + std::to_string(fds.size()) + " extra fds with a notify message, closed them");
  }
}

void FdStoreSupervisor::AddToStoreLocked(std::vector<UniqueFd> fds, const std::string& name, bool poll) {
  for (auto& fd : fds) {
    if (store_.size() >= options_.fd_store_max) {
      RecordErrorLocked("cannot store more fds than FileDescriptorStoreMax=" + std::to_string(options_.fd_store_max) +
                        ", closing the remaining");
      return;
    }
    bool duplicate = std::any_of(store_.begin(), store_.end(), [&](const StoredFd& s) {
      return SameOpenFile(s.fd.get(), fd.get(), options_.use_kcmp);
    });
    if (duplicate) continue;  // closed with `fds`
    store_.insert(store_.begin(), StoredFd{std::move(fd), name, poll});
    ++store_generation_;
  }
}

void FdStoreSupervisor::RemoveFromStoreLocked(const std::string& name) {
  if (std::erase_if(store_, [&](const StoredFd& s) { return s.name == name; }) > 0) ++store_generation_;
}

void FdStoreSupervisor::DropHungUpLocked(int fd) {
  if (std::erase_if(store_, [&](const StoredFd& s) { return s.fd.get() == fd; }) > 0) ++store_generation_;
}

void FdStoreSupervisor::ReapLocked() {
  int status = 0;
  pid_t r = ::waitpid(child_pid_, &status, WNOHANG);
  if (r == 0) return;  // not a zombie yet
  if (r < 0) RecordErrorLocked("waitpid " + std::to_string(child_pid_) + ": " + std::strerror(errno));
  child_running_ = false;
  wait_status_ = status;
  child_pidfd_.reset();
}

void FdStoreSupervisor::RecordErrorLocked(std::string error) {
  if (errors_.size() < kMaxErrorsKept) errors_.push_back(std::move(error));
}

FdStoreState FdStoreSupervisor::StateLocked() const {
  FdStoreState s;
  s.pid = child_pid_;
  s.running = child_running_;
  s.ready = ready_;
  s.stopping = stopping_;
  s.status = status_;
  s.starts = starts_;
  for (const auto& f : store_) s.stored_names.push_back(f.name);
  s.accepted_messages = accepted_;
  s.rejected_messages = rejected_;
  s.watchdog_pings = watchdog_pings_;
  s.errors = errors_;
  return s;
}

bool FdStoreSupervisor::WaitReady(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, timeout, [this] { return ready_; });
}

bool FdStoreSupervisor::WaitForExit(std::chrono::milliseconds timeout, int* wait_status) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!WaitForExitLocked(lock, timeout)) return false;
  if (wait_status != nullptr) *wait_status = wait_status_;
  return true;
}

bool FdStoreSupervisor::WaitForStored(const std::string& name, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, timeout, [&] {
    return std::any_of(store_.begin(), store_.end(), [&](const StoredFd& s) { return s.name == name; });
  });
}

bool FdStoreSupervisor::WaitForStoreSize(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return store_.size() == n; });
}

bool FdStoreSupervisor::WaitUntil(const std::function<bool(const FdStoreState&)>& condition,
                                  std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return condition(StateLocked()); });
}

FdStoreState FdStoreSupervisor::State() const {
  std::lock_guard<std::mutex> lock(mu_);
  return StateLocked();
}

pid_t FdStoreSupervisor::pid() const {
  std::lock_guard<std::mutex> lock(mu_);
  return child_pid_;
}

bool FdStoreSupervisor::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return child_running_;
}

bool FdStoreSupervisor::ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_;
}

std::string FdStoreSupervisor::LastStatus() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

std::vector<std::string> FdStoreSupervisor::StoredNames() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const auto& s : store_) names.push_back(s.name);
  return names;
}

size_t FdStoreSupervisor::StoredCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.size();
}

size_t FdStoreSupervisor::StoredCount(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(
      std::count_if(store_.begin(), store_.end(), [&](const StoredFd& s) { return s.name == name; }));
}

std::vector<UniqueFd> FdStoreSupervisor::DupStored(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<UniqueFd> out;
  for (const auto& s : store_) {
    if (s.name == name) out.emplace_back(::fcntl(s.fd.get(), F_DUPFD_CLOEXEC, 3));
  }
  return out;
}

uint64_t FdStoreSupervisor::rejected_messages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rejected_;
}

uint64_t FdStoreSupervisor::watchdog_pings() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watchdog_pings_;
}

std::vector<std::string> FdStoreSupervisor::Errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return errors_;
}

std::string FdStoreSupervisor::Log() const {
  if (options_.log_path.empty()) return "";
  std::ifstream in(options_.log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace uffdpager::testing
