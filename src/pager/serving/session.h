// Session: one VM's restore, from its socket to its last fault.
//
// A session is a state machine (SessionState, docs/control-api.md) driven by
// a thread of its own that (1) waits for the VMM to connect and takes its
// handshake (VmmAcceptor), (2) serves the userfaultfd (FaultEngine) until
// the VMM exits, the VM's address space is gone, completion unregisters the
// memory, or the session is closed. One thread per session means a slow or
// stuck session (say, a backing read that hangs) never delays another.
//
// A fault the session cannot serve leaves a VM thread blocked forever, so it
// never passes silently: the session turns Failed with the reason (visible in
// GET /sessions), the pager counts it, logs it, and, if the session was
// created with kill_client_on_failure, kills the VMM (pid from SO_PEERCRED).
// Closing a session that still serves a VM, because its caller is done with
// that VM, is the same loss, handled the same way.
//
// A session that ends on its own (completed, its VMM gone, a handshake
// refused, a drain that came before its VMM) lets go of everything at once:
// uffd, connection, listener and socket file, backing file, pidfd, eventfds,
// and its thread, which detaches and exits. It stays, as a description,
// until the registry forgets it.
//
// How a session begins has one owner each: a new one is started by the
// registry (Start); one served by another pager process before is resumed,
// or kept as failed, by the continuity room (continuity/session_continuity.h)
// through Resume and Failed. A SessionKeeper, when the environment has one,
// keeps what a successor process would need.
//
// Thread safety: public methods may be called from any thread. The fields
// under mu_ are shared with the session thread; the serving state (fds,
// engine, phase) belongs to the session thread while it runs, and to the
// caller of Start/Resume/Close/Detach before it starts or after it stopped
// (joined, or finished on its own: finished_, read under mu_).
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/mutex.h"
#include "common/process_handle.h"
#include "common/process_identity.h"
#include "common/unique_fd.h"
#include "common/unix_socket.h"
#include "common/userfaultfd.h"
#include "pager/access/backing_path_policy.h"
#include "pager/access/socket_permissions.h"
#include "pager/metrics/fault_counters.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/serving/fault_engine.h"
#include "pager/serving/session_checkpoint.h"
#include "pager/serving/session_keeper.h"
#include "pager/serving/session_spec.h"
#include "pager/serving/vmm_acceptor.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/cache_key.h"
#include "pager/storage/compact_working_set.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/page_cache.h"
#include "pager/storage/published_working_set.h"
#include "pager/storage/working_set_store.h"
#include "pager/storage/working_set_writer.h"

namespace uffdpager {

enum class SessionState {
  kWaiting,  // listening; no valid handshake yet
  kServing,
  kCompleting,  // serving, and populating every page for complete
  kCompleted,   // every page in, ranges unregistered; nothing left to serve
  kFailed,      // a handshake or a fault could not be served; see reason
  kClosed,      // closed by the API, the VMM is gone, or the pager drained before it came
};
const char* SessionStateName(SessionState state);
inline constexpr SessionState kAllSessionStates[] = {SessionState::kWaiting,    SessionState::kServing,
                                                     SessionState::kCompleting, SessionState::kCompleted,
                                                     SessionState::kFailed,     SessionState::kClosed};

// What every session shares with the daemon, and how sessions serve.
struct SessionEnvironment {
  PageCache* cache = nullptr;          // required
  MetricsRegistry* metrics = nullptr;  // required
  // Working-set record and replay: with a store and `prefetch` set, a session
  // whose cache key has a valid record prefetches it; one without records the
  // first `record_window` of its restore (longer while its faults go on,
  // see Session::RecordWindowEnd) for the next ones.
  WorkingSetStore* working_sets = nullptr;
  // Writes the compact copy of each working set recorded; null: none.
  WorkingSetWriter* working_set_writer = nullptr;
  bool prefetch = false;
  std::chrono::milliseconds record_window{3000};
  // A replay of a record at least this old refines it
  // (working_set_refinement.h); nullopt: records are never refined.
  std::optional<std::chrono::seconds> refine_interval = std::chrono::seconds(60);
  // Keeps what a successor process needs; null: nothing is kept.
  SessionKeeper* keeper = nullptr;
  // Which backing paths may be opened; null: any.
  const BackingPathPolicy* backing_policy = nullptr;
  // Snapshots in object storage; null: sessions with a URL are refused,
  // saying `object_tier_absent` (why the pager has none).
  ObjectTier* object_tier = nullptr;
  std::string object_tier_absent;
  // Published working sets (published_working_set.h): a session of object
  // layers without a record fetches one through it, and publishes the one it
  // records; null: neither.
  PublishedWorkingSetFetcher* published_working_sets = nullptr;
  HandshakeLimits limits;
  std::chrono::milliseconds handshake_timeout{10000};
  FaultEngineOptions engine_options;
  mode_t socket_mode = 0600;
  SocketOwnership socket_ownership;  // the pager-wide default
};

class Session {
 public:
  // A new session on `backing`: listens on `socket_path`, keeps its
  // checkpoint, starts the thread.
  // REQUIRES: `backing` is the file spec.backing_path names, opened through
  // env.backing_policy (the registry opens it before it replaces anything).
  static Result<std::shared_ptr<Session>> Start(SessionSpec spec, std::shared_ptr<const BackingChain> backing,
                                                std::string socket_path, const SessionEnvironment& env);
  // Serves on a session another pager process served, from its checkpoint
  // and fds: a waiting one listens again (on its parked listener, where
  // connections made meanwhile are queued), a serving one serves the
  // userfaultfd after waking every thread that faulted while nobody served.
  // REQUIRES: `backing` is the checkpoint's bytes (the caller checked its
  // identity); a serving checkpoint comes with its userfaultfd. On error
  // nothing of the checkpoint is forgotten or removed (it may still be
  // another process's).
  static Result<std::shared_ptr<Session>> Resume(DetachedSession detached, std::shared_ptr<const BackingChain> backing,
                                                 std::string origin, const SessionEnvironment& env);
  // A session that cannot be served: kept as Failed with `why`, so the loss
  // is visible (and its VMM, reached through `client_pidfd`, killed when the
  // session asked for that) rather than a VM hanging silently. Its
  // checkpoint stays with the keeper until the session is closed.
  static std::shared_ptr<Session> Failed(const SessionCheckpoint& checkpoint, UniqueFd client_pidfd, const Status& why,
                                         std::string origin, const SessionEnvironment& env);
  ~Session();

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // What closing a session that still serves a VM does to that VM, whose
  // next fault nobody will serve.
  enum class VmAtClose {
    kLeave,  // the pager stops (SIGTERM): the VMM is left as it is; the log says what that means
    kEnd,    // the caller is done with the VM (close, replace): its VMM is killed when the session
             // asked for kill_client_on_failure; otherwise the log warns and the reason says so
  };
  // Stops serving, releases the uffd and the socket, forgets the checkpoint.
  // Idempotent.
  void Close(const std::string& reason, VmAtClose vm = VmAtClose::kLeave) EXCLUDES(mu_);

  // Stops serving without releasing anything, for a pager taking over: the
  // checkpoint and every fd come back, and the keeper's copies are left as
  // they are (the caller forgets them once the taker has them, or resumes
  // the session itself). A fault read but not yet served is left to the
  // taker's wake. kConflict unless the session is Active().
  Result<DetachedSession> Detach() EXCLUDES(mu_);

  // Drain: a waiting session stops waiting. Its socket file goes at once, so
  // a VMM that comes later gets ENOENT; a VMM that connected before is still
  // taken (the session then holds a VM); otherwise the session ends, closed.
  // Does nothing unless the session waits.
  void StopWaiting() EXCLUDES(mu_);

  // Installs every page not yet present, then unregisters the ranges. Blocks
  // until done. kConflict if the session is not serving or already completing;
  // on any other failure the session goes on serving.
  Status Complete() EXCLUDES(mu_);

  SessionState state() const EXCLUDES(mu_);
  // Serves a VM's memory: serving, completing, or failed while it still
  // serves the VM's other faults. Drain waits for these.
  bool HoldsVm() const EXCLUDES(mu_);
  // Holds a VM or waits for one: what active_sessions counts and what a
  // hand-over moves. The others have ended.
  bool Active() const EXCLUDES(mu_);
  // Ended on its own and let go of everything; `end_order` tells which of
  // two ended first (0 until then).
  bool finished() const EXCLUDES(mu_);
  uint64_t end_order() const EXCLUDES(mu_);
  const std::string& id() const { return spec_.id; }
  const std::string& socket_path() const { return socket_path_; }
  nlohmann::json Describe() const EXCLUDES(mu_);

 private:
  // What the session thread is asked to do besides serving.
  struct Requests {
    bool stop = false;         // close: stop and release
    bool detach = false;       // hand-over: stop, release nothing
    bool complete = false;     // populate every page
    bool end_waiting = false;  // drain: stop waiting for a VMM
  };

  Session(SessionSpec spec, std::string socket_path, uint64_t incarnation, std::string origin,
          const SessionEnvironment& env, std::shared_ptr<const BackingChain> backing);

  Status CreateWakeFds() EXCLUDES(mu_);
  Status Listen();
  void StartThread() EXCLUDES(mu_);
  // Where this session counts: its counters, its cache key's, the pager's.
  CounterSink Sink();
  // Takes over a VMM's memory: the layout, the engine, the fds.
  Status BeginServing(std::vector<GuestRegionMapping> regions, UniqueFd uffd, UniqueFd connection);
  Requests PendingRequests() const EXCLUDES(mu_);
  // The checkpoint as it stands (session thread, or when it is not running).
  SessionCheckpoint MakeCheckpoint() const EXCLUDES(mu_);
  // Hands the checkpoint (and `fds`) to the keeper, if there is one.
  Status Keep(std::initializer_list<SessionKeeper::ParkedFd> fds);
  // Tells the keeper to forget the session, if it keeps anything of it.
  void ForgetKept() EXCLUDES(mu_);
  // Lets go of the serving state: listener and socket file, engine, uffd,
  // connection, pidfd, backing file. REQUIRES: the thread is not running.
  void ReleaseServing();
  // Release, for Close and Detach: what ReleaseServing lets go of, the
  // eventfds, the checkpoint; then marks the session Closed.
  // REQUIRES: the thread has stopped.
  void Release(const std::string& reason);
  // Close found the session still serving a VM's memory: kills its VMM or
  // warns, as `vm` says; returns the reason to close with.
  std::string LetGoOfVm(const std::string& reason, VmAtClose vm);
  bool HoldsVmLocked() const REQUIRES(mu_);
  bool ActiveLocked() const REQUIRES(mu_);
  pid_t PeerPid() const EXCLUDES(mu_);
  void Run();
  // The thread's last step when nobody asked it to stop: release everything
  // and detach (see finished_).
  void FinishOnItsOwn() EXCLUDES(mu_);
  // Waits for the VMM and starts serving it; false if the session is over.
  bool WaitForVmm();
  Status TakeVmm(AcceptedVmm vmm);
  void ServeLoop();
  // Why the VMM is gone, if its pidfd, its connection or its identity tell
  // (see watch_connection_); `revents` are poll's for the pidfd, or for the
  // connection when there is no pidfd.
  std::optional<std::string> VmmGone(short revents);
  // One completion step between rounds of demand faults; true once the
  // memory is complete and unregistered (the session has nothing left to do).
  bool StepCompletion(ServeReport* report);
  void FinishCompletion(Status result) EXCLUDES(mu_);
  void Fail(const Status& reason) EXCLUDES(mu_);
  // SIGKILL to the VMM: through its pidfd, or one opened by its identity
  // (never a process that merely reused its pid).
  void KillClient(const std::string& why) EXCLUDES(mu_);
  // Starts replaying this key's recorded working set, or recording one
  // (and fetching a published one meanwhile, published_working_set.h).
  void StartWorkingSet();
  // Replays `recorded`: from its compact file if there is a good one
  // (read as `reads` says), else from the backing memory.
  void ReplayRecord(const WorkingSet& recorded, CompactWorkingSet::Reads reads);
  // The published working set's fetch is over: replay it if it came.
  void TakePublishedWorkingSet();
  // Records the demand faults of the next record window.
  void StartRecordWindow();
  // When the record window ends, as far as is known now.
  std::chrono::steady_clock::time_point RecordWindowEnd();
  // Persists what the engine recorded (if anything) as this key's working
  // set; after a refining replay, the refined record.
  void FinishRecording();
  // The VM is gone: nothing left to serve.
  void End(const std::string& reason);
  void SetState(SessionState state, const std::string& reason = {}) EXCLUDES(mu_);
  void SetStateLocked(SessionState state, const std::string& reason) REQUIRES(mu_);
  // Wakes the session thread: `fd` is wake_fd_ or detach_fd_.
  static void Signal(const UniqueFd& fd);

  const SessionSpec spec_;
  const std::string socket_path_;
  const uint64_t incarnation_;
  const std::string origin_;  // how the session began (shown in Describe)
  const SessionEnvironment env_;
  const CacheKey cache_key_;
  const std::chrono::system_clock::time_point created_at_;
  const std::shared_ptr<FaultCounters> cache_key_counters_;  // shared with the key's other sessions
  FaultCounters counters_;                                   // relaxed atomics

  // The serving state: the session thread's while it runs (see above).
  std::shared_ptr<const BackingChain> backing_;  // null for a Failed session, and once released
  UniqueFd listener_;
  UniqueFd connection_;
  Userfaultfd uffd_;
  ProcessHandle client_;
  std::unique_ptr<FaultEngine> engine_;
  SessionPhase phase_ = SessionPhase::kWaiting;
  uint64_t kept_remove_generation_ = 0;
  std::chrono::steady_clock::time_point record_deadline_;
  std::chrono::steady_clock::time_point record_last_growth_;  // when the record last grew
  size_t record_pages_seen_ = 0;
  // A refining replay: the record without its held-back sample, the base of
  // the refined record FinishRecording saves; nullopt: a first record.
  std::optional<std::vector<uint64_t>> refining_base_;
  // A published working set being fetched for this restore; invalid: none.
  std::shared_future<Status> published_fetch_;
  // Whether the socket file is this session's to remove: not for a session
  // that failed to resume, whose socket may still be another pager's live
  // one, nor once removed (a new session of the same id may have made it).
  bool owns_socket_file_ = false;
  // The wake fds as the thread polls them, read once under mu_ as it starts.
  int wake_poll_fd_ = -1;
  int detach_poll_fd_ = -1;
  // Without a pidfd, the VMM's exit shows as its connection hanging up
  // (Firecracker 1.12+ keeps it open), or as its identity no longer alive,
  // checked once a second.
  bool watch_connection_ = false;
  std::chrono::steady_clock::time_point next_identity_check_;

  mutable Mutex mu_;
  // Created before the thread starts; written by any thread to wake it;
  // closed by the thread when it finishes on its own, else after it stopped.
  UniqueFd wake_fd_ GUARDED_BY(mu_);  // eventfd: close or complete requested
  UniqueFd detach_fd_
      GUARDED_BY(mu_);  // eventfd: detach or end of waiting requested (never cancels a handshake mid-read)
  std::thread thread_ GUARDED_BY(mu_);
  SessionState state_ GUARDED_BY(mu_) = SessionState::kWaiting;
  std::string reason_ GUARDED_BY(mu_);   // why it failed or closed
  std::string warning_ GUARDED_BY(mu_);  // what the handshake showed that may go wrong
  Requests requests_ GUARDED_BY(mu_);
  bool closed_ GUARDED_BY(mu_) = false;    // Close or Detach has begun
  bool serving_ GUARDED_BY(mu_) = false;   // the thread serves a VMM's faults
  bool kept_ GUARDED_BY(mu_) = false;      // the keeper holds our checkpoint
  bool finished_ GUARDED_BY(mu_) = false;  // ended on its own: holds nothing, its thread detached
  uint64_t end_order_ GUARDED_BY(mu_) = 0;
  std::optional<std::promise<Status>> completion_ GUARDED_BY(mu_);
  PeerCredentials peer_ GUARDED_BY(mu_){};
  ProcessIdentity client_identity_ GUARDED_BY(mu_);  // start_time 0: unknown
  size_t region_count_ GUARDED_BY(mu_) = 0;
  uint64_t guest_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t present_pages_ GUARDED_BY(mu_) = 0;
  uint64_t refused_peers_ GUARDED_BY(mu_) = 0;
  uint64_t refused_handshakes_ GUARDED_BY(mu_) = 0;
};

}  // namespace uffdpager
