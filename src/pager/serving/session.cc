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

namespace uffdpager {

namespace {
// Pages installed per completion step before demand faults get another turn.
constexpr size_t kCompletionStepPages = 512;
// Pages prefetched per step before demand faults get another turn.
constexpr size_t kPrefetchStepPages = 64;
// How long to wait before serving again after EAGAIN with no event to read.
constexpr int kEagainRetryMs = 1;
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
                 const SessionEnvironment& env, std::shared_ptr<BackingFile> backing)
    : spec_(std::move(spec)),
      socket_path_(std::move(socket_path)),
      incarnation_(incarnation),
      origin_(std::move(origin)),
      env_(env),
      backing_(std::move(backing)),
      cache_key_(spec_.cache_key, backing_ ? backing_->identity().ToString() : std::string()),
      created_at_(std::chrono::system_clock::now()),
      cache_key_counters_(env.metrics->CountersForCacheKey(cache_key_)) {}

Status Session::CreateWakeFds() {
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
  thread_ = std::thread([this] {
    // Named for top, perf and gdb: otherwise it inherits the name of the
    // HTTP thread that created it. The kernel keeps 15 bytes.
    (void)::pthread_setname_np(::pthread_self(), ("s:" + id()).substr(0, 15).c_str());
    Run();
  });
}

Result<std::shared_ptr<Session>> Session::Start(SessionSpec spec, std::shared_ptr<BackingFile> backing,
                                                std::string socket_path, const SessionEnvironment& env) {
  std::shared_ptr<Session> session(new Session(std::move(spec), std::move(socket_path), NextSessionIncarnation(),
                                               "created", env, std::move(backing)));
  UFFD_RETURN_IF_ERROR(session->CreateWakeFds());
  session->owns_socket_file_ = true;
  UFFD_RETURN_IF_ERROR(session->Listen());
  // Before the create call answers: once the caller has the socket path, a
  // crash of this process must not lose the session. Marked kept first, so
  // that closing it (even after a Keep that failed half-way) forgets it.
  {
    MutexLock lock(&session->mu_);
    session->kept_ = env.keeper != nullptr;
  }
  UFFD_RETURN_IF_ERROR(session->Keep({{SessionFdRole::kListener, session->listener_.get()}}));
  {
    MutexLock lock(&session->mu_);
    session->kept_ = env.keeper != nullptr;
  }
  session->StartThread();
  spdlog::info("session {}: listening on {} for instance {} (backing {}, cache key {})", session->id(),
               session->socket_path_, session->spec_.instance_id, session->spec_.backing_path,
               session->spec_.cache_key);
  return session;
}

Result<std::shared_ptr<Session>> Session::Resume(DetachedSession detached, std::shared_ptr<BackingFile> backing,
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
    // Its checkpoint stays until the session is closed: a further restart
    // reports the loss again.
    session->kept_ = env.keeper != nullptr;
  }
  session->Fail(why);
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
  {
    MutexLock lock(&mu_);
    guest_bytes_ = layout->total_bytes();
    region_count_ = layout->regions().size();
  }
  auto engine =
      FaultEngine::Create(&uffd_, std::move(*layout), backing_, env_.cache, env_.cache->InternNamespace(cache_key_),
                          Sink(), env_.engine_options, wake_fd_.get());
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
  return checkpoint;
}

Status Session::Keep(std::initializer_list<SessionKeeper::ParkedFd> fds) {
  if (!env_.keeper) return Status::Ok();
  return env_.keeper->Keep(MakeCheckpoint(), fds);
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

void Session::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

Session::Requests Session::PendingRequests() const {
  MutexLock lock(&mu_);
  return requests_;
}

void Session::Close(const std::string& reason) {
  {
    MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    requests_.stop = true;
  }
  if (wake_fd_) Wake();
  if (thread_.joinable()) thread_.join();
  FinishCompletion(Status::Unavailable("session closed"));
  Release(reason);
  spdlog::info("session {}: closed ({})", id(), reason);
}

void Session::Release(const std::string& reason) {
  listener_.reset();
  if (owns_socket_file_) (void)RemoveSocketFile(socket_path_);
  engine_.reset();
  uffd_ = Userfaultfd();
  connection_.reset();
  ForgetKept();
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

bool Session::HoldsVmLocked() const {
  // A failed session holds a VM while its thread still serves the VMM's
  // other faults; a refused handshake or a VMM that exited holds none.
  if (state_ == SessionState::kFailed) return serving_;
  return state_ != SessionState::kCompleted && state_ != SessionState::kClosed;
}

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
  if (spec_.kill_client_on_failure && client_.valid()) {
    Status killed = client_.Signal(SIGKILL);
    spdlog::error("session {}: killing VMM pid {} as requested (kill_client_on_failure): {}", id(), client_.pid(),
                  killed.ok() ? "sent SIGKILL" : killed.ToString());
  }
}

// ---- The session thread ----------------------------------------------------

void Session::Run() {
  if (!engine_ && !WaitForVmm()) return;  // a resumed serving session has its VMM already
  {
    MutexLock lock(&mu_);
    serving_ = true;
  }
  ServeLoop();
  FinishRecording();
  MutexLock lock(&mu_);
  serving_ = false;
}

bool Session::WaitForVmm() {
  VmmAcceptor acceptor(
      id(), listener_.get(), {wake_fd_.get(), detach_fd_.get()},
      VmmAcceptorOptions{env_.limits, env_.handshake_timeout, spec_.expected_peer},
      [this] {
        Requests requests = PendingRequests();
        return requests.stop || requests.detach;
      },
      [this] {
        {
          MutexLock lock(&mu_);
          ++refused_peers_;
        }
        env_.metrics->CountRefusedPeer();
      });
  AcceptedVmm vmm;
  Status accepted = acceptor.Accept(&vmm);
  if (accepted.ok()) accepted = TakeVmm(std::move(vmm));
  if (accepted.ok()) return true;
  Requests requests = PendingRequests();
  if (requests.detach) return false;  // the listener goes to the taker
  listener_.reset();
  if (requests.stop) return false;
  // The peer that sent a refused handshake is who a kill_client_on_failure
  // session kills.
  {
    MutexLock lock(&mu_);
    peer_ = vmm.peer;
  }
  if (vmm.client.valid()) client_ = std::move(vmm.client);
  Fail(accepted.WithContext("handshake refused"));
  ForgetKept();  // it holds no VM: nothing to recover
  return false;
}

Status Session::TakeVmm(AcceptedVmm vmm) {
  {
    MutexLock lock(&mu_);
    peer_ = vmm.peer;
  }
  client_ = std::move(vmm.client);
  UFFD_RETURN_IF_ERROR(BeginServing(std::move(vmm.regions), std::move(vmm.uffd), std::move(vmm.connection)));
  listener_.reset();
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
  // The socket has done its job; remove it so it is never mistaken for live.
  (void)RemoveSocketFile(socket_path_);
  spdlog::info("session {}: serving pid {} ({} regions, {} bytes)", id(), vmm.peer.pid,
               engine_->layout().regions().size(), engine_->layout().total_bytes());
  return Status::Ok();
}

void Session::StartWorkingSet() {
  if (!env_.prefetch || env_.working_sets == nullptr) return;
  auto recorded = env_.working_sets->Load(cache_key_);
  if (!recorded || recorded->offsets.empty()) {
    engine_->StartRecording(engine_->layout().total_bytes() / 4096);
    record_deadline_ = std::chrono::steady_clock::now() + env_.record_window;
    return;
  }
  if (env_.working_set_writer != nullptr && env_.working_set_writer->enabled()) {
    // The working set's pages one after the other: a few large reads.
    const std::string path = env_.working_sets->CompactPathFor(cache_key_);
    auto compact = CompactWorkingSet::Open(path, cache_key_,
                                           CompactWorkingSet::RecordHash(recorded->page_size, recorded->offsets));
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
  spdlog::info("session {}: prefetching a recorded working set of {} pages", id(), recorded->offsets.size());
  engine_->SetPrefetchPlan(ReplayOrder(recorded->offsets, kReplayWindowPages), recorded->page_size);
}

void Session::FinishRecording() {
  if (!engine_ || !engine_->recording()) return;
  WorkingSet set;
  set.page_size = engine_->layout().regions().front().page_size;
  set.offsets = engine_->TakeRecording();
  if (set.offsets.empty()) return;
  Status st = env_.working_sets->Save(cache_key_, set);
  if (!st.ok()) {
    UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "session {}: could not save its working set: {}", id(), st.ToString());
    return;
  }
  spdlog::info("session {}: recorded a working set of {} pages for cache key {}", id(), set.offsets.size(),
               spec_.cache_key);
  if (env_.working_set_writer != nullptr) {
    env_.working_set_writer->Enqueue(cache_key_, set.page_size, std::move(set.offsets), backing_);
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
    if (timeout < 0 && engine_->recording()) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(record_deadline_ - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<int64_t>(left.count() + 1, 0));
    }
    pollfd pfds[5] = {{uffd_.fd(), POLLIN, 0},
                      {wake_fd_.get(), POLLIN, 0},
                      {detach_fd_.get(), POLLIN, 0},
                      {engine_->loader_fd(), POLLIN, 0},
                      {client_.fd(), POLLIN, 0}};
    int rc = ::poll(pfds, client_.valid() ? 5 : 4, timeout);
    if (rc < 0 && errno != EINTR) {
      Fail(Status::FromErrno(errno, "poll userfaultfd"));
      return;
    }
    requests = PendingRequests();
    if (requests.stop || requests.detach) return;
    if (pfds[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_.get(), &v, sizeof(v));
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
    if (engine_->recording() && std::chrono::steady_clock::now() >= record_deadline_) FinishRecording();
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
    if (client_.valid() && (pfds[4].revents & POLLIN)) {
      // The VMM exited: there is no one left to serve.
      End("the VMM process (pid " + std::to_string(client_.pid()) + ") exited");
      return;
    }
    retry_pending = report.retry_pending;
  }
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
  }
  Wake();
  return done.get();
}

// ---- Hand-over -------------------------------------------------------------

Result<DetachedSession> Session::Detach() {
  {
    MutexLock lock(&mu_);
    if (closed_) return Status::Conflict("session " + id() + " is closed");
    if (!HoldsVmLocked()) {
      return Status::Conflict(fmt::format("session {} is {}: nothing to hand over", id(), SessionStateName(state_)));
    }
    closed_ = true;  // Close() does nothing from here on
    requests_.detach = true;
  }
  uint64_t one = 1;
  (void)!::write(detach_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
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
      {"client_pid", peer_.pid},
      {"regions", region_count_},
      {"guest_bytes", guest_bytes_},
      {"present_pages", present_pages_},
      {"created_at_unix", std::chrono::duration_cast<std::chrono::seconds>(created_at_.time_since_epoch()).count()},
      {"counters", counters_.ToJson()},
      {"origin", origin_},
      {"incarnation", incarnation_},
  };
  if (!reason_.empty()) j["reason"] = reason_;
  if (spec_.expected_peer.uid) j["expected_uid"] = *spec_.expected_peer.uid;
  if (spec_.expected_peer.pid) j["expected_pid"] = *spec_.expected_peer.pid;
  if (spec_.socket_ownership.uid) j["socket_uid"] = *spec_.socket_ownership.uid;
  if (spec_.socket_ownership.gid) j["socket_gid"] = *spec_.socket_ownership.gid;
  return j;
}

}  // namespace uffdpager
