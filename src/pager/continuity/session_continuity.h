// SessionContinuity: how sessions outlive a pager process. The daemon drives
// it at three moments, and it owns every way a session begins other than a
// new create:
//   - after a crash (RecoverAfterRestart): each session RecoveryStore found
//     is resumed, or, if it cannot be served safely (its userfaultfd did not
//     come back, its backing file is not the same file), kept as a failed
//     session so the loss is visible and its VMM killed if it asked for that;
//   - in an upgrade, as the taker (TakeOver): each older pager's sessions
//     come over handover.sock and are resumed here; one that cannot be
//     served is refused, and its old pager keeps serving it;
//   - in an upgrade, as the giver (GiveTo): every session is detached and
//     sent; one the taker refuses, or every one left if the taker goes
//     away, is resumed here again.
// A resumed session wakes every thread that faulted while nobody served, so
// no fault the previous process read and never answered is lost.
#pragma once

#include <string>
#include <vector>

#include "pager/continuity/recovery_store.h"
#include "pager/serving/session_registry.h"

namespace uffdpager {

class SessionContinuity {
 public:
  // Both outlive this object.
  SessionContinuity(RecoveryStore* store, SessionRegistry* registry) : store_(store), registry_(registry) {}

  void RecoverAfterRestart(std::vector<DetachedSession> found);
  // Takes the sessions of each pager of `versions` under DATA/uffd/ (not
  // `own_version`). A version with no running pager is skipped.
  void TakeOver(const std::string& data_dir, const std::vector<std::string>& versions, const std::string& own_version);
  // The giver's side of one hand-over on `conn`; returns how many sessions
  // the taker took.
  size_t GiveTo(int conn, const std::string& taker_version);

 private:
  enum class OnUnservable { kKeepAsFailed, kRefuse };
  // Registers `detached` as a session served here, or, with kKeepAsFailed,
  // as a failed one if it cannot be served.
  Status Resume(DetachedSession detached, const std::string& origin, OnUnservable on_unservable);
  // Resume proper: the checks that make it safe, then Session::Resume.
  Result<std::shared_ptr<Session>> ResumeChecked(DetachedSession detached, const std::string& origin);

  RecoveryStore* const store_;
  SessionRegistry* const registry_;
};

}  // namespace uffdpager
