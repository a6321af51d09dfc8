// PagerLink: the lifecycle's side of uffd-pager, through the client library
// on DATA/uffd/VERSION/control.sock. Starts the pager (detached, so its
// sessions outlive snapctl) when it is not running and the data directory
// allows it, and stops a pager it started once no VM needs it; opens, checks
// and closes the sessions of one-shot UFFD restores.
#pragma once

#include <string>
#include <vector>

#include "common/process_identity.h"
#include "uffdpager/lifecycle.h"
#include "uffdpager/pager_client.h"

namespace uffdpager::lifecycle {

class PagerLink {
 public:
  PagerLink(const std::string& data_dir, const DataDirConfig& config);

  // OK once this directory's pager answers and takes sessions; starts it
  // (and records that this directory started it) if it does not answer.
  // kUnavailable when it cannot be started.
  Status EnsureRunning();
  // A session serving the memory of `layers` (paths or object URLs, base
  // first; one is a plain memory file or object) to the instance's next VMM (session id = instance
  // name; a live session of that id is replaced). The VMM is
  // killed by the pager if a fault cannot be served, so it never hangs. With
  // the config's vmm_uid/vmm_gid the session socket is theirs and only a VMM
  // of vmm_uid is accepted (a jailed Firecracker).
  Result<CreatedSession> OpenSession(const std::string& instance, const std::vector<std::string>& layers);
  // Idempotent; a pager that is not running has no session to close.
  Status CloseSession(const std::string& session_id);
  // Empty when the session serves its VM; otherwise why the VM cannot be
  // trusted (pager unreachable, session failed or gone).
  std::string SessionProblem(const std::string& session_id) const;
  // Drains the pager and waits for it to exit, if EnsureRunning started it
  // and it holds no session. REQUIRES: no instance of this directory needs
  // it (the caller checked its metadata). A pager started by anyone else
  // (systemd, an operator) is never touched.
  Status StopIfStartedHere();

  const PagerClient& client() const { return client_; }

 private:
  // DATA/uffd/pager-KEY.started: the identity of the pager EnsureRunning started.
  std::string StartedMarkerPath() const;

  std::string data_dir_;
  DataDirConfig config_;
  PagerClient client_;
};

}  // namespace uffdpager::lifecycle
