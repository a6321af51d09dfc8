// SessionRegistry: the live sessions by id. Creating a session with the id of
// a live one replaces it (the old one is closed first). Sessions that ended on
// their own (VMM exited) are pruned on the next look.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pager/serving/session.h"

namespace uffdpager {

// Session ids name files: only [A-Za-z0-9._-], 1 to 128 characters, and not
// starting with a dot (no "..", no hidden files).
bool IsValidSessionId(const std::string& id);

class SessionRegistry {
 public:
  SessionRegistry(std::string sessions_dir, SessionEnvironment env);
  ~SessionRegistry();

  Result<std::shared_ptr<Session>> Create(SessionSpec spec);
  // Takes over a session another process served (see Session::Adopt). An id
  // already live here is a conflict. With kKeepAsLost a session that cannot
  // be served is registered as Failed (a crash restart must show what it
  // lost); with kRefuse the error is returned and nothing registered (a
  // hand-over: the older pager keeps serving it).
  enum class OnUnservable { kKeepAsLost, kRefuse };
  Result<std::shared_ptr<Session>> Adopt(RecoveredSession recovered, const std::string& origin,
                                         OnUnservable on_unservable);
  // Stops every session that holds a VM and hands back its record and fds;
  // the rest are closed. The registry is empty afterwards.
  std::vector<RecoveredSession> DetachAll();
  std::shared_ptr<Session> Find(const std::string& id);
  void Close(const std::string& id, const std::string& reason);
  std::vector<std::shared_ptr<Session>> List();
  // Sessions still serving (or able to serve) a VM; drain waits for them.
  size_t CountHoldingVm();
  size_t CountActive();
  void CloseAll(const std::string& reason);

  std::string SocketPathFor(const std::string& id) const;

 private:
  void PruneEnded(std::unique_lock<std::mutex>& lock);

  const std::string sessions_dir_;
  const SessionEnvironment env_;
  std::mutex create_mu_;  // one create/replace at a time
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
};

}  // namespace uffdpager
