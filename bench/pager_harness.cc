#include "pager_harness.h"

#include "common/object_url.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "readahead.h"
#include "workload.h"

namespace uffdpager::bench {

namespace {
constexpr char kCacheKey[] = "bench-snapshot";

// Pagers alive right now, for Deadline to kill before it exits.
std::mutex live_pagers_mu;
std::vector<pid_t> live_pagers;
}  // namespace

BenchPager::BenchPager(std::unique_ptr<PagerProcess> process, std::string data_dir)
    : process_(std::move(process)), data_dir_(std::move(data_dir)) {
  std::lock_guard lock(live_pagers_mu);
  live_pagers.push_back(process_->pid());
}

BenchPager::~BenchPager() {
  {
    std::lock_guard lock(live_pagers_mu);
    std::erase(live_pagers, process_->pid());
  }
  process_.reset();
}

std::vector<PagerFlavor> RestoreFlavors(const std::vector<std::string>& only) {
  std::vector<PagerFlavor> all = {
      OnDemandFlavor(),
      // What a user gets without flags: record and replay, compact working
      // sets, fault-around, asynchronous reads.
      {"pager_default", {}, ""},
      // Replay without the compact file: scattered reads of the memory file.
      {"pager_scattered_replay", {"--working-set-disk-bytes", "0"}, "--working-set-disk-bytes"},
      // Fault-around alone: no record, no replay.
      {"pager_fault_around", {"--no-prefetch", "--fault-around-max-pages", "64"}, "--fault-around-max-pages"},
      // On demand with zero-page detection off: what detection is worth.
      {"pager_zeros_copied",
       {"--no-prefetch", "--fault-around-max-pages", "0", "--zero-pages", "copy"},
       "--zero-pages"},
  };
  if (only.empty()) return all;
  std::erase_if(all, [&only](const PagerFlavor& f) {
    return f.name != OnDemandFlavor().name && std::find(only.begin(), only.end(), f.name) == only.end();
  });
  return all;
}

Result<PagerFlavor> DefaultFlavor() {
  for (PagerFlavor& flavor : RestoreFlavors({"pager_default"})) {
    if (flavor.name == "pager_default") return flavor;
  }
  return Status::NotFound("no pager_default flavor in this benchmark");
}

// Every page on demand: no record, no replay (the reference).
PagerFlavor OnDemandFlavor() {
  return {"pager_on_demand", {"--no-prefetch", "--fault-around-max-pages", "0"}, "--no-prefetch"};
}

Result<std::string> PagerHelpText(const std::string& binary) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    ::dup2(write_end.get(), 1);
    ::execl(binary.c_str(), binary.c_str(), "--help", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  write_end.reset();
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof(buf))) > 0) text.append(buf, size_t(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 127) return Status::NotFound("cannot run " + binary);
  return text;
}

const uint8_t* RestoredGuest::PageAddress(uint64_t page) const { return memory.AtFileOffset(page * kPageSize); }

Result<std::unique_ptr<BenchPager>> BenchPager::Launch(const PagerSetup& setup, const PagerFlavor& flavor,
                                                       const std::string& tag, PagerDataDir data) {
  PagerLaunchOptions options;
  options.binary = setup.binary;
  options.data_dir = setup.data_root + "/" + tag;
  std::error_code ec;
  if (data == PagerDataDir::kFresh) std::filesystem::remove_all(options.data_dir, ec);
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + options.data_dir);
  options.version_key = "bench";
  options.cache_max_bytes = setup.cache_max_bytes;
  options.log_path = options.data_dir + "/pager.log";
  options.extra_args = flavor.extra_args;
  options.extra_args.insert(options.extra_args.end(), {"--log-level", "warn"});
  auto process = PagerProcess::Launch(options);
  if (!process.ok()) return process.status();
  return std::unique_ptr<BenchPager>(new BenchPager(std::move(*process), options.data_dir));
}

Result<std::string> BenchPager::CreateSession(const std::string& session_id, const std::string& snapshot,
                                              const std::vector<std::string>& layers) const {
  CreateSessionRequest request;
  request.session_id = session_id;
  request.instance_id = session_id;
  if (!layers.empty()) {
    request.backing_layers = layers;
  } else if (IsObjectUrl(snapshot)) {
    request.backing_memory_url = snapshot;
  } else {
    request.backing_memory_path = snapshot;
  }
  request.cache_key = kCacheKey;
  auto created = client().CreateSession(request);
  if (!created.ok()) return created.status();
  return created->uffd_socket_path;
}

Result<std::unique_ptr<RestoredGuest>> BenchPager::HandOver(const std::string& session_id,
                                                            const std::string& socket_path, uint64_t bytes) {
  auto memory = GuestMemory::Allocate({bytes / 4 * 3, bytes / 4}, kPageSize);
  if (!memory.ok()) return memory.status();
  auto handshake = PerformVmmHandshake(*memory, socket_path, VmmHandshakeOptions{});
  if (!handshake.ok()) return handshake.status();
  auto guest = std::make_unique<RestoredGuest>();
  guest->session_id = session_id;
  guest->memory = std::move(*memory);
  guest->handshake = std::move(*handshake);
  return guest;
}

Status BenchPager::WaitForState(const std::string& session_id, const std::string& state,
                                std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last = "unknown";
  while (std::chrono::steady_clock::now() < deadline) {
    auto session = client().GetSession(session_id);
    if (session.ok()) {
      last = session->value("state", "unknown");
      if (last == state) return Status::Ok();
      if (last == "failed") return Status::Internal("session " + session_id + " failed: " + session->dump());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return Status::Timeout("session " + session_id + " still " + last + ", not " + state);
}

nlohmann::json BenchPager::SessionCounters(const std::string& session_id) const {
  auto session = client().GetSession(session_id);
  if (!session.ok() || !session->contains("counters")) return nlohmann::json::object();
  return (*session)["counters"];
}

Deadline::Deadline(std::string what, std::chrono::seconds limit) {
  thread_ = std::thread([this, what = std::move(what), limit] {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
    std::fprintf(stderr, "restore_bench: %s did not finish within %lld s; giving up\n", what.c_str(),
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    {
      std::lock_guard pagers(live_pagers_mu);
      for (pid_t pid : live_pagers) ::kill(pid, SIGKILL);
    }
    RestoreReadaheadNow();
    ::_exit(3);
  });
}

Deadline::~Deadline() {
  {
    std::lock_guard lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

}  // namespace uffdpager::bench
