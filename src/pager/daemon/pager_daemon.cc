#include "pager/daemon/pager_daemon.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>

#include "common/version.h"
#include "pager/access/loopback_listener.h"

namespace uffdpager {

namespace fs = std::filesystem;

namespace {

// A pager holds several fds per session (listener, uffd, connection, pidfd,
// eventfds, backing file) and per control connection: the soft limit a shell
// or a unit starts it with (often 1024) is no bound it should run into while
// the hard limit allows more. A failure is logged, not fatal.
void RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("{}", Status::FromErrno(errno, "getrlimit(RLIMIT_NOFILE)").ToString());
    return;
  }
  if (limit.rlim_cur == limit.rlim_max) {
    spdlog::info("limit of open files: {}", limit.rlim_cur);
    return;
  }
  const rlim_t was = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn(
        "{}",
        Status::FromErrno(errno, "raise the limit of open files to " + std::to_string(limit.rlim_max)).ToString());
    return;
  }
  spdlog::info("limit of open files raised from {} to {} (the hard limit)", was, limit.rlim_cur);
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Status::FromErrno(ec.value(), "create directory " + path);
  return Status::Ok();
}

Result<SocketOwnership> ResolveOwnership(const PagerOptions& options) {
  SocketOwnership ownership;
  if (!options.socket_owner.empty()) {
    auto uid = ResolveUser(options.socket_owner);
    if (!uid.ok()) return uid.status().WithContext("--socket-owner");
    ownership.uid = *uid;
  }
  if (!options.socket_group.empty()) {
    auto gid = ResolveGroup(options.socket_group);
    if (!gid.ok()) return gid.status().WithContext("--socket-group");
    ownership.gid = *gid;
  }
  return ownership;
}

}  // namespace

PagerDaemon::PagerDaemon(PagerOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<PagerDaemon>> PagerDaemon::Start(PagerOptions options) {
  if (options.version_key.empty()) options.version_key = kVersion;
  if (!IsValidSessionId(options.version_key)) {
    return Status::InvalidArgument("--version-key \"" + options.version_key +
                                   "\" must be 1-128 characters of [A-Za-z0-9._-] not starting with '.'");
  }
  RaiseOpenFileLimit();
  std::unique_ptr<PagerDaemon> daemon(new PagerDaemon(std::move(options)));
  auto ownership = ResolveOwnership(daemon->options_);
  if (!ownership.ok()) return ownership.status();
  auto policy = BackingPathPolicy::Create(daemon->options_.allowed_backing_roots);
  if (!policy.ok()) return policy.status();
  daemon->backing_policy_ = std::move(*policy);
  UFFD_RETURN_IF_ERROR(daemon->PrepareDirectory());
  UFFD_RETURN_IF_ERROR(daemon->PrepareSessions(*ownership));
  UFFD_RETURN_IF_ERROR(daemon->StartServers(*ownership));
  if (daemon->backing_policy_.restricted()) {
    spdlog::info("backing files allowed only beneath: {}", daemon->backing_policy_.DescribeRoots());
  }
  // Only now can a client use us: systemd starts units ordered after this
  // one (and the client library's start of this unit returns) at READY=1.
  daemon->systemd_.Ready("serving " + daemon->server_->socket_path());
  spdlog::info("uffd-pager {} serving {} (version key {}, cache {} bytes)", kVersion, daemon->server_->socket_path(),
               daemon->options_.version_key, daemon->options_.cache_max_bytes);
  return daemon;
}

Status PagerDaemon::PrepareDirectory() {
  root_dir_ = options_.data_dir + "/uffd/" + options_.version_key;
  sessions_dir_ = root_dir_ + "/sessions";
  UFFD_RETURN_IF_ERROR(MakeDirs(sessions_dir_));
  UFFD_RETURN_IF_ERROR(MakeDirs(root_dir_ + "/live"));
  // A VMM of another user (per-session socket_uid, --socket-owner) must be
  // able to reach its socket by name; listing stays private.
  UFFD_RETURN_IF_ERROR(MakeSearchable({options_.data_dir + "/uffd", root_dir_, sessions_dir_}));
  // Before anything of the directory is touched: a live pager owns it.
  auto pid_file = PidFile::Claim(root_dir_ + "/pager.pid", root_dir_);
  if (!pid_file.ok()) return pid_file.status();
  pid_file_ = std::move(*pid_file);
  return Status::Ok();
}

void PagerDaemon::StartObjectTier() {
  const char* endpoint = std::getenv("AWS_ENDPOINT_URL");
  if (endpoint == nullptr || *endpoint == '\0') {
    object_tier_absent_ = "the pager has no object store (AWS_ENDPOINT_URL is not set in its environment)";
    return;
  }
  auto config = LoadObjectStoreConfig();
  if (config.ok()) config->retry.max_attempts = options_.object_store_retries + 1;
  Result<std::unique_ptr<ObjectTier>> tier =
      config.ok() ? ObjectTier::Start(root_dir_ + "/object-cache", *config, options_.object_cache_max_bytes,
                                      options_.object_readahead_chunks)
                  : Result<std::unique_ptr<ObjectTier>>(config.status());
  if (!tier.ok()) {
    object_tier_absent_ = "the pager's object store is not usable: " + tier.status().ToString();
    spdlog::warn("{}", object_tier_absent_);
    return;
  }
  object_tier_ = std::move(*tier);
  spdlog::info("snapshots in object storage: {}", object_tier_->config().Describe());
}

void PagerDaemon::RemoveDeadSockets(const std::vector<DetachedSession>& recovered) {
  std::set<std::string> live;
  for (const auto& r : recovered) live.insert(r.checkpoint.socket_path);
  // Sockets left by a pager that died are dead ends for a VMM: remove them.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sessions_dir_, ec)) {
    if (entry.is_socket(ec) && live.count(entry.path().string()) == 0) fs::remove(entry.path(), ec);
  }
}

std::vector<std::string> PagerDaemon::VersionsToTakeOver() const {
  std::vector<std::string> versions = options_.take_over_versions;
  if (options_.take_over_all) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(options_.data_dir + "/uffd", ec)) {
      if (entry.is_directory(ec)) versions.push_back(entry.path().filename().string());
    }
  }
  return versions;
}

Status PagerDaemon::PrepareSessions(const SocketOwnership& ownership) {
  // What a predecessor that crashed left: records, and the fds systemd kept.
  recovery_ = std::make_unique<RecoveryStore>(root_dir_ + "/live");
  std::vector<DetachedSession> recovered = recovery_->TakeAll();
  RemoveDeadSockets(recovered);

  cache_ = std::make_unique<PageCache>(options_.cache_max_bytes, 16, options_.zero_pages);
  working_sets_ = std::make_unique<WorkingSetStore>(root_dir_ + "/working-sets");
  StartObjectTier();
  ObjectTier* publish_through = options_.published_working_sets ? object_tier_.get() : nullptr;
  working_set_writer_ =
      std::make_unique<WorkingSetWriter>(working_sets_.get(), options_.working_set_disk_bytes, publish_through);
  if (publish_through != nullptr) {
    published_working_sets_ =
        std::make_unique<PublishedWorkingSetFetcher>(publish_through, working_sets_.get(), working_set_writer_.get());
  }
  SessionEnvironment env;
  env.cache = cache_.get();
  env.metrics = &metrics_;
  env.working_sets = working_sets_.get();
  env.working_set_writer = working_set_writer_.get();
  env.prefetch = options_.prefetch;
  env.record_window = std::chrono::milliseconds(options_.prefetch_record_ms);
  env.refine_interval = options_.refine_working_sets
                            ? std::optional(std::chrono::seconds(options_.working_set_refine_seconds))
                            : std::nullopt;
  env.keeper = recovery_.get();
  env.backing_policy = &backing_policy_;
  env.object_tier = object_tier_.get();
  env.published_working_sets = published_working_sets_.get();
  env.object_tier_absent = object_tier_absent_;
  env.handshake_timeout = std::chrono::milliseconds(options_.handshake_timeout_ms);
  env.engine_options.fault_around_max_pages = options_.fault_around_max_pages;
  env.socket_ownership = ownership;
  registry_ = std::make_unique<SessionRegistry>(sessions_dir_, env);
  // Ids longer than this are refused at create; say so before a client
  // finds out. 32 characters hold a UUID without its dashes.
  if (size_t room = registry_->MaxSessionIdLength(); room < 32) {
    spdlog::warn(
        "the data directory leaves room for session ids of only {} characters: a session's socket path {} must fit "
        "the {} bytes of a Unix socket address (for the pager and for the VMM that connects); a shorter --data-dir "
        "or --version-key leaves more",
        room, registry_->SocketPathFor("<id>"), kMaxSocketPathBytes);
  }
  continuity_ = std::make_unique<SessionContinuity>(recovery_.get(), registry_.get());
  continuity_->RecoverAfterRestart(std::move(recovered));
  continuity_->TakeOver(options_.data_dir, VersionsToTakeOver(), options_.version_key);
  auto handover = HandoverServer::Start(root_dir_ + "/handover.sock", [this](UniqueFd conn, const std::string& taker) {
    GiveSessionsTo(std::move(conn), taker);
  });
  if (!handover.ok()) return handover.status().WithContext("hand-over socket");
  handover_ = std::move(*handover);
  return Status::Ok();
}

Status PagerDaemon::StartServers(const SocketOwnership& ownership) {
  ControlApiContext ctx;
  ctx.registry = registry_.get();
  ctx.cache = cache_.get();
  ctx.metrics = &metrics_;
  ctx.working_set_writer = working_set_writer_.get();
  ctx.object_tier = object_tier_.get();
  ctx.draining = &draining_;
  ctx.on_drain = [this] { Notify(); };
  ctx.version_key = options_.version_key;
  ctx.started_at = std::chrono::steady_clock::now();

  HttpServerOptions http;
  http.max_body_bytes = options_.max_request_bytes;
  http.idle_timeout_seconds = options_.http_idle_timeout_seconds;
  // Bound before the API exists so /health can tell where it really is.
  std::optional<LoopbackListener> metrics_listener;
  if (!options_.metrics_addr.empty()) {
    auto listener = ListenOnLoopback(options_.metrics_addr);
    if (!listener.ok()) return listener.status();
    ctx.metrics_addr = listener->address;
    metrics_listener = std::move(*listener);
  }
  api_ = std::make_unique<ControlApi>(std::move(ctx));
  if (metrics_listener) {
    std::string name = "tcp:" + metrics_listener->address;
    auto metrics_server =
        HttpServer::StartOnListener(std::move(metrics_listener->fd), name, http,
                                    [this](const HttpRequest& r) { return api_->HandleMetricsOnly(r); });
    if (!metrics_server.ok()) return metrics_server.status();
    metrics_server_ = std::move(*metrics_server);
    spdlog::info("serving /metrics on {}", metrics_listener->address);
  }
  // The owner and group are set before the first connection is accepted:
  // whoever sees the API answer may rely on them.
  http.prepare_socket = [ownership](const std::string& path) { return ApplySocketOwnership(path, ownership); };
  auto server =
      HttpServer::Start(root_dir_ + "/control.sock", http, [this](const HttpRequest& r) { return api_->Handle(r); });
  if (!server.ok()) return server.status();
  server_ = std::move(*server);
  return Status::Ok();
}

PagerDaemon::~PagerDaemon() {
  // First: a hand-over in progress uses the registry.
  handover_.reset();
  // Refuse new sessions, then close the live ones (which also answers any
  // complete still waiting in an HTTP thread), and only then stop the HTTP
  // server, which waits for its handler threads.
  draining_.store(true);
  systemd_.Stopping();
  if (registry_) registry_->CloseAll("pager exiting");
  metrics_server_.reset();
  server_.reset();
  if (registry_) registry_->CloseAll("pager exiting");
  pid_file_.reset();  // last: until here this process still serves the directory
}

void PagerDaemon::GiveSessionsTo(UniqueFd conn, const std::string& taker_version) {
  // New sessions belong to the taker now; and until the hand-over is over,
  // an empty registry must not let WaitUntilDone exit.
  handing_over_.store(true);
  draining_.store(true);
  continuity_->GiveTo(conn.get(), taker_version);
  handing_over_.store(false);
  Notify();
}

void PagerDaemon::Notify() {
  MutexLock lock(&mu_);
  changed_.SignalAll();
}

void PagerDaemon::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
}

void PagerDaemon::WaitUntilDone() {
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (shutdown_) return;
    }
    // Sessions still waiting for their VMM hold none: they stop waiting then
    // (their sockets go at once); one whose VMM had connected already takes
    // it, and holds the pager until that VM is done.
    if (draining_.load() && !handing_over_.load() && registry_->CountHoldingVm() == 0 &&
        registry_->StopWaiting() == 0 && registry_->CountHoldingVm() == 0) {
      spdlog::info("drained: no session holds a VM; exiting");
      return;
    }
    ReportToSystemd();
    MutexLock lock(&mu_);
    // Sessions also end on their own (a VMM exits), which nobody announces;
    // look again now and then.
    if (!shutdown_) changed_.WaitFor(std::chrono::milliseconds(200));
  }
}

void PagerDaemon::ReportToSystemd() {
  if (!systemd_.enabled()) return;
  // Counting takes the registry's lock: a pager whose registry deadlocked
  // stops pinging, and systemd restarts it.
  size_t active = registry_->CountActive();
  if (active != announced_sessions_) {
    announced_sessions_ = active;
    systemd_.Status(std::to_string(active) + " sessions" + (draining_.load() ? ", draining" : ""));
  }
  if (systemd_.WatchdogDue()) systemd_.PingWatchdog();
}

}  // namespace uffdpager
