#include "pager/serving/session.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <csignal>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

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

Result<std::shared_ptr<BackingFile>> Session::OpenBacking(const std::string& path, const SessionEnvironment& env) {
  return env.backing_policy ? env.backing_policy->Open(path) : BackingFile::Open(path);
}

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

Result<std::shared_ptr<Session>> Session::Start(SessionSpec spec, std::string socket_path,
                                                const SessionEnvironment& env) {
  auto backing = OpenBacking(spec.backing_path, env);
  if (!backing.ok()) return backing.status();
  std::shared_ptr<Session> session(new Session(std::move(spec), std::move(socket_path), env, std::move(*backing)));
  session->incarnation_ = NextSessionIncarnation();
  UFFD_RETURN_IF_ERROR(session->CreateWakeFds());
  session->owns_socket_file_ = true;
  UFFD_RETURN_IF_ERROR(session->Listen());
  // Before the create call answers: once the caller has the socket path, a
  // crash of this process must not lose the session.
  UFFD_RETURN_IF_ERROR(session->KeepRecord({SessionFdRole::kListener}));
  session->StartThread();
  spdlog::info("session {}: listening on {} for instance {} (backing {}, cache key {})", session->id(),
               session->socket_path_, session->spec_.instance_id, session->spec_.backing_path,
               session->spec_.cache_key);
  return session;
}

Result<std::shared_ptr<Session>> Session::Adopt(RecoveredSession recovered, std::string origin,
                                                const SessionEnvironment& env) {
  SessionRecord& record = recovered.record;
  auto backing = OpenBacking(record.spec.backing_path, env);
  if (!backing.ok()) return backing.status().WithContext("reopen the backing file");
  if ((*backing)->identity().ToString() != record.backing_identity) {
    return Status::Conflict(fmt::format(
        "the backing file {} is not the file the session began with (identity {} then, {} now); serving it "
        "would give the VM other bytes",
        record.spec.backing_path, record.backing_identity, (*backing)->identity().ToString()));
  }
  std::shared_ptr<Session> session(new Session(record.spec, record.socket_path, env, std::move(*backing)));
  session->incarnation_ = record.incarnation;
  session->origin_ = std::move(origin);
  // Until it serves, a failed adoption must not forget the record or remove
  // the socket: they may still be another pager's (a refused hand-over) or
  // needed to report the loss (a restart).
  session->recovery_forgotten_.store(true);
  UFFD_RETURN_IF_ERROR(session->CreateWakeFds());
  if (record.phase == SessionPhase::kWaiting) {
    if (recovered.fds.listener) {
      // Connections made while nobody listened are queued on it.
      session->listener_ = std::move(recovered.fds.listener);
    } else {
      UFFD_RETURN_IF_ERROR(session->Listen());
    }
    UFFD_RETURN_IF_ERROR(session->KeepRecord({SessionFdRole::kListener}));
  } else {
    if (!recovered.fds.uffd) {
      return Status::NotFound(
          "its userfaultfd did not come back (the pager ran without systemd's fd store, or crashed while "
          "taking the VMM's memory)");
    }
    if (recovered.fds.client) {
      session->client_ = ProcessHandle::Adopt(std::move(recovered.fds.client), record.client_pid);
    }
    session->peer_.pid = record.client_pid;
    UFFD_RETURN_IF_ERROR(session->BeginServing(record.regions, std::move(recovered.fds.uffd),
                                               std::move(recovered.fds.connection)));
    for (const auto& [start, end] : record.removed) session->engine_->RestoreRemoved(start, end);
    session->phase_ = SessionPhase::kServing;
    Status kept = session->KeepRecord({SessionFdRole::kUffd, SessionFdRole::kConnection, SessionFdRole::kClient});
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
  session->recovery_forgotten_.store(false);
  session->StartThread();
  spdlog::info("session {}: {} ({}, socket {})", session->id(), session->origin_,
               record.phase == SessionPhase::kServing ? "serving" : "waiting for its VMM", session->socket_path_);
  return session;
}

std::shared_ptr<Session> Session::Lost(RecoveredSession recovered, const Status& why, const SessionEnvironment& env) {
  const SessionRecord& record = recovered.record;
  std::shared_ptr<Session> session(new Session(record.spec, record.socket_path, env, nullptr));
  session->incarnation_ = record.incarnation;
  session->origin_ = "lost in a pager restart";

  session->peer_.pid = record.client_pid;
  if (recovered.fds.client) {
    session->client_ = ProcessHandle::Adopt(std::move(recovered.fds.client), record.client_pid);
  }
  // Its record stays until the session is closed: a further restart reports
  // the loss again.
  session->Fail(why.WithContext("cannot serve this session after the pager restarted"));
  return session;
}

Session::Session(SessionSpec spec, std::string socket_path, const SessionEnvironment& env,
                 std::shared_ptr<BackingFile> backing)
    : spec_(std::move(spec)),
      socket_path_(std::move(socket_path)),
      env_(env),
      backing_(std::move(backing)),
      created_at_(std::chrono::system_clock::now()),
      cache_key_counters_(env.metrics ? env.metrics->CountersForCacheKey(spec_.cache_key) : nullptr) {}

Session::~Session() { Close("session destroyed"); }

void Session::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof(one));
}

void Session::Close(const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  stop_.store(true);
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
  ForgetRecovery();
  SetState(SessionState::kClosed, reason);
}

SessionState Session::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

bool Session::HoldsVm() const {
  std::lock_guard lock(mu_);
  return HoldsVmLocked();
}

bool Session::HoldsVmLocked() const {
  // A failed session holds a VM while its thread still serves the VMM's
  // other faults; a refused handshake or a VMM that exited holds none.
  if (state_ == SessionState::kFailed) return serving_thread_running_.load();
  return state_ != SessionState::kCompleted && state_ != SessionState::kClosed;
}

void Session::End(const std::string& reason) {
  FinishCompletion(Status::Unavailable(reason));
  ForgetRecovery();
  // A failure stays visible until the API closes the session.
  if (state() != SessionState::kFailed) SetState(SessionState::kClosed, reason);
  spdlog::info("session {}: {}; session over", id(), reason);
}

void Session::SetState(SessionState state, const std::string& reason) {
  std::lock_guard lock(mu_);
  if (state_ == SessionState::kClosed) return;
  // A failed session stays failed, with its first reason, until it is closed.
  if (state_ == SessionState::kFailed && state != SessionState::kClosed) return;
  state_ = state;
  if (!reason.empty() && (reason_.empty() || state == SessionState::kFailed)) reason_ = reason;
}

void Session::Fail(const Status& reason) {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    first = state_ != SessionState::kFailed && state_ != SessionState::kClosed;
  }
  SetState(SessionState::kFailed, reason.ToString());
  if (!first) return;
  if (env_.failed_sessions) env_.failed_sessions->fetch_add(1);
  spdlog::error("session {}: FAILED: {}", id(), reason.ToString());
  if (spec_.kill_client_on_failure && client_.valid()) {
    Status killed = client_.Signal(SIGKILL);
    spdlog::error("session {}: killing VMM pid {} as requested (kill_client_on_failure): {}", id(), client_.pid(),
                  killed.ok() ? "sent SIGKILL" : killed.ToString());
  }
}

void Session::Run() {
  if (!engine_) {  // an adopted serving session has its VMM already
    Status accepted = AcceptVmm();
    if (!accepted.ok() && detach_requested_.load()) return;  // the listener goes to the taker
    listener_.reset();
    if (!accepted.ok()) {
      if (!stop_.load()) {
        Fail(accepted.WithContext("handshake refused"));
        ForgetRecovery();  // it holds no VM: nothing to recover
      }
      return;
    }
  }
  serving_thread_running_.store(true);
  ServeLoop();
  FinishRecording();
  serving_thread_running_.store(false);
}

void Session::FinishRecording() {
  if (!engine_ || !engine_->recording()) return;
  WorkingSet set;
  set.page_size = engine_->layout().regions().front().page_size;
  set.offsets = engine_->TakeRecording();
  if (set.offsets.empty()) return;
  Status st = env_.working_sets->Save(spec_.cache_key, backing_->identity(), set);
  if (st.ok()) {
    spdlog::info("session {}: recorded a working set of {} pages for cache key {}", id(), set.offsets.size(),
                 spec_.cache_key);
  } else {
    spdlog::warn("session {}: could not save its working set: {}", id(), st.ToString());
  }
}

Status Session::AcceptVmm() {
  for (;;) {
    pollfd pfds[3] = {{listener_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}, {detach_fd_.get(), POLLIN, 0}};
    if (::poll(pfds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "poll session socket");
    }
    if (stop_.load() || detach_requested_.load()) return Status::Unavailable("session stopped");
    if (!(pfds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return Status::FromErrno(errno, "accept on " + socket_path_);
    }
    PeerCredentials peer{};
    if (!AcceptPeer(conn.get(), &peer)) continue;
    auto received = ReceiveHandshake(conn.get(), env_.limits.max_message_bytes, env_.handshake_timeout,
                                     wake_fd_.get());
    if (!received.ok()) {
      if (stop_.load()) return Status::Unavailable("session stopped");
      if (received.status().code() == ErrorCode::kTimeout) {
        // Something connected and said nothing: not a VMM mid-handshake (a
        // VMM sends at once). Drop it and keep waiting for the real one.
        spdlog::warn("session {}: pid {} connected but sent no handshake within {} ms; connection closed", id(),
                     peer.pid, env_.handshake_timeout.count());
        continue;
      }
      return received.status();
    }
    return AdoptHandshake(std::move(conn), peer, std::move(*received));
  }
}

bool Session::AcceptPeer(int conn, PeerCredentials* peer) {
  auto creds = GetPeerCredentials(conn);
  Status verdict = creds.ok() ? CheckPeer(*creds, spec_.expected_peer) : creds.status();
  if (creds.ok()) *peer = *creds;
  if (verdict.ok() || (!creds.ok() && spec_.expected_peer.any())) return true;
  // Not the VMM this session waits for: turn it away without reading what it
  // sends, and keep waiting for the right one (an intruder must not be able
  // to fail someone else's session).
  refused_peers_.fetch_add(1);
  if (env_.refused_peers) env_.refused_peers->fetch_add(1);
  spdlog::warn("session {}: refused a connection: {}", id(), verdict.ToString());
  return false;
}

Status Session::AdoptHandshake(UniqueFd connection, const PeerCredentials& peer, ReceivedHandshake handshake) {
  {
    std::lock_guard lock(mu_);
    peer_ = peer;
  }
  if (peer.pid > 0) {
    if (auto handle = ProcessHandle::Open(peer.pid); handle.ok()) client_ = std::move(*handle);
  }
  if (handshake.control_truncated || handshake.fds.size() != 1) {
    return Status::Protocol(fmt::format("handshake must carry exactly one fd (the userfaultfd), got {}{}",
                                        handshake.fds.size(), handshake.control_truncated ? " and more" : ""));
  }
  if (!IsUserfaultfd(handshake.fds[0].get())) {
    return Status::Protocol("the fd sent with the handshake is not a userfaultfd");
  }
  auto regions = ParseHandshake(handshake.payload, env_.limits);
  if (!regions.ok()) return regions.status();
  UFFD_RETURN_IF_ERROR(BeginServing(std::move(*regions), std::move(handshake.fds[0]), std::move(connection)));
  if (env_.prefetch && env_.working_sets != nullptr) {
    auto recorded = env_.working_sets->Load(spec_.cache_key, backing_->identity());
    if (recorded && !recorded->offsets.empty()) {
      spdlog::info("session {}: prefetching a recorded working set of {} pages", id(), recorded->offsets.size());
      engine_->SetPrefetchPlan(std::move(recorded->offsets), recorded->page_size);
    } else {
      engine_->StartRecording(guest_bytes_.load() / 4096);
      record_deadline_ = std::chrono::steady_clock::now() + env_.record_window;
    }
  }
  // Before the first fault is served: from here on a crash of this process
  // must leave a successor everything it needs.
  phase_ = SessionPhase::kServing;
  Status kept = KeepRecord({SessionFdRole::kUffd, SessionFdRole::kConnection, SessionFdRole::kClient});
  if (!kept.ok()) spdlog::error("session {}: a crash of the pager would lose it: {}", id(), kept.ToString());
  if (env_.recovery) env_.recovery->ReleaseFd(RecordKey(), SessionFdRole::kListener);
  SetState(SessionState::kServing);
  // The socket has done its job; remove it so it is never mistaken for live.
  (void)RemoveSocketFile(socket_path_);
  spdlog::info("session {}: serving pid {} ({} regions, {} bytes)", id(), peer.pid, region_count_,
               guest_bytes_.load());
  return Status::Ok();
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
  if (env_.metrics) uffd_.set_fill_observer(&env_.metrics->latencies());
  connection_ = std::move(connection);
  guest_bytes_.store(layout->total_bytes());
  {
    std::lock_guard lock(mu_);
    region_count_ = layout->regions().size();
  }
  auto cache_namespace = env_.cache->InternNamespace(spec_.cache_key + "\n" + backing_->identity().ToString());
  engine_ = std::make_unique<FaultEngine>(&uffd_, std::move(*layout), backing_, env_.cache, cache_namespace,
                                          CounterSink(&counters_, env_.global_counters, cache_key_counters_.get(),
                                                      env_.metrics ? &env_.metrics->latencies() : nullptr),
                                          env_.engine_options);
  return Status::Ok();
}

SessionRecord Session::RecordKey() const {
  SessionRecord record;
  record.spec = spec_;
  record.socket_path = socket_path_;
  record.incarnation = incarnation_;
  return record;
}

SessionRecord Session::MakeRecord() const {
  SessionRecord record = RecordKey();
  record.phase = phase_;
  if (backing_) record.backing_identity = backing_->identity().ToString();
  if (engine_) {
    record.regions = engine_->layout().regions();
    for (const auto& [start, end] : engine_->removed().ranges()) record.removed.emplace_back(start, end);
  }
  std::lock_guard lock(mu_);
  record.client_pid = peer_.pid;
  return record;
}

Status Session::KeepRecord(std::initializer_list<SessionFdRole> roles) {
  if (!env_.recovery) return Status::Ok();
  SessionRecord record = MakeRecord();
  UFFD_RETURN_IF_ERROR(env_.recovery->Save(record));
  for (SessionFdRole role : roles) {
    int fd = -1;
    switch (role) {
      case SessionFdRole::kListener: fd = listener_.get(); break;
      case SessionFdRole::kUffd: fd = uffd_.fd(); break;
      case SessionFdRole::kConnection: fd = connection_.get(); break;
      case SessionFdRole::kClient: fd = client_.fd(); break;
    }
    UFFD_RETURN_IF_ERROR(env_.recovery->StoreFd(record, role, fd));
  }
  return Status::Ok();
}

void Session::ForgetRecovery() {
  if (!env_.recovery || recovery_forgotten_.exchange(true)) return;
  env_.recovery->Forget(RecordKey());
}

void Session::ServeLoop() {
  bool retry_pending = false;
  for (;;) {
    // Completion and prefetch are background work: poll without blocking
    // while they have some, so demand faults are still served first.
    bool background = completion_requested_.load() || engine_->prefetching();
    int timeout = retry_pending ? kEagainRetryMs : (background ? 0 : -1);
    if (timeout < 0 && engine_->recording()) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(record_deadline_ -
                                                                        std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<int64_t>(left.count() + 1, 0));
    }
    pollfd pfds[4] = {{uffd_.fd(), POLLIN, 0},
                      {wake_fd_.get(), POLLIN, 0},
                      {detach_fd_.get(), POLLIN, 0},
                      {client_.fd(), POLLIN, 0}};
    int rc = ::poll(pfds, client_.valid() ? 4 : 3, timeout);
    if (rc < 0 && errno != EINTR) {
      Fail(Status::FromErrno(errno, "poll userfaultfd"));
      return;
    }
    if (stop_.load() || detach_requested_.load()) return;
    if (pfds[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_.get(), &v, sizeof(v));
    }
    ServeReport report = engine_->ServeEvents();
    if (engine_->remove_generation() != saved_remove_generation_) {
      // The VMM discarded memory: a successor must serve those ranges as
      // zeros too, so the record follows each batch of removes.
      saved_remove_generation_ = engine_->remove_generation();
      Status kept = KeepRecord({});
      if (!kept.ok()) spdlog::error("session {}: {}", id(), kept.ToString());
    }
    bool completed = false;
    if (!report.vm_gone && completion_requested_.load() && !report.retry_pending) completed = StepCompletion(&report);
    if (!completed && !report.vm_gone && !report.retry_pending && engine_->prefetching()) {
      engine_->PrefetchStep(kPrefetchStepPages, &report);
    }
    if (engine_->recording() && std::chrono::steady_clock::now() >= record_deadline_) FinishRecording();
    present_pages_.store(engine_->present_pages());
    if (report.failure) Fail(*report.failure);
    if (report.vm_gone) {
      End("the VM's address space is gone");
      return;
    }
    if (completed) return;
    if (client_.valid() && (pfds[3].revents & POLLIN)) {
      // The VMM exited: there is no one left to serve.
      End("the VMM process (pid " + std::to_string(client_.pid()) + ") exited");
      return;
    }
    retry_pending = report.retry_pending;
  }
}

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
  ForgetRecovery();  // nothing registered is left to recover
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
    std::lock_guard lock(mu_);
    if (!completion_) return;
    promise = std::move(completion_);
    completion_.reset();
    if (state_ == SessionState::kCompleting) state_ = SessionState::kServing;
  }
  completion_requested_.store(false);
  promise->set_value(std::move(result));
}

Status Session::Complete() {
  std::future<Status> done;
  {
    std::lock_guard lock(mu_);
    if (state_ == SessionState::kCompleting || completion_) {
      return Status::Conflict("session " + id() + " is already completing");
    }
    if (state_ != SessionState::kServing) {
      return Status::Conflict(fmt::format("session {} is {}, not serving", id(), SessionStateName(state_)));
    }
    completion_.emplace();
    done = completion_->get_future();
    state_ = SessionState::kCompleting;
  }
  completion_requested_.store(true);
  Wake();
  return done.get();
}

Result<RecoveredSession> Session::Detach() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return Status::Conflict("session " + id() + " is closed");
    if (!HoldsVmLocked()) return Status::Conflict(fmt::format("session {} is {}: nothing to hand over", id(), SessionStateName(state_)));
    closed_ = true;  // Close() does nothing from here on
  }
  detach_requested_.store(true);
  uint64_t one = 1;
  (void)!::write(detach_fd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  FinishCompletion(Status::Unavailable("session " + id() + " was handed over to another pager"));
  if (state() == SessionState::kClosed || state() == SessionState::kCompleted || (!uffd_.valid() && !listener_)) {
    // It ended on its own while it was being stopped.
    Release("ended");
    return Status::Conflict("session " + id() + " ended while it was being handed over");
  }
  RecoveredSession out;
  out.record = MakeRecord();
  out.fds.listener = std::move(listener_);
  out.fds.uffd = std::move(uffd_.owned_fd());
  out.fds.connection = std::move(connection_);
  out.fds.client = client_.TakeFd();
  engine_.reset();
  uffd_ = Userfaultfd();
  SetState(SessionState::kClosed, "handed over to another pager");
  spdlog::info("session {}: detached for hand-over ({})", id(),
               out.record.phase == SessionPhase::kServing ? "serving" : "waiting for its VMM");
  return out;
}

nlohmann::json Session::Describe() const {
  std::lock_guard lock(mu_);
  nlohmann::json j = {
      {"session_id", spec_.id},
      {"instance_id", spec_.instance_id},
      {"state", SessionStateName(state_)},
      {"backing_memory_path", spec_.backing_path},
      {"cache_key", spec_.cache_key},
      {"uffd_socket_path", socket_path_},
      {"kill_client_on_failure", spec_.kill_client_on_failure},
      {"refused_peers", refused_peers_.load()},
      {"client_pid", peer_.pid},
      {"regions", region_count_},
      {"guest_bytes", guest_bytes_.load()},
      {"present_pages", present_pages_.load()},
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
