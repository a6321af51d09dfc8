// FdStoreSupervisor: a stand-in for systemd's service manager, for tests on
// machines whose PID 1 is not systemd. It runs one program the way systemd
// runs a Type=notify service with NotifyAccess=main and a file-descriptor
// store (FileDescriptorStoreMax=), speaking the sd_notify protocol as
// systemd 252 does:
//
//   - NOTIFY_SOCKET names a SOCK_DGRAM Unix socket with SO_PASSCRED; only
//     datagrams whose SCM_CREDENTIALS pid is the current child's are obeyed,
//     the others are counted and dropped (with any fds they carried).
//   - READY=1, STATUS=, STOPPING=1 and WATCHDOG=1 are recorded.
//   - FDSTORE=1 (FDNAME=, default "stored"; FDPOLL=0) parks the attached fds;
//     a fd whose open file description is already stored is ignored; a
//     polled fd that reports POLLHUP or POLLERR is dropped.
//   - FDSTOREREMOVE=1 with FDNAME= closes every fd stored under that name.
//
// A restart (after a kill, or after the child exited on its own) passes the
// store to the new child as systemd does: the fds at 3, 4, ... without
// close-on-exec, and LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES in its
// environment. The order is systemd's: newest stored first. The store
// survives restarts; Stop() (the service stopping for good) releases it.
//
// Every wait is bounded. Destruction stops the child (SIGTERM, then SIGKILL),
// reaps it, and closes every fd.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "uffdpager/status.h"

namespace uffdpager::testing {

struct FdStoreSupervisorOptions {
  // The program and its arguments; argv[0] is its path (no PATH search).
  std::vector<std::string> argv;
  // The child's stdout and stderr are appended here; empty: they stay ours.
  std::string log_path;
  // Where "notify.sock" is bound; empty: a temp directory of our own.
  std::string socket_dir;
  // FileDescriptorStoreMax=: further fds are closed and an error recorded.
  size_t fd_store_max = 4096;
  // Room for SCM_RIGHTS fds per datagram (systemd's NOTIFY_FD_MAX). A
  // datagram carrying more arrives with MSG_CTRUNC and is dropped.
  size_t max_fds_per_message = 768;
  // false: tell duplicates apart without kcmp(KCMP_FILE) (fstat + fdinfo),
  // the fallback for kernels without kcmp; only tests need it.
  bool use_kcmp = true;
};

// What the supervisor knows, copied under its lock; see WaitUntil.
struct FdStoreState {
  pid_t pid = -1;                         // current (or last) child; -1 before the first start
  bool running = false;                   // started and not yet reaped
  bool ready = false;                     // READY=1 from the current child
  bool stopping = false;                  // STOPPING=1 from the current child
  std::string status;                     // last STATUS= of the current child
  int starts = 0;                         // how many times the program was started
  std::vector<std::string> stored_names;  // in LISTEN_FDNAMES order
  uint64_t accepted_messages = 0;
  uint64_t rejected_messages = 0;   // from another pid, or without credentials
  uint64_t watchdog_pings = 0;      // WATCHDOG=1, over all children
  std::vector<std::string> errors;  // what systemd would log as a warning
};

class FdStoreSupervisor {
 public:
  // Binds the notify socket, starts the receiving thread, then the program.
  static Result<std::unique_ptr<FdStoreSupervisor>> Start(FdStoreSupervisorOptions options);
  ~FdStoreSupervisor();

  FdStoreSupervisor(const FdStoreSupervisor&) = delete;
  FdStoreSupervisor& operator=(const FdStoreSupervisor&) = delete;

  const std::string& notify_socket_path() const { return socket_path_; }

  // Sends `signal` to the child, waits (up to `exit_timeout`) until it is
  // reaped, then starts the program again with the store.
  Status KillAndRestart(int signal = SIGKILL, std::chrono::milliseconds exit_timeout = std::chrono::seconds(10));
  // Starts the program again after it exited on its own (waits up to
  // `exit_timeout` for that); kConflict while it keeps running.
  Status Restart(std::chrono::milliseconds exit_timeout = std::chrono::seconds(5));
  // SIGTERM, up to `timeout` for the exit, then SIGKILL; then releases the
  // store, as systemd does when a service stops for good.
  Status Stop(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // True once the current child sent READY=1.
  bool WaitReady(std::chrono::milliseconds timeout);
  // True once the current child was reaped; its wait status in *wait_status.
  bool WaitForExit(std::chrono::milliseconds timeout, int* wait_status = nullptr);
  bool WaitForStored(const std::string& name, std::chrono::milliseconds timeout);
  bool WaitForStoreSize(size_t n, std::chrono::milliseconds timeout);
  // True once `condition` holds; it is evaluated under the supervisor's lock
  // on every change, so it must not call back into the supervisor.
  bool WaitUntil(const std::function<bool(const FdStoreState&)>& condition, std::chrono::milliseconds timeout);

  FdStoreState State() const;
  pid_t pid() const;
  bool running() const;
  bool ready() const;
  std::string LastStatus() const;
  // Names of the stored fds, one per fd, in the order a restart passes them.
  std::vector<std::string> StoredNames() const;
  size_t StoredCount() const;
  size_t StoredCount(const std::string& name) const;
  // Close-on-exec duplicates of the fds stored under `name` (same open file
  // descriptions), for a test to look at what the service parked.
  std::vector<UniqueFd> DupStored(const std::string& name) const;
  uint64_t rejected_messages() const;
  uint64_t watchdog_pings() const;
  std::vector<std::string> Errors() const;
  // The child's log file (every start appends to it).
  std::string Log() const;

 private:
  struct StoredFd {
    UniqueFd fd;
    std::string name;
    bool poll = true;  // dropped on POLLHUP / POLLERR unless FDPOLL=0
  };

  explicit FdStoreSupervisor(FdStoreSupervisorOptions options);

  Status Bind();
  void Run();  // the receiving thread
  void Wake();

  // All *Locked members need mu_ held.
  Status SpawnLocked();
  void SignalLocked(int signal);
  bool WaitForExitLocked(std::unique_lock<std::mutex>& lock, std::chrono::milliseconds timeout);
  void DrainNotifySocketLocked();
  // One well-formed datagram (credentials present, not truncated).
  void HandleMessageLocked(std::string_view text, pid_t sender, std::vector<UniqueFd> fds);
  void AddToStoreLocked(std::vector<UniqueFd> fds, const std::string& name, bool poll);
  void RemoveFromStoreLocked(const std::string& name);
  void DropHungUpLocked(int fd);
  void ReapLocked();
  void RecordErrorLocked(std::string error);
  FdStoreState StateLocked() const;

  const FdStoreSupervisorOptions options_;
  std::string own_dir_;  // removed on destruction when we made it
  std::string socket_path_;
  UniqueFd notify_fd_;
  UniqueFd wake_fd_;  // eventfd: the thread re-reads its state, or exits

  mutable std::mutex mu_;
  std::condition_variable changed_;
  bool quit_ = false;
  pid_t child_pid_ = -1;
  UniqueFd child_pidfd_;  // valid while the child is not yet reaped
  bool child_running_ = false;
  int wait_status_ = 0;
  int starts_ = 0;
  bool ready_ = false;
  bool stopping_ = false;
  std::string status_;
  std::vector<StoredFd> store_;    // newest first, like systemd's LIST_PREPEND
  uint64_t store_generation_ = 0;  // bumped on every change of store_
  uint64_t accepted_ = 0;
  uint64_t rejected_ = 0;
  uint64_t watchdog_pings_ = 0;
  std::vector<std::string> errors_;

  std::thread thread_;
};

}  // namespace uffdpager::testing
