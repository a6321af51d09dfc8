#include "pager/daemon/pid_file.h"

#include <unistd.h>

#include <charconv>
#include <climits>
#include <filesystem>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/durable_file.h"

namespace uffdpager {

namespace {

constexpr size_t kMaxPidFileBytes = 4096;
constexpr std::string_view kStartTimeKey = "start_time=";
constexpr std::string_view kPagerName = "uffd-pager";

// What a pid file names.
struct Recorded {
  pid_t pid = 0;
  std::optional<uint64_t> start_time;  // absent in the older, pid-only format
};

std::optional<Recorded> Parse(const std::string& text) {
  std::istringstream in(text);
  long long pid = 0;
  if (!(in >> pid) || pid <= 0 || pid > INT_MAX) return std::nullopt;
  Recorded r;
  r.pid = static_cast<pid_t>(pid);
  std::string word;
  while (in >> word) {
    if (!word.starts_with(kStartTimeKey)) continue;  // words a later version may add
    uint64_t ticks = 0;
    const char* begin = word.data() + kStartTimeKey.size();
    const char* end = word.data() + word.size();
    auto [at, error] = std::from_chars(begin, end, ticks);
    if (error != std::errc() || at != end || begin == end) return std::nullopt;
    r.start_time = ticks;
  }
  return r;
}

std::string Format(const ProcessIdentity& id) {
  return fmt::format("{}\n{}{}\n", id.pid, kStartTimeKey, id.start_time);
}

// For the pid-only format: whether `pid` runs uffd-pager, by the name the
// kernel keeps (comm, cut to 15 bytes) or the path it was started by.
bool RunsPager(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  auto comm = ReadWholeFile(proc + "/comm", kMaxPidFileBytes);
  if (comm.ok() && comm->starts_with(kPagerName)) return true;
  auto cmdline = ReadWholeFile(proc + "/cmdline", 64 << 10);
  if (!cmdline.ok()) return false;
  std::string argv0 = cmdline->substr(0, cmdline->find('\0'));
  return std::filesystem::path(argv0).filename().string().starts_with(kPagerName);
}

// Why the pager `recorded` names is not running; empty if it is.
std::string WhyStale(const Recorded& recorded) {
  // Nothing else can be running as this process (an earlier PagerDaemon of
  // this same process wrote it, or a container restarted with our pid).
  if (recorded.pid == ::getpid()) return fmt::format("pid {} is this process", recorded.pid);
  auto now = IdentifyProcess(recorded.pid);
  if (!now.ok()) return fmt::format("pid {} is not running", recorded.pid);
  if (recorded.start_time && *recorded.start_time != now->start_time) {
    return fmt::format("pid {} is now an unrelated process (started at tick {}, not {})", recorded.pid, now->start_time,
                       *recorded.start_time);
  }
  if (!now->IsAlive()) return fmt::format("pid {} has exited (a zombie not yet reaped)", recorded.pid);
  if (!recorded.start_time && !RunsPager(recorded.pid)) {
    return fmt::format("pid {} (a pid-only file of an older pager) is now a process other than {}", recorded.pid,
                       kPagerName);
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<PidFile>> PidFile::Claim(const std::string& path, const std::string& served_dir) {
  auto self = IdentifyProcess(::getpid());
  if (!self.ok()) return self.status().WithContext("identify this process for " + path);
  auto text = ReadWholeFile(path, kMaxPidFileBytes);
  if (text.ok()) {
    std::optional<Recorded> recorded = Parse(*text);
    std::string stale = recorded ? WhyStale(*recorded) : "it names no pid";
    if (stale.empty()) {
      return Status::Error(ErrorCode::kAlreadyExists, "another uffd-pager (pid " + std::to_string(recorded->pid) +
                                                          ") already serves " + served_dir);
    }
    spdlog::info("replacing the stale {}: {}", path, stale);
  } else if (text.status().code() != ErrorCode::kNotFound) {
    spdlog::info("replacing {}, which cannot be read: {}", path, text.status().ToString());
  }
  // Only the pager process has to outlive its pid file: no fsync on start-up.
  UFFD_RETURN_IF_ERROR(WriteFileAtomically(path, Format(*self), Durability::kProcessCrash));
  return std::unique_ptr<PidFile>(new PidFile(path, *self));
}

PidFile::~PidFile() {
  auto text = ReadWholeFile(path_, kMaxPidFileBytes);
  if (!text.ok()) return;
  std::optional<Recorded> recorded = Parse(*text);
  if (recorded && recorded->pid == self_.pid && recorded->start_time == self_.start_time) ::unlink(path_.c_str());
}

}  // namespace uffdpager
