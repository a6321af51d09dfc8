#include "common/process_identity.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "common/durable_file.h"
#include "common/process_handle.h"
#include "common/wait_for.h"

namespace uffdpager {

namespace {

struct ProcStat {
  char state = '?';
  uint64_t start_time = 0;
};

Result<ProcStat> ReadProcStat(pid_t pid) {
  auto text = ReadWholeFile("/proc/" + std::to_string(pid) + "/stat");
  if (!text.ok()) return text.status();
  // "pid (comm) S ppid ..." — comm may hold spaces and parentheses, so parse
  // from the last ')'.
  size_t close = text->rfind(')');
  if (close == std::string::npos || close + 2 >= text->size()) {
    return Status::Protocol("unreadable /proc/" + std::to_string(pid) + "/stat");
  }
  ProcStat out;
  out.state = (*text)[close + 2];
  // Fields after comm: 3 state, 4 ppid, ... 22 starttime.
  size_t at = close + 2;
  for (int field = 3; field < 22; ++field) {
    at = text->find(' ', at);
    if (at == std::string::npos) return Status::Protocol("short /proc/" + std::to_string(pid) + "/stat");
    ++at;
  }
  out.start_time = std::strtoull(text->c_str() + at, nullptr, 10);
  return out;
}

}  // namespace

Result<ProcessIdentity> IdentifyProcess(pid_t pid) {
  auto st = ReadProcStat(pid);
  if (!st.ok()) return st.status();
  return ProcessIdentity{pid, st->start_time};
}

bool ProcessIdentity::IsAlive() const {
  if (pid <= 0) return false;
  auto st = ReadProcStat(pid);
  return st.ok() && st->start_time == start_time && st->state != 'Z' && st->state != 'X';
}

Result<ProcessHandle> ProcessIdentity::Open() const {
  std::string who = "process " + std::to_string(pid) + " (started at tick " + std::to_string(start_time) + ")";
  if (!IsAlive()) return Status::NotFound(who + " is gone");
  // The identity is checked again once the pidfd is open: the pid cannot be
  // reused between that check and any signal sent through the handle.
  auto handle = ProcessHandle::Open(pid);
  if (!handle.ok()) return IsAlive() ? handle.status() : Status::NotFound(who + " is gone");
  if (!IsAlive()) return Status::NotFound(who + " is gone");
  return handle;
}

uint64_t BootTicksNow() {
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  const uint64_t hz = static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  return static_cast<uint64_t>(now.tv_sec) * hz + static_cast<uint64_t>(now.tv_nsec) * hz / 1000000000ULL;
}

Status ProcessIdentity::Terminate(std::chrono::milliseconds grace) const {
  auto handle = Open();
  if (!handle.ok()) return handle.status().code() == ErrorCode::kNotFound ? Status::Ok() : handle.status();
  (void)handle->Signal(SIGTERM);
  if (WaitFor([&] { return !IsAlive(); }, grace)) return Status::Ok();
  (void)handle->Signal(SIGKILL);
  if (WaitFor([&] { return !IsAlive(); }, std::chrono::seconds(10))) return Status::Ok();
  return Status::Timeout("process " + std::to_string(pid) + " did not exit after SIGKILL");
}

}  // namespace uffdpager
