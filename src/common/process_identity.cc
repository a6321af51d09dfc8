#include "common/process_identity.h"

#include <signal.h>

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

Status ProcessIdentity::Terminate(std::chrono::milliseconds grace) const {
  if (!IsAlive()) return Status::Ok();
  // Signal through a pidfd opened after the identity check: the pid cannot be
  // reused between the check and the signal.
  auto handle = ProcessHandle::Open(pid);
  if (!handle.ok()) return IsAlive() ? handle.status() : Status::Ok();
  if (!IsAlive()) return Status::Ok();
  (void)handle->Signal(SIGTERM);
  if (WaitFor([&] { return !IsAlive(); }, grace)) return Status::Ok();
  (void)handle->Signal(SIGKILL);
  if (WaitFor([&] { return !IsAlive(); }, std::chrono::seconds(10))) return Status::Ok();
  return Status::Timeout("process " + std::to_string(pid) + " did not exit after SIGKILL");
}

}  // namespace uffdpager
