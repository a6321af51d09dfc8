// SessionCheckpoint: a session as another pager process can serve on from
// it — the same pager restarted after a crash, or a newer version taking
// over. It is the spec, where the socket is, and, once a VMM handed its
// memory over, the regions and the ranges the VMM has discarded since. The
// fds (SessionFds) travel beside it: through systemd's fd store across a
// crash, or over handover.sock to a newer pager.
//
// continuity/session_record.h writes a checkpoint down as JSON (a "session
// record", under DATA/uffd/VERSION/live/).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/uffd_handshake.h"
#include "common/unique_fd.h"
#include "pager/serving/session_spec.h"

namespace uffdpager {

enum class SessionPhase {
  kWaiting,  // listening for the VMM; the listener is the fd that matters
  kServing,  // the VMM's memory is registered; the userfaultfd is
};
const char* SessionPhaseName(SessionPhase phase);

struct SessionCheckpoint {
  SessionSpec spec;
  std::string socket_path;
  // Tells this incarnation of a session id from an earlier one that was
  // replaced: fd-store names carry it, so a late removal of the old
  // session's fds can never drop the new one's.
  uint64_t incarnation = 0;
  SessionPhase phase = SessionPhase::kWaiting;
  // The identity of the bytes served (FileIdentity::ToString). A successor
  // that finds other bytes at the path must not serve them: the VM would
  // read someone else's memory.
  std::string backing_identity;
  // kServing only.
  std::vector<GuestRegionMapping> regions;
  std::vector<std::pair<uint64_t, uint64_t>> removed;  // [start, end) host addresses
  // The VMM that handed its memory over, as pid and start time
  // (common/process_identity.h; 0: unknown): a successor that did not get its
  // pidfd back can still kill that very process, and never one that reused
  // the pid.
  pid_t client_pid = 0;
  uint64_t client_start_time = 0;
};

// A fresh incarnation number: increasing within a process and, being based
// on the wall clock, across restarts.
uint64_t NextSessionIncarnation();

// The fds that go with a checkpoint. Which are set depends on the phase.
struct SessionFds {
  UniqueFd listener;    // kWaiting
  UniqueFd uffd;        // kServing
  UniqueFd connection;  // kServing: the VMM's handshake connection, kept open as the VMM expects
  UniqueFd client;      // kServing: pidfd of the VMM, when it could be opened
};

// The role of each fd, as named in the fd store and in hand-over messages.
enum class SessionFdRole { kListener, kUffd, kConnection, kClient };
inline constexpr SessionFdRole kAllSessionFdRoles[] = {SessionFdRole::kListener, SessionFdRole::kUffd,
                                                       SessionFdRole::kConnection, SessionFdRole::kClient};
const char* SessionFdRoleName(SessionFdRole role);
UniqueFd& FdForRole(SessionFds& fds, SessionFdRole role);

// A session outside any pager's serve loop: detached for a hand-over,
// received in one, or found after a restart.
struct DetachedSession {
  SessionCheckpoint checkpoint;
  SessionFds fds;
};

}  // namespace uffdpager
