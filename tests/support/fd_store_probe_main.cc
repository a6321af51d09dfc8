// fd_store_probe: a tiny service for FdStoreSupervisor's tests. It uses
// libsystemd's own client side (sd_listen_fds_with_names,
// sd_pid_notify_with_fds), so the tests check the supervisor against the
// real library, not against our reading of the protocol.
//
//   fd_store_probe REPORT ACTION...
//
// At start it appends to REPORT what it was passed:
//   start pid=P listen_fds=N
//   fd=3 name=NAME cloexec=0 line=FIRST-LINE     (one per passed fd)
//   open=0,1,2,3                                 (every fd it has open)
//   end
// then runs the actions in order and sleeps until killed. An action prefixed
// "fresh:" runs only when no fds were passed, "restarted:" only when some were.
//   store-memfd=NAME:TEXT        memfd holding TEXT\n, FDSTORE=1
//   store-memfd-noname=TEXT      the same without FDNAME=
//   store-pipe=NAME:TEXT         read end of a pipe holding TEXT\n (the probe
//   store-pipe-nopoll=NAME:TEXT  keeps the write end), the latter with FDPOLL=0
//   store-socket=NAME            one end of a socketpair (the probe keeps the
//   store-socket-nopoll=NAME     other), the latter with FDPOLL=0
//   store-dup=NAME:TEXT          a memfd sent as {fd, dup(fd)}, then again
//   store-reopen=NAME:TEXT       a memfd and a second open() of it, together
//   store-many=NAME:K            K memfds in one message
//   remove=NAME                  FDSTOREREMOVE=1
//   ready | stopping | watchdog | status=TEXT
//   ignore-term                  SIGTERM is ignored from here on
//   exit=N                       exits with N
// SIGUSR1 closes every kept peer (socket ends, pipe write ends), so the
// stored ends hang up. It stays blocked and the main loop takes it with
// sigwaitinfo: under TSan an asynchronous handler's signal was sometimes
// never seen (the peers stayed open with nothing pending).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::vector<int> g_peers;  // kept ends; the main loop closes them on SIGUSR1

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fd_store_probe: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(2);
}

void Notify(const std::string& state, const std::vector<int>& fds = {}) {
  int r = sd_pid_notify_with_fds(0, 0, state.c_str(), fds.empty() ? nullptr : fds.data(),
                                 static_cast<unsigned>(fds.size()));
  if (r <= 0) {
    errno = r < 0 ? -r : ENOENT;
    Die("sd_pid_notify_with_fds " + state);
  }
}

std::string StoreState(const std::string& name, bool poll) {
  std::string s = "FDSTORE=1\nFDNAME=" + name;
  if (!poll) s += "\nFDPOLL=0";
  return s;
}

int MemfdWith(const std::string& text) {
  int fd = memfd_create("probe", MFD_CLOEXEC);
  if (fd < 0) Die("memfd_create");
  std::string line = text + "\n";
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) Die("write memfd");
  return fd;
}

// The first line readable from a passed fd, without blocking for long.
std::string FirstLine(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return "<fstat failed>";
  char buf[256] = {};
  ssize_t n = -1;
  if (S_ISREG(st.st_mode)) {
    n = pread(fd, buf, sizeof(buf) - 1, 0);
  } else if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    struct pollfd p {
      fd, POLLIN, 0
    };
    if (poll(&p, 1, 200) == 1 && (p.revents & POLLIN)) n = read(fd, buf, sizeof(buf) - 1);
  }
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  return s.substr(0, s.find('\n'));
}

// `fd_flags`: F_GETFD of each passed fd as exec left it (sd_listen_fds sets
// FD_CLOEXEC on them).
void Report(const char* path, int n, char** names, const std::vector<int>& fd_flags) {
  std::string out = "start pid=" + std::to_string(getpid()) + " listen_fds=" + std::to_string(n) + "\n";
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    int flags = i < static_cast<int>(fd_flags.size()) ? fd_flags[i] : -1;
    out += "fd=" + std::to_string(fd) + " name=" + (names && names[i] ? names[i] : "?") + " cloexec=" +
           std::to_string(flags < 0              ? -1
                          : (flags & FD_CLOEXEC) ? 1
                                                 : 0) +
           " line=" + FirstLine(fd) + "\n";
  }
  // Before libsystemd or anything else of ours opens a file.
  out += "open=";
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) Die("opendir /proc/self/fd");
  std::vector<int> open_fds;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd != dirfd(dir)) open_fds.push_back(fd);
  }
  closedir(dir);
  std::sort(open_fds.begin(), open_fds.end());
  for (size_t i = 0; i < open_fds.size(); ++i) out += (i ? "," : "") + std::to_string(open_fds[i]);
  out += "\nend\n";
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) Die(std::string("open ") + path);
  if (write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) Die("write report");
  close(fd);
}

// "NAME:TEXT" -> NAME, TEXT
std::pair<std::string, std::string> NameAndText(const std::string& arg) {
  size_t colon = arg.find(':');
  if (colon == std::string::npos) return {arg, ""};
  return {arg.substr(0, colon), arg.substr(colon + 1)};
}

void StorePipe(const std::string& arg, bool poll) {
  auto [name, text] = NameAndText(arg);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) Die("pipe2");
  std::string line = text + "\n";
  if (write(p[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) Die("write pipe");
  Notify(StoreState(name, poll), {p[0]});
  close(p[0]);
  g_peers.push_back(p[1]);
}

void StoreSocket(const std::string& name, bool poll) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) Die("socketpair");
  Notify(StoreState(name, poll), {sv[0]});
  close(sv[0]);
  g_peers.push_back(sv[1]);
}

void RunAction(const std::string& action) {
  auto arg_of = [&](const char* key) -> const char* {
    size_t len = std::strlen(key);
    return action.compare(0, len, key) == 0 ? action.c_str() + len : nullptr;
  };
  if (const char* a = arg_of("store-memfd=")) {
    auto [name, text] = NameAndText(a);
    int fd = MemfdWith(text);
    Notify(StoreState(name, true), {fd});
    close(fd);
  } else if (const char* a = arg_of("store-memfd-noname=")) {
    int fd = MemfdWith(a);
    Notify("FDSTORE=1", {fd});
    close(fd);
  } else if (const char* a = arg_of("store-pipe=")) {
    StorePipe(a, true);
  } else if (const char* a = arg_of("store-pipe-nopoll=")) {
    StorePipe(a, false);
  } else if (const char* a = arg_of("store-socket=")) {
    StoreSocket(a, true);
  } else if (const char* a = arg_of("store-socket-nopoll=")) {
    StoreSocket(a, false);
  } else if (const char* a = arg_of("store-dup=")) {
    auto [name, text] = NameAndText(a);
    int fd = MemfdWith(text);
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) Die("dup");
    Notify(StoreState(name, true), {fd, copy});
    Notify(StoreState(name, true), {fd});
    close(copy);
    close(fd);
  } else if (const char* a = arg_of("store-reopen=")) {
    auto [name, text] = NameAndText(a);
    int fd = MemfdWith(text);
    int again = open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR | O_CLOEXEC);
    if (again < 0) Die("reopen memfd");
    Notify(StoreState(name, true), {fd, again});
    close(again);
    close(fd);
  } else if (const char* a = arg_of("store-many=")) {
    auto [name, count] = NameAndText(a);
    std::vector<int> fds;
    for (int i = 0; i < std::atoi(count.c_str()); ++i) fds.push_back(MemfdWith(name + std::to_string(i)));
    Notify(StoreState(name, true), fds);
    for (int fd : fds) close(fd);
  } else if (const char* a = arg_of("remove=")) {
    Notify(std::string("FDSTOREREMOVE=1\nFDNAME=") + a);
  } else if (action == "ready") {
    Notify("READY=1");
  } else if (action == "stopping") {
    Notify("STOPPING=1");
  } else if (action == "watchdog") {
    Notify("WATCHDOG=1");
  } else if (const char* a = arg_of("status=")) {
    Notify(std::string("STATUS=") + a);
  } else if (action == "ignore-term") {
    signal(SIGTERM, SIG_IGN);
  } else if (const char* a = arg_of("exit=")) {
    std::exit(std::atoi(a));
  } else {
    std::fprintf(stderr, "fd_store_probe: unknown action %s\n", action.c_str());
    std::exit(2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fd_store_probe REPORT ACTION...\n");
    return 2;
  }
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, nullptr);

  std::vector<int> fd_flags;
  if (const char* e = getenv("LISTEN_FDS")) {
    for (int i = 0; i < std::atoi(e) && i < 4096; ++i) fd_flags.push_back(fcntl(SD_LISTEN_FDS_START + i, F_GETFD));
  }
  char** names = nullptr;
  int n = sd_listen_fds_with_names(0, &names);
  if (n < 0) {
    errno = -n;
    Die("sd_listen_fds_with_names");
  }
  Report(argv[1], n, names, fd_flags);
  for (int i = 0; names && names[i]; ++i) free(names[i]);
  free(names);

  for (int i = 2; i < argc; ++i) {
    std::string action = argv[i];
    if (action.rfind("fresh:", 0) == 0) {
      if (n > 0) continue;
      action = action.substr(6);
    } else if (action.rfind("restarted:", 0) == 0) {
      if (n == 0) continue;
      action = action.substr(10);
    }
    RunAction(action);
  }
  for (;;) {
    if (sigwaitinfo(&usr1, nullptr) != SIGUSR1) continue;
    for (int fd : g_peers) close(fd);
    g_peers.clear();
  }
}
