// RecoveryStore: what lets a pager that crashed take its sessions back. It
// is the SessionKeeper of a pager process.
//
// Each live session has a record (its checkpoint as JSON, session_record.h)
// under DATA/uffd/VERSION/live/<id>.<incarnation>.json, and its fds parked
// in systemd's fd store under "<id>.<incarnation>.<role>". After a restart,
// TakeAll() pairs the records with the fds systemd passed back.
//
// Records are written with Durability::kProcessCrash: they need to outlive the
// pager, not the host (a host crash takes every VM with it).
//
// Thread-safe: each session writes only its own record and fd names.
#pragma once

#include <string>
#include <vector>

#include "pager/continuity/systemd_fd_store.h"
#include "pager/serving/session_checkpoint.h"
#include "pager/serving/session_keeper.h"

namespace uffdpager {

class RecoveryStore final : public SessionKeeper {
 public:
  explicit RecoveryStore(std::string dir);

  const std::string& dir() const { return dir_; }
  // False outside systemd (or a supervisor speaking its protocol): records are
  // still written, so a restart can at least report the sessions it lost.
  bool fd_store_enabled() const { return fd_store_.enabled(); }

  // SessionKeeper:
  Status Keep(const SessionCheckpoint& checkpoint, std::initializer_list<ParkedFd> fds) override;
  void Release(const SessionCheckpoint& checkpoint, SessionFdRole role) override;
  void Forget(const SessionCheckpoint& checkpoint) override;

  // Start-up: every record found, each with the fds systemd passed back for
  // it (LISTEN_FDS). For a session id recorded twice (a crash while it was
  // being replaced) only the newest incarnation is returned. Passed fds that
  // belong to no record are closed and removed from the store; records that
  // cannot be read are logged and deleted.
  std::vector<DetachedSession> TakeAll();

  std::string RecordPath(const SessionCheckpoint& checkpoint) const;
  static std::string FdName(const SessionCheckpoint& checkpoint, SessionFdRole role);

 private:
  const std::string dir_;
  SystemdFdStore fd_store_;
};

}  // namespace uffdpager
