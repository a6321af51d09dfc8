// PagerLink: the lifecycle's side of uffd-pager, through the client library
// on DATA/uffd/VERSION/control.sock. Starts the pager (detached, so its
// sessions outlive snapctl) when it is not running and the data directory
// allows it; opens, checks and closes the sessions of one-shot UFFD restores.
#pragma once

#include <string>

#include "uffdpager/lifecycle.h"
#include "uffdpager/pager_client.h"

namespace uffdpager::lifecycle {

class PagerLink {
 public:
  PagerLink(const std::string& data_dir, const DataDirConfig& config);

  Status EnsureRunning();
  // A session serving `backing_path` to the instance's next VMM (session id =
  // instance name; a live session of that id is replaced). The VMM is
  // killed by the pager if a fault cannot be served, so it never hangs.
  Result<CreatedSession> OpenSession(const std::string& instance, const std::string& backing_path);
  // Idempotent; a pager that is not running has no session to close.
  Status CloseSession(const std::string& session_id);
  // Empty when the session serves its VM; otherwise why the VM cannot be
  // trusted (pager unreachable, session failed or gone).
  std::string SessionProblem(const std::string& session_id) const;

  const PagerClient& client() const { return client_; }

 private:
  std::string data_dir_;
  DataDirConfig config_;
  PagerClient client_;
};

}  // namespace uffdpager::lifecycle
