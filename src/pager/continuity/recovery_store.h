// RecoveryStore: what lets a pager that crashed take its sessions back.
//
// Each live session has a record file under DATA/uffd/VERSION/live/, written
// before the session is acknowledged (before POST /sessions answers, and
// again before the first fault of a VMM that handed its memory over is
// served), and rewritten when the VMM discards ranges. Its fds are parked in
// systemd's fd store under "<session id>.<incarnation>.<role>". After a
// restart, TakeAll() pairs the records with the fds systemd passed back.
//
// Records are written with Durability::kProcessCrash: they need to outlive the
// pager, not the host (a host crash takes every VM with it).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "pager/continuity/session_record.h"
#include "pager/continuity/systemd_fd_store.h"

namespace uffdpager {

class RecoveryStore {
 public:
  explicit RecoveryStore(std::string dir);

  const std::string& dir() const { return dir_; }
  // False outside systemd (or a supervisor speaking its protocol): records are
  // still written, so a restart can at least report the sessions it lost.
  bool fd_store_enabled() const { return fd_store_.enabled(); }

  // Writes `record` (replacing this incarnation's previous one).
  Status Save(const SessionRecord& record);
  // Parks `fd` as `role` of this session, or drops that role's fd.
  Status StoreFd(const SessionRecord& record, SessionFdRole role, int fd);
  void ReleaseFd(const SessionRecord& record, SessionFdRole role);
  // The session is over: its record and every fd it parked go.
  void Forget(const SessionRecord& record);

  // Start-up: every record found, each with the fds systemd passed back for
  // it (LISTEN_FDS). For a session id recorded twice (a crash while it was
  // being replaced) only the newest incarnation is returned. Passed fds that
  // belong to no record are closed and removed from the store; records that
  // cannot be read are logged and deleted.
  std::vector<RecoveredSession> TakeAll();

  std::string RecordPath(const SessionRecord& record) const;
  static std::string FdName(const SessionRecord& record, SessionFdRole role);

 private:
  const std::string dir_;
  SystemdFdStore fd_store_;
};

}  // namespace uffdpager
