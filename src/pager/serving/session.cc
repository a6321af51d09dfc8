#include "pager/serving/session.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/logging.h"
#include "pager/serving/working_set_refinement.h"

namespace uffdpager {

namespace {
// Pages installed per completion step before demand faults get another turn.
constexpr size_t kCompletionStepPages = 512;
// Pages prefetched per step before demand faults get another turn.
constexpr size_t kPrefetchStepPages = 64;
// A record window past its time ends once no new page faulted for this
// long, and at the latest after this many windows.
constexpr std::chrono::milliseconds kRecordQuiet{500};
constexpr int kRecordStretch = 10;
// How long a restore waits for its published working set before it serves
// faults, and how often it looks later whether it has come.
constexpr std::chrono::milliseconds kPublishedFetchWait{2000};
constexpr std::chrono::milliseconds kPublishedFetchPollInterval{2};
// How long to wait before serving again after EAGAIN with no event to read.
constexpr int kEagainRetryMs = 1;
// How often the identity of a VMM without a pidfd is checked.
constexpr auto kIdentityCheckInterval = std::chrono::seconds(1);

// Which session ended on its own first: the registry forgets the oldest.
uint64_t NextEndOrder() {
  static std::atomic<uint64_t> last{0};
  return ++last;
}
}  // namespace

const char* SessionStateName(SessionState state) {
  switch (state) {
    case SessionState::kWaiting: return "waiting";
    case SessionState::kServing: return "serving";
    case SessionState::kCompleting: return "completing";
    case SessionState::kCompleted: return "completed";
    case SessionState::kFailed: return "failed";
    case SessionState::kClosed: return "closed";
  }
  return "unknown";
}

// ---- How a session begins -------------------------------------------------

Session::Session(SessionSpec spec, std::string socket_path, uint64_t incarnation, std::string origin,
                 const SessionEnvironment& env, std::shared_ptr<const BackingChain> backing)
    : spec_(std::move(spec)),
      socket_path_(std::move(socket_path)),
      incarnation_(incarnation),
      origin_(std::move(origin)),
      env_(env),
      cache_key_(spec_.cache_key, backing ? backing->IdentityText() : std::string()),
      created_at_(std::chrono::system_clock::now()),
      cache_key_counters_(env.metrics->CountersForCacheKey(cache_key_)),
      backing_(std::move(backing)) {}

Status Session::CreateWakeFds() {
  MutexLock lock(&mu_);
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_fd_) return Status::FromErrno(errno, "eventfd");
  detach_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!detach_fd_) return Status::FromErrno(errno, "eventfd");
  return Status::Ok();
}

Status Session::Listen() {
  auto listener = ListenUnixSocket(socket_path_, env_.socket_mode);
  if (!listener.ok()) return listener.status();
  listener_ = std::move(*listener);
  return ApplySocketOwnership(socket_path_, env_.socket_ownership.OverriddenBy(spec_.socket_ownership));
}

void Session::StartThread() {
  // Under the lock: a thread that finishes at once detaches itself, which it
  // must not do before thread_ holds it.
  MutexLock lock(&mu_);
  thread_ = std::thread([this] {
    // Named for top, perf and gdb: otherwise it inherits the name of the
    // HTTP thread that created it. The kernel keeps 15 bytes.
    (void)::pthread_setname_np(::pthread_self(), ("s:" + id()).substr(0, 15).c_str());
    Run();
  });
}

Result<std::shared_ptr<Session>> Session::Start(SessionSpec spec, std::shared_ptr<const BackingChain> backing,
                                                std::string socket_path, const SessionEnvironment& env) {
  std::shared_ptr<Session> session(new Session(std::move(spec), std::move(socket_path), NextSessionIncarnation(),
                                               "created", env, std::move(backing)));
  UFFD_RETURN_IF_ERROR(session->CreateWakeFds());
  session->owns_socket_file_ = true;
  UFFD_RETURN_IF_ERROR(session->Listen());
  // Before the create call answers: once the caller has the socket path, a
  // crash of this process must not lose the session. Marked kept first, so
  // that closing it (even after a Keep that failed half-way, as the failed
  // start destroys it) forgets whatever part of it was written.
  {
    MutexLock lock(&session->mu_);
    session->kept_ = env.keeper != nullptr;
  }
  UFFD_RETURN_IF_ERROR(session->Keep({{SessionFdRole::kListener, session->listener_.get()}}));
  session->StartThread();
  spdlog::info("session {}: listening on {} for instance {} (backing {}, cache key {})", session->id(),
               session->socket_path_, session->spec_.instance_id, session->spec_.BackingName(),
               session->spec_.cache_key);
  return session;
}

Result<std::shared_ptr<Session>> Session::Resume(DetachedSession detached, std::shared_ptr<const BackingChain> backing,
                                                 std::string origin, const SessionEnvironment& env) {
  const SessionCheckpoint& checkpoint = detached.checkpoint;
  std::shared_ptr<Session> session(new Session(checkpoint.spec, checkpoint.socket_path, checkpoint.incarnation,
                                               std::move(origin), env, std::move(backing)));
  // Until it serves, a failed resume must neither forget the checkpoint nor
  // remove the socket: they may still be another pager's (a refused
  // hand-over) or needed to report the loss (a restart).
  UFFD_RETURN_IF_ERROR(session->CreateWakeFds());
  if (checkpoint.phase == SessionPhase::kWaiting) {
    if (detached.fds.listener) {
      // Connections made while nobody listened are queued on it.
      session->listener_ = std::move(detached.fds.listener);
    } else {
      UFFD_RETURN_IF_ERROR(session->Listen());
    }
    UFFD_RETURN_IF_ERROR(session->Keep({{SessionFdRole::kListener, session->listener_.get()}}));
  } else {
    if (!detached.fds.uffd) return Status::NotFound("its userfaultfd did not come back");
    if (detached.fds.client) {
      session->client_ = ProcessHandle::Adopt(std::move(detached.fds.client), checkpoint.client_pid);
    }
    {
      MutexLock lock(&session->mu_);
      session->peer_.pid = checkpoint.client_pid;
      session->client_identity_ = {checkpoint.client_pid, checkpoint.client_start_time};
    }
    UFFD_RETURN_IF_ERROR(
        session->BeginServing(checkpoint.regions, std::move(detached.fds.uffd), std::move(detached.fds.connection)));
    for (const auto& [start, end] : checkpoint.removed) session->engine_->RestoreRemoved(start, end);
    session->phase_ = SessionPhase::kServing;
    Status kept = session->Keep({{SessionFdRole::kUffd, session->uffd_.fd()},
                                 {SessionFdRole::kConnection, session->connection_.get()},
                                 {SessionFdRole::kClient, session->client_.fd()}});
    if (!kept.ok()) spdlog::error("session {}: a further crash would lose it: {}", session->id(), kept.ToString());
    // Faults the previous process read but never answered leave their
    // threads asleep; no event will come for them again. Wake every thread
    // on every region: a page still missing faults again, to us.
    for (const auto& region : session->engine_->layout().regions()) {
      Status woke = session->uffd_.Wake(region.base_host_virt_addr, region.size);
      if (!woke.ok()) spdlog::warn("session {}: {}", session->id(), woke.ToString());
    }
    session->SetState(SessionState::kServing);
  }
  session->owns_socket_file_ = true;
  {
    MutexLock lock(&session->mu_);
    session->kept_ = env.keeper != nullptr;
  }
  session->StartThread();
  spdlog::info("session {}: {} ({}, socket {})", session->id(), session->origin_, SessionPhaseName(checkpoint.phase),
               session->socket_path_);
  return session;
}

std::shared_ptr<Session> Session::Failed(const SessionCheckpoint& checkpoint, UniqueFd client_pidfd, const Status& why,
                                         std::string origin, const SessionEnvironment& env) {
  std::shared_ptr<Session> session(
      new Session(checkpoint.spec, checkpoint.socket_path, checkpoint.incarnation, std::move(origin), env, nullptr));
  if (client_pidfd) session->client_ = ProcessHandle::Adopt(std::move(client_pidfd), checkpoint.client_pid);
  {
    MutexLock lock(&session->mu_);
    session->peer_.pid = checkpoint.client_pid;
    session->client_identity_ = {checkpoint.client_pid, checkpoint.client_start_time};
    // Its checkpoint stays until the session is closed: a further restart
    // reports the loss again.
    session->kept_ = env.keeper != nullptr;
  }
  // Its VMM may still wait on a fault nobody will serve: killed here when the
  // session asked for that, through the pidfd that came back or, without
  // one, by the identity the checkpoint recorded.
  session->Fail(why);
  session->client_ = ProcessHandle();
  MutexLock lock(&session->mu_);
  session->finished_ = true;
  session->end_order_ = NextEndOrder();
  return session;
}

Status Session::BeginServing(std::vector<GuestRegionMapping> regions, UniqueFd uffd, UniqueFd connection) {
  auto layout = MemoryLayout::Create(std::move(regions), backing_->size());
  if (!layout.ok()) return layout.status();
  // Our reads must never block; the VMM never reads this fd, so the shared
  // file status flag does not affect it (Firecracker sets it anyway).
  int flags = ::fcntl(uffd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(uffd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Status::FromErrno(errno, "set O_NONBLOCK on the userfaultfd");
  }
  uffd_ = Userfaultfd(std::move(uffd));
  uffd_.set_fill_observer(&env_.metrics->latencies());
  connection_ = std::move(connection);
  ProcessIdentity identity;
  {
    MutexLock lock(&mu_);
    guest_bytes_ = layout->total_bytes();
    region_count_ = layout->regions().size();
    identity = client_identity_;
  }
  // Without a pidfd the VMM's exit is seen through its connection or its
  // identity; with neither, only an install answering ESRCH tells.
  watch_connection_ = !client_.valid() && connection_.valid();
  next_identity_check_ = std::chrono::steady_clock::now() + kIdentityCheckInterval;
  if (!client_.valid() && !connection_.valid() && identity.start_time == 0) {
    spdlog::warn("session {}: nothing will tell when VMM pid {} exits (no pidfd, no connection, no identity)", id(),
                 identity.pid);
  }
  int wake_fd = -1;  // open until the session has stopped serving
  {
    MutexLock lock(&mu_);
    wake_fd = wake_fd_.get();
  }
  auto engine = FaultEngine::Create(&uffd_, std::move(*layout), backing_, env_.cache, cache_key_, Sink(),
                                    env_.engine_options, wake_fd);
  if (!engine.ok()) return engine.status();
  engine_ = std::move(*engine);
  return Status::Ok();
}

CounterSink Session::Sink() { return env_.metrics->SinkFor(&counters_, cache_key_counters_.get()); }

// ---- What a successor needs ------------------------------------------------

SessionCheckpoint Session::MakeCheckpoint() const {
  SessionCheckpoint checkpoint;
  checkpoint.spec = spec_;
  checkpoint.socket_path = socket_path_;
  checkpoint.incarnation = incarnation_;
  checkpoint.phase = phase_;
  checkpoint.backing_identity = cache_key_.identity();
  if (engine_) {
    checkpoint.regions = engine_->layout().regions();
    for (const auto& [start, end] : engine_->removed().ranges()) checkpoint.removed.emplace_back(start, end);
  }
  MutexLock lock(&mu_);
  checkpoint.client_pid = peer_.pid;
  checkpoint.client_start_time = client_identity_.start_time;
  return checkpoint;
}

Status Session::Keep(std::initializer_list<SessionKeeper::ParkedFd> fds) {
  if (!env_.keeper) return Status::Ok();
  Status kept = env_.keeper->Keep(MakeCheckpoint(), fds);
  if (kept.ok()) {
    MutexLock lock(&mu_);
    kept_ = true;
  }
  return kept;
}

void Session::ForgetKept() {
  {
    MutexLock lock(&mu_);
    if (!kept_) return;
    kept_ = false;
  }
  env_.keeper->Forget(MakeCheckpoint());
}

// ---- The state machine -----------------------------------------------------

Session::~Session() { Close("session destroyed"); }

void Session::Signal(const UniqueFd& fd) {
  if (!fd) return;  // the thread finished and closed it: nobody to wake
  uint64_t one = 1;
  (void)!::write(fd.get(), &one, sizeof(one));
}

Session::Requests Session::PendingRequests() const {
  MutexLock lock(&mu_);
  return requests_;
}

void Session::Close(const std::string& reason, VmAtClose vm) {
  std::thread thread;
  {
    MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    requests_.stop = true;
    Signal(wake_fd_);
    // A thread that finished on its own detached itself; any other is joined.
    if (!finished_) thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
  FinishCompletion(Status::Unavailable("session closed"));
  std::string why = LetGoOfVm(reason, vm);
  Release(why);
  spdlog::info("session {}: closed ({})", id(), why);
}

std::string Session::LetGoOfVm(const std::string& reason, VmAtClose vm) {
  if (!engine_ || !uffd_.valid()) return reason;
  // The VM's memory is still registered with the uffd we hold: once it is
  // closed, the VM's next first touch of a missing page blocks forever.
  pid_t pid = client_.valid() ? client_.pid() : PeerPid();
  if (vm == VmAtClose::kEnd && spec_.kill_client_on_failure) {
    KillClient("closed while serving it, and nothing would serve its next fault");
    return fmt::format("{}; its VMM (pid {}) was killed (kill_client_on_failure): nothing would serve its next fault",
                       reason, pid);
  }
  spdlog::warn(
      "session {}: closed while serving VMM pid {}: its next first touch of a missing page will hang{}", id(), pid,
      vm == VmAtClose::kEnd ? " (closing a session created with kill_client_on_failure kills its VMM instead)" : "");
  return fmt::format("{}; its VMM (pid {}) was left running: its next first touch of a missing page will hang", reason,
                     pid);
}

void Session::ReleaseServing() {
  listener_.reset();
  if (owns_socket_file_) {
    (void)RemoveSocketFile(socket_path_);
    owns_socket_file_ = false;
  }
  engine_.reset();
  uffd_ = Userfaultfd();
  connection_.reset();
  client_ = ProcessHandle();
  backing_.reset();
}

void Session::Release(const std::string& reason) {
  ReleaseServing();
  ForgetKept();
  {
    MutexLock lock(&mu_);
    wake_fd_.reset();
    detach_fd_.reset();
  }
  SetState(SessionState::kClosed, reason);
}

SessionState Session::state() const {
  MutexLock lock(&mu_);
  return state_;
}

bool Session::HoldsVm() const {
  MutexLock lock(&mu_);
  return HoldsVmLocked();
}

bool Session::Active() const {
  MutexLock lock(&mu_);
  return ActiveLocked();
}

bool Session::finished() const {
  MutexLock lock(&mu_);
  return finished_;
}

uint64_t Session::end_order() const {
  MutexLock lock(&mu_);
  return end_order_;
}

bool Session::HoldsVmLocked() const {
  // A failed session holds a VM while its thread still serves the VMM's
  // other faults; a refused handshake or a VMM that exited holds none.
  if (state_ == SessionState::kFailed) return serving_;
  return state_ == SessionState::kServing || state_ == SessionState::kCompleting;
}

bool Session::ActiveLocked() const { return state_ == SessionState::kWaiting || HoldsVmLocked(); }

void Session::End(const std::string& reason) {
  FinishCompletion(Status::Unavailable(reason));
  ForgetKept();
  {
    MutexLock lock(&mu_);
    // A failure stays visible until the API closes the session.
    if (state_ != SessionState::kFailed) SetStateLocked(SessionState::kClosed, reason);
  }
  spdlog::info("session {}: {}; session over", id(), reason);
}

void Session::SetState(SessionState state, const std::string& reason) {
  MutexLock lock(&mu_);
  SetStateLocked(state, reason);
}

void Session::SetStateLocked(SessionState state, const std::string& reason) {
  if (state_ == SessionState::kClosed) return;
  // A failed session stays failed, with its first reason, until it is closed.
  if (state_ == SessionState::kFailed && state != SessionState::kClosed) return;
  state_ = state;
  if (!reason.empty() && (reason_.empty() || state == SessionState::kFailed)) reason_ = reason;
}

void Session::Fail(const Status& reason) {
  {
    MutexLock lock(&mu_);
    if (state_ == SessionState::kFailed || state_ == SessionState::kClosed) return;
    SetStateLocked(SessionState::kFailed, reason.ToString());
  }
  env_.metrics->CountFailedSession();
  spdlog::error("session {}: FAILED: {}", id(), reason.ToString());
  if (spec_.kill_client_on_failure) KillClient("the session failed");
}

void Session::KillClient(const std::string& why) {
  ProcessIdentity identity;
  {
    MutexLock lock(&mu_);
    identity = client_identity_;
  }
  Status killed;
  pid_t pid = client_.pid();
  if (client_.valid()) {
    killed = client_.Signal(SIGKILL);
  } else if (identity.pid > 0 && identity.start_time != 0) {
    pid = identity.pid;
    auto handle = identity.Open();
    if (!handle.ok()) {
      spdlog::warn("session {}: not killing pid {}: it is not the VMM that connected, or that VMM is gone ({})", id(),
                   identity.pid, handle.status().ToString());
      return;
    }
    killed = handle->Signal(SIGKILL);
  } else {
    spdlog::error("session {}: cannot kill its VMM (pid {}): no pidfd on it and no record of its start time", id(),
                  identity.pid);
    return;
  }
  spdlog::error("session {}: killing VMM pid {} as requested (kill_client_on_failure; {}): {}", id(), pid, why,
                killed.ok() ? "sent SIGKILL" : killed.ToString());
}

// ---- The session thread ----------------------------------------------------

void Session::Run() {
  {
    MutexLock lock(&mu_);
    wake_poll_fd_ = wake_fd_.get();
    detach_poll_fd_ = detach_fd_.get();
  }
  if (engine_ || WaitForVmm()) {  // a resumed serving session has its VMM already
    {
      MutexLock lock(&mu_);
      serving_ = true;
    }
    ServeLoop();
    FinishRecording();
    MutexLock lock(&mu_);
    serving_ = false;
  }
  FinishOnItsOwn();
}

void Session::FinishOnItsOwn() {
  Requests requests = PendingRequests();
  if (requests.stop || requests.detach) return;  // whoever asked joins this thread and releases
  // Over on its own (completed, the VMM gone, a refused handshake, a drain):
  // nobody may ever close this session, so let go of everything now.
  ReleaseServing();
  MutexLock lock(&mu_);
  if (closed_) return;  // a Close or Detach began meanwhile: it joins this thread
  finished_ = true;
  end_order_ = NextEndOrder();
  wake_fd_.reset();
  detach_fd_.reset();
  // Nothing of the session is touched after the lock is released: the
  // session may be destroyed while this thread returns.
  thread_.detach();
}

pid_t Session::PeerPid() const {
  MutexLock lock(&mu_);
  return peer_.pid;
}

bool Session::WaitForVmm() {
  VmmAcceptorHooks hooks;
  hooks.stop = [this] {
    Requests requests = PendingRequests();
    if (requests.stop) return AcceptorStop::kNow;
    if (requests.detach) return AcceptorStop::kAfterPending;
    if (requests.end_waiting) return AcceptorStop::kAfterBacklog;
    return AcceptorStop::kNone;
  };
  hooks.on_refused_peer = [this] {
    {
      MutexLock lock(&mu_);
      ++refused_peers_;
    }
    env_.metrics->CountRefusedPeer();
  };
  hooks.on_refused_handshake = [this] {
    {
      MutexLock lock(&mu_);
      ++refused_handshakes_;
    }
    env_.metrics->CountRefusedHandshake();
  };
  VmmAcceptor acceptor(id(), listener_.get(), wake_poll_fd_, detach_poll_fd_,
                       VmmAcceptorOptions{env_.limits, env_.handshake_timeout, spec_.expected_peer}, std::move(hooks));
  AcceptedVmm vmm;
  Status accepted = acceptor.Accept(&vmm);
  if (accepted.code() == ErrorCode::kUnavailable) {
    Requests requests = PendingRequests();
    if (requests.detach || requests.stop) return false;  // the listener goes to the taker, or Close releases it
    SetState(SessionState::kClosed, "the pager drained before a VMM came; its socket is gone");
    ForgetKept();  // it holds no VM: nothing to recover
    spdlog::info("session {}: stopped waiting: the pager drains and no VMM came", id());
    return false;
  }
  const pid_t pid = vmm.peer.pid;
  if (accepted.ok()) {
    accepted = TakeVmm(std::move(vmm));
  } else {
    // Whoever sent a refused handshake is who a kill_client_on_failure
    // session kills.
    {
      MutexLock lock(&mu_);
      peer_ = vmm.peer;
      client_identity_ = vmm.identity;
    }
    client_ = std::move(vmm.client);
  }
  // The session has its VM, or failed: nobody else is served here. The
  // socket goes first, so no one connects while the rest is turned away.
  (void)RemoveSocketFile(socket_path_);
  owns_socket_file_ = false;
  acceptor.TurnAwayTheRest(accepted.ok()
                               ? fmt::format("session {} has its VMM already (pid {}): one VM per session", id(), pid)
                               : "the session failed");
  listener_.reset();
  if (accepted.ok()) return true;
  Fail(accepted.WithContext("handshake refused"));
  ForgetKept();  // it holds no VM: nothing to recover
  return false;
}

Status Session::TakeVmm(AcceptedVmm vmm) {
  std::string warning;
  if (vmm.uffd_features && !(*vmm.uffd_features & UFFD_FEATURE_EVENT_REMOVE)) {
    warning =
        "the VMM's userfaultfd lacks UFFD_FEATURE_EVENT_REMOVE: memory it discards (balloon, free-page reporting) is "
        "not announced, and a discarded page the pager installed before faults again and again (which fails the "
        "session)";
    spdlog::warn("session {}: pid {}: {}", id(), vmm.peer.pid, warning);
  } else if (!vmm.uffd_features) {
    spdlog::debug("session {}: the userfaultfd's features could not be read", id());
  }
  {
    MutexLock lock(&mu_);
    peer_ = vmm.peer;
    client_identity_ = vmm.identity;
    warning_ = std::move(warning);
  }
  client_ = std::move(vmm.client);
  UFFD_RETURN_IF_ERROR(BeginServing(std::move(vmm.regions), std::move(vmm.uffd), std::move(vmm.connection)));
  StartWorkingSet();
  // Before the first fault is served: from here on a crash of this process
  // must leave a successor everything it needs.
  phase_ = SessionPhase::kServing;
  Status kept = Keep({{SessionFdRole::kUffd, uffd_.fd()},
                      {SessionFdRole::kConnection, connection_.get()},
                      {SessionFdRole::kClient, client_.fd()}});
  if (!kept.ok())
    UFFD_LOG_RATE_LIMITED(spdlog::level::err, "session {}: a crash of the pager would lose it: {}", id(),
                          kept.ToString());
  if (env_.keeper) env_.keeper->Release(MakeCheckpoint(), SessionFdRole::kListener);
  SetState(SessionState::kServing);
  spdlog::info("session {}: serving pid {} ({} regions, {} bytes)", id(), vmm.peer.pid,
               engine_->layout().regions().size(), engine_->layout().total_bytes());
  return Status::Ok();
}

void Session::StartWorkingSet() {
  if (!env_.prefetch || env_.working_sets == nullptr) return;
  auto recorded = env_.working_sets->Load(cache_key_);
  if (!recorded || recorded->offsets.empty()) {
    StartRecordWindow();
    // Another host may have recorded it: its faults are recorded meanwhile,
    // in case nothing is published.
    if (env_.published_working_sets != nullptr && env_.working_set_writer != nullptr &&
        env_.working_set_writer->enabled()) {
      if (auto url = PublishedWorkingSetUrl(*backing_)) {
        published_fetch_ = env_.published_working_sets->Fetch(cache_key_, *url);
        // As REAP does: the working set in a few large reads before the
        // guest asks, rather than its faults each fetching chunks that
        // compete with that download for the store. A store slower than
        // the bound leaves the guest on demand faults meanwhile.
        if (published_fetch_.wait_for(kPublishedFetchWait) == std::future_status::ready) TakePublishedWorkingSet();
      }
    }
    return;
  }
  if (env_.refine_interval && std::chrono::system_clock::now() - recorded->saved_at >= *env_.refine_interval) {
    // Rate-limited: only a record older than the interval is refined.
    const auto seed = static_cast<uint64_t>(recorded->saved_at.time_since_epoch().count());
    RefiningReplay plan = PlanRefiningReplay(recorded->offsets, seed);
    spdlog::info("session {}: refining the working set: {} of its {} pages held back", id(), plan.held_out.size(),
                 recorded->offsets.size());
    Sink().Add(&FaultCounters::working_set_refinements);
    engine_->HoldOut(std::move(plan.held_out));
    refining_base_ = std::move(plan.replayed);
    StartRecordWindow();
  }
  ReplayRecord(*recorded, CompactWorkingSet::Reads::kDirect);
}

void Session::ReplayRecord(const WorkingSet& recorded, CompactWorkingSet::Reads reads) {
  if (env_.working_set_writer != nullptr && env_.working_set_writer->enabled()) {
    // The working set's pages one after the other: a few large reads.
    const std::string path = env_.working_sets->CompactPathFor(cache_key_);
    auto compact = CompactWorkingSet::Open(path, cache_key_,
                                           CompactWorkingSet::RecordHash(recorded.page_size, recorded.offsets), reads);
    if (compact.ok()) {
      spdlog::info("session {}: replaying a compact working set of {} pages", id(), compact->offsets().size());
      Sink().Add(&FaultCounters::compact_replays);
      engine_->SetCompactPlan(std::move(*compact));
      return;
    }
    spdlog::info("session {}: {}; its working set is read from the memory file instead", id(),
                 compact.status().ToString());
    Sink().Add(&FaultCounters::compact_fallbacks);
    if (compact.status().code() == ErrorCode::kInvalidArgument) {
      std::error_code ec;
      std::filesystem::remove(path, ec);  // never to be trusted again
    }
  }
  spdlog::info("session {}: prefetching a recorded working set of {} pages", id(), recorded.offsets.size());
  engine_->SetPrefetchPlan(ReplayOrder(recorded.offsets, kReplayWindowPages), recorded.page_size);
}

void Session::TakePublishedWorkingSet() {
  const Status fetched = published_fetch_.get();
  published_fetch_ = {};
  if (!fetched.ok()) {
    if (fetched.code() == ErrorCode::kNotFound) {
      spdlog::info("session {}: no working set is published for it ({}); recording one", id(), fetched.message());
    } else {
      // Refused: not a working set of these bytes (a store that could not
      // be reached is not a refusal; the store's counters show it).
      if (fetched.code() == ErrorCode::kInvalidArgument) Sink().Add(&FaultCounters::published_working_set_refusals);
      spdlog::warn("session {}: the published working set is not used: {}; recording one", id(), fetched.ToString());
    }
    return;
  }
  auto recorded = env_.working_sets->Load(cache_key_);
  if (!recorded || recorded->offsets.empty()) return;
  // What was recorded so far is a part of what came: the record is what came.
  (void)engine_->TakeRecording();
  Sink().Add(&FaultCounters::published_working_set_replays);
  spdlog::info("session {}: replaying the working set published for it ({} pages)", id(), recorded->offsets.size());
  ReplayRecord(*recorded, CompactWorkingSet::Reads::kBuffered);
}

void Session::StartRecordWindow() {
  engine_->StartRecording(engine_->layout().total_bytes() / 4096);
  const auto now = std::chrono::steady_clock::now();
  record_deadline_ = now + env_.record_window;
  record_last_growth_ = now;
  record_pages_seen_ = 0;
}

std::chrono::steady_clock::time_point Session::RecordWindowEnd() {
  // A restore slowed by cold storage is still bringing its working set in
  // when the window's time is up: the window lasts until the faults pause
  // (kRecordQuiet without a new page), at most kRecordStretch windows, so
  // the record holds the whole working set, not its first seconds.
  const auto now = std::chrono::steady_clock::now();
  if (engine_->recorded_pages() != record_pages_seen_) {
    record_pages_seen_ = engine_->recorded_pages();
    record_last_growth_ = now;
  }
  const auto hard = record_deadline_ + (kRecordStretch - 1) * env_.record_window;
  return std::min(hard, std::max(record_deadline_, record_last_growth_ + kRecordQuiet));
}

void Session::FinishRecording() {
  if (!engine_ || !engine_->recording()) return;
  WorkingSet set;
  set.page_size = engine_->layout().regions().front().page_size;
  set.offsets = engine_->TakeRecording();
  if (refining_base_) {
    set.offsets = RefinedRecord(*refining_base_, set.offsets, engine_->layout().total_bytes() / set.page_size);
    refining_base_.reset();
  }
  if (set.offsets.empty()) return;
  Status st = env_.working_sets->Save(cache_key_, set);
  if (!st.ok()) {
    UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "session {}: could not save its working set: {}", id(), st.ToString());
    return;
  }
  spdlog::info("session {}: recorded a working set of {} pages for cache key {}", id(), set.offsets.size(),
               spec_.cache_key);
  if (env_.working_set_writer != nullptr) {
    std::optional<ObjectUrl> publish_to;
    if (env_.published_working_sets != nullptr) publish_to = PublishedWorkingSetUrl(*backing_);
    env_.working_set_writer->Enqueue(cache_key_, set.page_size, std::move(set.offsets), backing_,
                                     std::move(publish_to));
  }
}

void Session::ServeLoop() {
  bool retry_pending = false;
  for (;;) {
    Requests requests = PendingRequests();
    // Completion and prefetch are background work: poll without blocking
    // while the engine can go on with some, so demand faults are still
    // served first; block while what it waits for is storage.
    int timeout = retry_pending ? kEagainRetryMs : (engine_->HasWorkNow(requests.complete) ? 0 : -1);
    auto sooner = [&](std::chrono::steady_clock::time_point when) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(when - std::chrono::steady_clock::now());
      int ms = static_cast<int>(std::max<int64_t>(left.count() + 1, 0));
      timeout = timeout < 0 ? ms : std::min(timeout, ms);
    };
    if (engine_->recording()) sooner(RecordWindowEnd());
    if (published_fetch_.valid()) {
      // Its fetcher has no fd to poll: a look every few ms while it runs.
      if (published_fetch_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        TakePublishedWorkingSet();
        timeout = 0;  // the replay may start now
      } else {
        sooner(std::chrono::steady_clock::now() + kPublishedFetchPollInterval);
      }
    }
    bool check_identity = false;
    if (!client_.valid()) {
      MutexLock lock(&mu_);
      check_identity = client_identity_.start_time != 0;
    }
    if (check_identity) sooner(next_identity_check_);
    // Where the VMM's exit shows: its pidfd turns readable, or (without one)
    // its connection hangs up. A negative fd is not polled.
    pollfd pfds[5] = {{uffd_.fd(), POLLIN, 0},
                      {wake_poll_fd_, POLLIN, 0},
                      {detach_poll_fd_, POLLIN, 0},
                      {engine_->loader_fd(), POLLIN, 0},
                      client_.valid() ? pollfd{client_.fd(), POLLIN, 0}
                                      : pollfd{watch_connection_ ? connection_.get() : -1, POLLRDHUP, 0}};
    int rc = ::poll(pfds, 5, timeout);
    if (rc < 0 && errno != EINTR) {
      Fail(Status::FromErrno(errno, "poll userfaultfd"));
      return;
    }
    requests = PendingRequests();
    if (requests.stop || requests.detach) return;
    // Consumed once seen: a request stays in requests_, and a drain's
    // StopWaiting may still signal a session that took its VMM meanwhile.
    for (int i : {1, 2}) {
      if (pfds[i].revents & POLLIN) {
        uint64_t v;
        (void)!::read(pfds[i].fd, &v, sizeof(v));
      }
    }
    ServeReport report = engine_->ServeEvents();
    if (engine_->remove_generation() != kept_remove_generation_) {
      // The VMM discarded memory: a successor must serve those ranges as
      // zeros too, so the checkpoint follows each batch of removes.
      kept_remove_generation_ = engine_->remove_generation();
      Status kept = Keep({});
      if (!kept.ok()) UFFD_LOG_RATE_LIMITED(spdlog::level::err, "session {}: {}", id(), kept.ToString());
    }
    bool completed = false;
    if (!report.vm_gone && requests.complete && !report.retry_pending) completed = StepCompletion(&report);
    if (!completed && !report.vm_gone && !report.retry_pending && engine_->prefetching()) {
      engine_->PrefetchStep(kPrefetchStepPages, &report);
    }
    if (engine_->recording() && std::chrono::steady_clock::now() >= RecordWindowEnd()) FinishRecording();
    {
      MutexLock lock(&mu_);
      present_pages_ = engine_->present_pages();
    }
    if (report.failure) Fail(*report.failure);
    if (report.vm_gone) {
      End("the VM's address space is gone");
      return;
    }
    if (completed) return;
    if (auto gone = VmmGone(pfds[4].revents)) {
      End(*gone);  // there is no one left to serve
      return;
    }
    retry_pending = report.retry_pending;
  }
}

std::optional<std::string> Session::VmmGone(short revents) {
  if (client_.valid()) {
    if (revents & POLLIN) return fmt::format("the VMM process (pid {}) exited", client_.pid());
    return std::nullopt;
  }
  ProcessIdentity identity;
  {
    MutexLock lock(&mu_);
    identity = client_identity_;
  }
  const bool known = identity.start_time != 0;
  if (watch_connection_ && (revents & (POLLRDHUP | POLLHUP | POLLERR))) {
    if (!known) return fmt::format("the VMM (pid {}) hung up its connection", identity.pid);
    if (!identity.IsAlive()) return fmt::format("the VMM (pid {}) hung up its connection and exited", identity.pid);
    // Firecracker before 1.12 closes its end after the handshake: from now
    // on only its identity tells.
    watch_connection_ = false;
    spdlog::debug("session {}: VMM pid {} closed its connection; watching its identity", id(), identity.pid);
  }
  if (known && std::chrono::steady_clock::now() >= next_identity_check_) {
    next_identity_check_ = std::chrono::steady_clock::now() + kIdentityCheckInterval;
    if (!identity.IsAlive()) return fmt::format("the VMM process (pid {}) exited", identity.pid);
  }
  return std::nullopt;
}

// ---- Completion ------------------------------------------------------------

bool Session::StepCompletion(ServeReport* report) {
  bool done = false;
  Status st = engine_->PopulateStep(kCompletionStepPages, &done, report);
  if (!st.ok()) {
    spdlog::error("session {}: completion failed, still serving: {}", id(), st.ToString());
    FinishCompletion(st);
    return false;
  }
  if (!done) return false;
  st = engine_->UnregisterAll();
  if (!st.ok()) {
    FinishCompletion(st.WithContext("unregister after completion"));
    return false;
  }
  SetState(SessionState::kCompleted);
  ForgetKept();  // nothing registered is left to recover
  spdlog::info("session {}: complete; {} pages present, memory unregistered", id(), engine_->present_pages());
  FinishCompletion(Status::Ok());
  // Nothing is registered any more: the uffd and connection can go.
  uffd_ = Userfaultfd();
  connection_.reset();
  return true;
}

void Session::FinishCompletion(Status result) {
  std::optional<std::promise<Status>> promise;
  {
    MutexLock lock(&mu_);
    if (!completion_) return;
    promise = std::move(completion_);
    completion_.reset();
    if (state_ == SessionState::kCompleting) state_ = SessionState::kServing;
    requests_.complete = false;
  }
  promise->set_value(std::move(result));
}

Status Session::Complete() {
  std::future<Status> done;
  {
    MutexLock lock(&mu_);
    if (state_ == SessionState::kCompleting || completion_) {
      return Status::Conflict("session " + id() + " is already completing");
    }
    if (state_ != SessionState::kServing) {
      return Status::Conflict(fmt::format("session {} is {}, not serving", id(), SessionStateName(state_)));
    }
    completion_.emplace();
    done = completion_->get_future();
    state_ = SessionState::kCompleting;
    requests_.complete = true;
    Signal(wake_fd_);
  }
  return done.get();
}

// ---- Drain -----------------------------------------------------------------

void Session::StopWaiting() {
  {
    MutexLock lock(&mu_);
    if (closed_ || state_ != SessionState::kWaiting || requests_.end_waiting) return;
    requests_.end_waiting = true;
  }
  // The socket goes before the thread is told: a VMM either connected before
  // (and is still taken) or finds no socket (ENOENT), never a listener that
  // closes under it.
  (void)RemoveSocketFile(socket_path_);
  spdlog::info("session {}: the pager drains: socket removed; a VMM that connected already is still served", id());
  MutexLock lock(&mu_);
  Signal(detach_fd_);
}

// ---- Hand-over -------------------------------------------------------------

Result<DetachedSession> Session::Detach() {
  std::thread thread;
  {
    MutexLock lock(&mu_);
    if (closed_) return Status::Conflict("session " + id() + " is closed");
    if (!ActiveLocked()) {
      return Status::Conflict(fmt::format("session {} is {}: nothing to hand over", id(), SessionStateName(state_)));
    }
    if (requests_.end_waiting) return Status::Conflict("session " + id() + " stops waiting: the pager drains");
    closed_ = true;  // Close() does nothing from here on
    requests_.detach = true;
    Signal(detach_fd_);
    thread = std::move(thread_);  // an active session has not finished: its thread is there
  }
  if (thread.joinable()) thread.join();
  FinishCompletion(Status::Unavailable("session " + id() + " was handed over to another pager"));
  SessionState now = state();
  if (now == SessionState::kClosed || now == SessionState::kCompleted || (!uffd_.valid() && !listener_)) {
    // It ended on its own while it was being stopped.
    Release("ended");
    return Status::Conflict("session " + id() + " ended while it was being handed over");
  }
  DetachedSession out;
  out.checkpoint = MakeCheckpoint();
  out.fds.listener = std::move(listener_);
  out.fds.uffd = std::move(uffd_.owned_fd());
  out.fds.connection = std::move(connection_);
  out.fds.client = client_.TakeFd();
  engine_.reset();
  uffd_ = Userfaultfd();
  SetState(SessionState::kClosed, "handed over to another pager");
  spdlog::info("session {}: detached for hand-over ({})", id(), SessionPhaseName(out.checkpoint.phase));
  return out;
}

nlohmann::json Session::Describe() const {
  MutexLock lock(&mu_);
  nlohmann::json j = {
      {"session_id", spec_.id},
      {"instance_id", spec_.instance_id},
      {"state", SessionStateName(state_)},
      {"backing_memory_path", spec_.backing_path},
      {"cache_key", spec_.cache_key},
      {"uffd_socket_path", socket_path_},
      {"kill_client_on_failure", spec_.kill_client_on_failure},
      {"refused_peers", refused_peers_},
      {"refused_handshakes", refused_handshakes_},
      {"client_pid", peer_.pid},
      {"regions", region_count_},
      {"guest_bytes", guest_bytes_},
      {"present_pages", present_pages_},
      {"created_at_unix", std::chrono::duration_cast<std::chrono::seconds>(created_at_.time_since_epoch()).count()},
      {"counters", counters_.ToJson()},
      {"origin", origin_},
      {"incarnation", incarnation_},
  };
  AddBackingFields(spec_, &j);
  if (!reason_.empty()) j["reason"] = reason_;
  if (!warning_.empty()) j["warning"] = warning_;
  if (spec_.expected_peer.uid) j["expected_uid"] = *spec_.expected_peer.uid;
  if (spec_.expected_peer.pid) j["expected_pid"] = *spec_.expected_peer.pid;
  if (spec_.socket_ownership.uid) j["socket_uid"] = *spec_.socket_ownership.uid;
  if (spec_.socket_ownership.gid) j["socket_gid"] = *spec_.socket_ownership.gid;
  return j;
}

}  // namespace uffdpager
