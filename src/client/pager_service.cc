#include "uffdpager/pager_service.h"

#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <filesystem>

#include "client/bounded_command.h"

namespace uffdpager {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// How long one probe of a pager may take. A pager that accepts but does not
// answer in this long is treated as not answering; a live one answers in
// microseconds.
constexpr milliseconds kProbeTimeout{2000};
constexpr milliseconds kPollInterval{50};

// The pager's own rule for --version-key (the same as for session ids): the
// key names a directory, and the systemd instance. Every such key is a valid
// unit instance name as it is, so it is NOT systemd-escaped: escaping would
// turn '-' into "\x2d", and %i, which the unit passes as --version-key,
// would then no longer be the key.
bool IsValidVersionKey(const std::string& key) {
  if (key.empty() || key.size() > 128 || key[0] == '.') return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

milliseconds Left(Clock::time_point deadline) {
  // Rounded up: a deadline 0.4 ms away has not passed.
  return std::max(milliseconds(0), std::chrono::ceil<milliseconds>(deadline - Clock::now()));
}

void SleepFor(milliseconds d) {
  struct timespec ts {
    static_cast<time_t>(d.count() / 1000), static_cast<long>(d.count() % 1000) * 1000000L
  };
  nanosleep(&ts, nullptr);
}

}  // namespace

PagerService::PagerService(PagerServiceOptions options)
    : options_(std::move(options)), client_(PagerClient::ControlSocketPath(options_.data_dir, options_.version_key)) {}

Result<PagerService> PagerService::Create(PagerServiceOptions options) {
  if (!IsValidVersionKey(options.version_key)) {
    return Status::InvalidArgument("version key \"" + options.version_key +
                                   "\" must be 1-128 characters of [A-Za-z0-9._-] not starting with '.'");
  }
  if (options.data_dir.empty()) return Status::InvalidArgument("no data directory");
  if (options.start_command.empty() || options.start_command[0].empty()) {
    return Status::InvalidArgument("the pager's start command is empty");
  }
  if (options.ready_timeout <= milliseconds(0) || options.ready_timeout > kMaxReadyTimeout) {
    return Status::InvalidArgument("ready timeout " + std::to_string(options.ready_timeout.count()) +
                                   " ms must be positive and at most " + std::to_string(kMaxReadyTimeout.count()) +
                                   " ms");
  }
  return PagerService(std::move(options));
}

std::vector<std::string> PagerService::ResolvedStartCommand() const {
  std::vector<std::string> argv;
  for (const auto& arg : options_.start_command) {
    argv.push_back(ReplaceAll(ReplaceAll(arg, "{version}", options_.version_key), "{data_dir}", options_.data_dir));
  }
  return argv;
}

Status PagerService::CheckHealthy(milliseconds timeout, bool* answered) const {
  auto health = client_.Health(timeout);
  *answered = health.ok();
  if (!health.ok()) return health.status();
  if (health->version != options_.version_key) {
    return Status::Conflict(control_socket_path() + " answers as version \"" + health->version + "\", not \"" +
                            options_.version_key + "\"");
  }
  if (health->draining) {
    return Status::Unavailable("uffd-pager " + options_.version_key + " on " + control_socket_path() +
                               " is draining (" + std::to_string(health->active_sessions) +
                               " active sessions): it takes no new sessions and exits once the last closes");
  }
  return Status::Ok();
}

Result<PagerClient> PagerService::EnsureRunning() const {
  // The common case: it runs. Only a pager that does not answer is started;
  // one that answers as draining or as another version is reported, since
  // starting it again would change nothing.
  const auto deadline = Clock::now() + options_.ready_timeout;
  bool answered = false;
  Status probe = CheckHealthy(std::min(kProbeTimeout, options_.ready_timeout), &answered);
  if (probe.ok()) return client_;
  if (answered) return probe;

  // Two callers may get here at once, and both run the start command. With
  // systemd that is harmless: `systemctl start` of a unit that is starting
  // joins the job under way, of an active one does nothing, and returns
  // once the unit is ready (Type=notify: READY=1 once control.sock answers).
  // A pager started by other means refuses to start next to a live one of
  // its version. Either way each caller then waits for the one pager.
  const std::vector<std::string> command = ResolvedStartCommand();
  const std::string shown = "`" + DescribeCommand(command) + "`";
  auto ran = RunBoundedCommand(command, deadline);
  if (!ran.ok()) return ran.status().WithContext("start uffd-pager " + options_.version_key);
  if (!WIFEXITED(ran->wait_status) || WEXITSTATUS(ran->wait_status) != 0) {
    return Status::Unavailable("start uffd-pager " + options_.version_key + ": " + shown + " " +
                               DescribeWaitStatus(ran->wait_status) + "; its output: " + OutputForMessage(ran->output));
  }

  Status last = probe;
  for (milliseconds left = Left(deadline); left.count() > 0; left = Left(deadline)) {
    last = CheckHealthy(std::clamp(left, milliseconds(1), kProbeTimeout), &answered);
    if (last.ok()) return client_;
    if (answered) return last;  // draining, or another version: starting did what it could
    SleepFor(std::min(kPollInterval, Left(deadline)));
  }
  return Status::Timeout("uffd-pager " + options_.version_key + " did not answer GET /health on " +
                         control_socket_path() + " within " + std::to_string(options_.ready_timeout.count()) +
                         " ms, although " + shown + " succeeded (last: " + last.ToString() + ")");
}

Result<std::vector<RunningPager>> PagerService::RunningPagers(std::string* failures) const {
  const fs::path uffd_dir = fs::path(options_.data_dir) / "uffd";
  const fs::path own_dir_path = uffd_dir / options_.version_key;
  std::vector<RunningPager> running;
  std::error_code ec;
  fs::directory_iterator it(uffd_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return running;  // no pager ever ran here
    return Status::FromErrno(ec.value(), "list " + uffd_dir.string());
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Status::FromErrno(ec.value(), "list " + uffd_dir.string());
    const std::string key = it->path().filename().string();
    std::error_code entry_ec;
    if (!IsValidVersionKey(key) || !it->is_directory(entry_ec)) continue;
    // Our own pager, under its name or another (a symlinked directory).
    const bool own_dir = key == options_.version_key || fs::equivalent(it->path(), own_dir_path, entry_ec);
    PagerClient client(PagerClient::ControlSocketPath(options_.data_dir, key));
    auto health = client.Health(kProbeTimeout);
    if (!health.ok()) {
      // No socket, or one nobody listens on (its pager died): nothing runs
      // there. Another version's pager that accepts but does not answer is
      // worth telling.
      if (health.status().code() != ErrorCode::kUnavailable && !own_dir) {
        *failures += (failures->empty() ? "" : "; ") + key + ": " + health.status().ToString();
      }
      continue;
    }
    running.push_back({key, std::move(client), own_dir || health->version == options_.version_key});
  }
  std::sort(running.begin(), running.end(),
            [](const RunningPager& a, const RunningPager& b) { return a.version_key < b.version_key; });
  return running;
}

Result<std::vector<std::string>> PagerService::DrainOtherVersions() const {
  std::string failures;
  auto running = RunningPagers(&failures);
  if (!running.ok()) return running.status();
  std::vector<std::string> drained;
  for (const RunningPager& pager : *running) {
    if (pager.own) continue;
    Status st = pager.client.Drain();
    if (!st.ok()) {
      failures += (failures.empty() ? "" : "; ") + pager.version_key + ": " + st.ToString();
      continue;
    }
    drained.push_back(pager.version_key);
  }
  if (!failures.empty()) {
    std::string done;
    for (const auto& key : drained) done += (done.empty() ? "" : ", ") + key;
    return Status::Unavailable("drain other versions: " + failures +
                               (done.empty() ? "" : " (drained nonetheless: " + done + ")"));
  }
  return drained;
}

}  // namespace uffdpager
