#include "pager/pager_daemon.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "pager/pager_version.h"

namespace uffdpager {

namespace fs = std::filesystem;

namespace {

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Status::FromErrno(ec.value(), "create directory " + path);
  return Status::Ok();
}

// The pid in `pid_path` if that process is still alive, else 0.
pid_t LivePidIn(const std::string& pid_path) {
  std::ifstream in(pid_path);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0 || pid == ::getpid()) return 0;
  return (::kill(pid, 0) == 0 || errno == EPERM) ? pid : 0;
}

}  // namespace

PagerDaemon::PagerDaemon(PagerOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<PagerDaemon>> PagerDaemon::Start(PagerOptions options) {
  if (options.version_key.empty()) options.version_key = kPagerVersion;
  if (!IsValidSessionId(options.version_key)) {
    return Status::InvalidArgument("--version-key \"" + options.version_key +
                                   "\" must be 1-128 characters of [A-Za-z0-9._-] not starting with '.'");
  }
  std::unique_ptr<PagerDaemon> daemon(new PagerDaemon(std::move(options)));
  UFFD_RETURN_IF_ERROR(daemon->Prepare());
  return daemon;
}

Status PagerDaemon::Prepare() {
  root_dir_ = options_.data_dir + "/uffd/" + options_.version_key;
  std::string sessions_dir = root_dir_ + "/sessions";
  UFFD_RETURN_IF_ERROR(MakeDirs(sessions_dir));
  pid_path_ = root_dir_ + "/pager.pid";
  if (pid_t other = LivePidIn(pid_path_); other != 0) {
    return Status::Error(ErrorCode::kAlreadyExists, "another uffd-pager (pid " + std::to_string(other) +
                                                        ") already serves " + root_dir_);
  }
  // Sockets left by a pager that died are dead ends for a VMM: remove them.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(sessions_dir, ec)) {
    if (entry.is_socket(ec)) fs::remove(entry.path(), ec);
  }
  {
    std::string tmp = pid_path_ + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << ::getpid() << "\n";
    out.close();
    if (!out || ::rename(tmp.c_str(), pid_path_.c_str()) != 0) {
      return Status::FromErrno(errno, "write " + pid_path_);
    }
  }

  cache_ = std::make_unique<PageCache>(options_.cache_max_bytes);
  SessionEnvironment env;
  env.cache = cache_.get();
  env.global_counters = &counters_;
  env.failed_sessions = &failed_sessions_;
  env.handshake_timeout = std::chrono::milliseconds(options_.handshake_timeout_ms);
  env.engine_options.fault_around_max_pages = options_.fault_around_max_pages;
  working_sets_ = std::make_unique<WorkingSetStore>(root_dir_ + "/records");
  env.working_sets = working_sets_.get();
  env.prefetch = options_.prefetch;
  env.record_window = std::chrono::milliseconds(options_.prefetch_record_ms);
  registry_ = std::make_unique<SessionRegistry>(sessions_dir, env);

  ControlApiContext ctx;
  ctx.registry = registry_.get();
  ctx.cache = cache_.get();
  ctx.counters = &counters_;
  ctx.failed_sessions = &failed_sessions_;
  ctx.draining = &draining_;
  ctx.on_drain = [this] { Notify(); };
  ctx.version_key = options_.version_key;
  ctx.started_at = std::chrono::steady_clock::now();
  api_ = std::make_unique<ControlApi>(std::move(ctx));

  HttpServerOptions http;
  http.max_body_bytes = options_.max_request_bytes;
  http.idle_timeout_seconds = options_.http_idle_timeout_seconds;
  auto server = HttpServer::Start(root_dir_ + "/control.sock", http,
                                  [this](const HttpRequest& r) { return api_->Handle(r); });
  if (!server.ok()) return server.status();
  server_ = std::move(*server);
  spdlog::info("uffd-pager {} serving {} (version key {}, cache {} bytes)", kPagerVersion, server_->socket_path(),
               options_.version_key, options_.cache_max_bytes);
  return Status::Ok();
}

PagerDaemon::~PagerDaemon() {
  // Refuse new sessions, then close the live ones (which also answers any
  // complete still waiting in an HTTP thread), and only then stop the HTTP
  // server, which waits for its handler threads.
  draining_.store(true);
  if (registry_) registry_->CloseAll("pager exiting");
  server_.reset();
  if (registry_) registry_->CloseAll("pager exiting");
  if (!pid_path_.empty() && LivePidIn(pid_path_) == 0) ::unlink(pid_path_.c_str());
}

void PagerDaemon::Notify() {
  std::lock_guard lock(mu_);
  changed_.notify_all();
}

void PagerDaemon::Shutdown() {
  std::lock_guard lock(mu_);
  shutdown_ = true;
  changed_.notify_all();
}

void PagerDaemon::WaitUntilDone() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (shutdown_) return;
    if (draining_.load()) {
      lock.unlock();
      size_t holding = registry_->CountHoldingVm();
      lock.lock();
      if (holding == 0) {
        spdlog::info("drained: no session holds a VM; exiting");
        return;
      }
    }
    // Sessions also end on their own (a VMM exits), which nobody announces;
    // look again now and then.
    changed_.wait_for(lock, std::chrono::milliseconds(200));
  }
}

}  // namespace uffdpager
