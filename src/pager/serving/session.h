// Session: one VM's restore, from its socket to its last fault.
//
// A session owns a listening socket created before the create call answers,
// and a thread of its own that (1) waits for the VMM to connect, (2) receives
// and validates its handshake, (3) serves the userfaultfd until the VMM exits,
// the VM's address space is gone, completion unregisters the memory, or the
// session is closed. One thread per session means a slow or stuck session
// (say, a backing read that hangs) never delays another.
//
// A fault the session cannot serve leaves a VM thread blocked forever, so it
// never passes silently: the session turns Failed with the reason (visible in
// GET /sessions), the pager counts it, logs it, and, if the session was
// created with kill_client_on_failure, kills the VMM (pid from SO_PEERCRED).
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/process_handle.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "common/userfaultfd.h"
#include "pager/storage/backing_file.h"
#include "pager/access/backing_path_policy.h"
#include "pager/metrics/fault_counters.h"
#include "pager/serving/fault_engine.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/storage/page_cache.h"
#include "pager/access/peer_check.h"
#include "pager/continuity/recovery_store.h"
#include "pager/continuity/session_record.h"
#include "pager/access/socket_permissions.h"
#include "pager/storage/working_set_store.h"

namespace uffdpager {

enum class SessionState {
  kWaiting,     // listening; no valid handshake yet
  kServing,
  kCompleting,  // serving, and populating every page for complete
  kCompleted,   // every page in, ranges unregistered; nothing left to serve
  kFailed,      // a handshake or a fault could not be served; see reason
  kClosed,      // closed by the API, or the VMM is gone
};
const char* SessionStateName(SessionState state);

// What every session shares with the daemon.
struct SessionEnvironment {
  PageCache* cache = nullptr;
  FaultCounters* global_counters = nullptr;
  std::atomic<uint64_t>* failed_sessions = nullptr;
  HandshakeLimits limits;
  std::chrono::milliseconds handshake_timeout{10000};
  FaultEngineOptions engine_options;
  // Working-set record and replay: with a store and `prefetch` set, a session
  // whose cache key has a valid record prefetches it; one without records the
  // first `record_window` of its restore for the next ones.
  WorkingSetStore* working_sets = nullptr;
  bool prefetch = false;
  std::chrono::milliseconds record_window{3000};
  mode_t socket_mode = 0600;
  SocketOwnership socket_ownership;  // the pager-wide default
  // Which backing paths may be opened; null: any.
  const BackingPathPolicy* backing_policy = nullptr;
  // Connections turned away because the peer was not the expected one.
  std::atomic<uint64_t>* refused_peers = nullptr;
  // Latency histograms and per-cache-key counters; null: not kept.
  MetricsRegistry* metrics = nullptr;
  // Where sessions keep what a restarted pager needs to take them back;
  // null: nothing is kept (tests of the session alone).
  RecoveryStore* recovery = nullptr;
};

class Session {
 public:
  // Opens the backing file, listens on `socket_path`, starts the thread.
  static Result<std::shared_ptr<Session>> Start(SessionSpec spec, std::string socket_path,
                                                const SessionEnvironment& env);
  // Takes over a session another pager process served (the same pager before
  // a crash, or an older version handing over): serves on with the fds that
  // came back, after waking every thread that faulted while nobody served.
  // `origin` says where it came from (shown in Describe). Fails if the
  // record cannot be served safely (its userfaultfd is missing, its backing
  // file is not the same file any more).
  static Result<std::shared_ptr<Session>> Adopt(RecoveredSession recovered, std::string origin,
                                                const SessionEnvironment& env);
  // A session a restarted pager found but cannot serve: kept as Failed with
  // `why`, so the loss is visible (and its VMM killed when the session asked
  // for that) rather than a VM hanging silently. Closing it forgets it.
  static std::shared_ptr<Session> Lost(RecoveredSession recovered, const Status& why,
                                       const SessionEnvironment& env);
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Stops serving, releases the uffd and the socket. Idempotent.
  void Close(const std::string& reason);

  // Stops serving without releasing anything, for a pager taking over: the
  // record and every fd, the session's record and fd-store entries untouched
  // (the caller forgets them once the taker has them, or adopts them back).
  // A fault read but not yet served is left to the taker's wake.
  // kConflict if the session holds no VM (ended, completed, refused).
  Result<RecoveredSession> Detach();

  // Installs every page not yet present, then unregisters the ranges. Blocks
  // until done. kConflict if the session is not serving or already completing;
  // on any other failure the session goes on serving.
  Status Complete();

  SessionState state() const;
  // True while the session serves or may serve a VM (drain waits for these).
  bool HoldsVm() const;
  const std::string& id() const { return spec_.id; }
  const std::string& socket_path() const { return socket_path_; }
  nlohmann::json Describe() const;

 private:
  Session(SessionSpec spec, std::string socket_path, const SessionEnvironment& env,
          std::shared_ptr<BackingFile> backing);

  static Result<std::shared_ptr<BackingFile>> OpenBacking(const std::string& path, const SessionEnvironment& env);
  Status CreateWakeFds();
  Status Listen();
  void StartThread();
  // Takes over a VMM's memory: the layout, the engine, the fds.
  Status BeginServing(std::vector<GuestRegionMapping> regions, UniqueFd uffd, UniqueFd connection);
  // The record as it stands: call from the session thread, or when it is not running.
  SessionRecord MakeRecord() const;
  // Enough of a record to name its file and fds (any thread).
  SessionRecord RecordKey() const;
  // Saves the record and parks the fds of `roles`. Without a recovery store: OK.
  Status KeepRecord(std::initializer_list<SessionFdRole> roles);
  void ForgetRecovery();
  // Closes what the session holds (listener, socket file, engine, uffd,
  // connection), forgets its recovery record, and marks it Closed. The
  // thread must have stopped.
  void Release(const std::string& reason);
  bool HoldsVmLocked() const;  // requires mu_
  void Run();
  // Accepts connections until one brings a valid handshake (ok), the session
  // is stopped (kUnavailable), or a handshake is refused (the error).
  Status AcceptVmm();
  // False (logged, counted) if `conn`'s peer is not the one the spec expects.
  bool AcceptPeer(int conn, PeerCredentials* peer);
  Status AdoptHandshake(UniqueFd connection, const PeerCredentials& peer, ReceivedHandshake handshake);
  void ServeLoop();
  // One completion step between rounds of demand faults; true once the
  // memory is complete and unregistered (the session has nothing left to do).
  bool StepCompletion(ServeReport* report);
  void FinishCompletion(Status result);
  void Fail(const Status& reason);
  // Persists what the engine recorded (if anything) as this key's working set.
  void FinishRecording();
  // The VM is gone: nothing left to serve.
  void End(const std::string& reason);
  void SetState(SessionState state, const std::string& reason = {});
  void Wake();

  const SessionSpec spec_;
  const std::string socket_path_;
  const SessionEnvironment env_;
  const std::shared_ptr<BackingFile> backing_;
  const std::chrono::system_clock::time_point created_at_;

  UniqueFd listener_;
  UniqueFd wake_fd_;    // eventfd: close or complete requested
  UniqueFd detach_fd_;  // eventfd: detach requested (never cancels a handshake mid-read)
  UniqueFd connection_;
  Userfaultfd uffd_;
  ProcessHandle client_;
  std::unique_ptr<FaultEngine> engine_;  // touched only by the session thread
  FaultCounters counters_;
  std::shared_ptr<FaultCounters> cache_key_counters_;  // shared with the key's other sessions
  std::atomic<uint64_t> present_pages_{0};
  std::atomic<uint64_t> guest_bytes_{0};
  std::atomic<uint64_t> refused_peers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> detach_requested_{false};
  std::atomic<bool> recovery_forgotten_{false};
  // Whether Close removes the socket file: not for a session that failed to
  // be adopted, whose socket may still be another pager's live one.
  bool owns_socket_file_ = false;
  uint64_t incarnation_ = 0;
  std::string origin_ = "created";
  SessionPhase phase_ = SessionPhase::kWaiting;  // session thread (or before it starts)
  uint64_t saved_remove_generation_ = 0;          // session thread
  std::atomic<bool> completion_requested_{false};
  std::atomic<bool> serving_thread_running_{false};
  std::chrono::steady_clock::time_point record_deadline_;

  mutable std::mutex mu_;
  SessionState state_ = SessionState::kWaiting;
  std::string reason_;  // why it failed or closed
  PeerCredentials peer_{};
  size_t region_count_ = 0;
  std::optional<std::promise<Status>> completion_;
  bool closed_ = false;

  std::thread thread_;
};

}  // namespace uffdpager
