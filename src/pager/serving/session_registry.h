// SessionRegistry: the sessions by id. Creating a session with the id of a
// live one replaces it (the old one is closed first), but only once every
// check that could refuse the create has passed: a refused create leaves the
// live session alone. A session that ended on its own (completed, failed, its
// VMM gone) holds nothing but its description and stays until it is closed
// through the API, or until more than kMaxEndedSessions have ended: then the
// oldest are forgotten first.
//
// Thread-safe. create_mu_ serializes whatever makes or removes sessions
// (create, replace, resume, detach), so two creates of one id never race;
// mu_ guards the map alone and is never held while a session starts, stops
// or answers.
#pragma once

#include <sys/un.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "pager/serving/session.h"

namespace uffdpager {

// What a Unix socket address holds: sun_path less its terminating NUL. The
// pager binds a session's socket, and the VMM connects to it, by its path.
inline constexpr size_t kMaxSocketPathBytes = sizeof(sockaddr_un::sun_path) - 1;

// Session ids name files: only [A-Za-z0-9._-], 1 to 128 characters, and not
// starting with a dot (no "..", no hidden files).
bool IsValidSessionId(const std::string& id);

// The rules every session spec obeys, whether it comes from POST /sessions or
// from a record read back: no control character (a byte below 0x20, or 0x7f)
// in the session id, instance id, backing path or cache key, since one would
// forge log lines and a NUL would open one file while another is named; a
// valid session id; an absolute backing path the kernel can take (at most
// PATH_MAX - 1 bytes, each component at most NAME_MAX). kInvalidArgument
// naming the field as the API does ("backing_memory_path"); the message never
// repeats a control character.
Status CheckSessionSpec(const SessionSpec& spec);

class SessionRegistry {
 public:
  static constexpr size_t kMaxEndedSessions = 1024;

  SessionRegistry(std::string sessions_dir, SessionEnvironment env);
  ~SessionRegistry();

  // A new session (Session::Start), replacing a live one of the same id.
  // Everything that can refuse the create is done before a live session of
  // that id is touched: CheckSessionSpec, the socket path's length, opening
  // the backing file (env's policy; with no lock held, so a slow file system
  // delays only this create), the socket owner the session asks for, a
  // non-socket file where its socket goes. Only then is the live session
  // closed and the new one started.
  Result<std::shared_ptr<Session>> Create(SessionSpec spec) EXCLUDES(create_mu_, mu_);
  // Registers the session `make` returns under `id` (continuity's resumed
  // or failed sessions). kConflict if `id` is live here already; `make` is
  // not called then.
  using SessionMaker = std::function<Result<std::shared_ptr<Session>>()>;
  Result<std::shared_ptr<Session>> Add(const std::string& id, const SessionMaker& make) EXCLUDES(create_mu_, mu_);
  // Stops every session that holds a VM and hands back its checkpoint and
  // fds; the rest are closed. The registry is empty afterwards.
  std::vector<DetachedSession> DetachAll() EXCLUDES(create_mu_, mu_);
  std::shared_ptr<Session> Find(const std::string& id) EXCLUDES(mu_);
  // Closes `id` for its caller, who is done with its VM
  // (Session::VmAtClose::kEnd).
  void Close(const std::string& id, const std::string& reason) EXCLUDES(mu_);
  std::vector<std::shared_ptr<Session>> List() EXCLUDES(mu_);
  // Sessions serving a VM's memory (Session::HoldsVm): drain waits for these.
  size_t CountHoldingVm() EXCLUDES(mu_);
  // Sessions that hold a VM or wait for one (Session::Active): what
  // active_sessions reports, and what a hand-over moves.
  size_t CountActive() EXCLUDES(mu_);
  // Drain: every waiting session stops waiting (Session::StopWaiting).
  // Returns how many sessions still wait (they end, or take a VMM that had
  // connected already, a moment later).
  size_t StopWaiting() EXCLUDES(mu_);
  void CloseAll(const std::string& reason) EXCLUDES(mu_);

  std::string SocketPathFor(const std::string& id) const;
  // The longest session id whose socket path fits a Unix socket address
  // (for the pager's bind and the VMM's connect alike); 0 if none fits.
  size_t MaxSessionIdLength() const;
  const SessionEnvironment& environment() const { return env_; }

 private:
  // kInvalidArgument if `id`'s socket path would not fit a Unix socket address.
  Status CheckSocketPathFits(const std::string& id) const;
  // Whether the pager may give the session's socket the owner and group it
  // asks for: tried on an unnamed file in the sessions directory (same file
  // system, same rules as the socket's chown).
  Status CheckSocketOwnership(const SessionSpec& spec) const;
  // Takes out the sessions that ended longest ago beyond kMaxEndedSessions;
  // the caller closes them unlocked.
  std::vector<std::shared_ptr<Session>> TakeForgotten() REQUIRES(mu_);
  // Closes what TakeForgotten took out.
  static void Forget(std::vector<std::shared_ptr<Session>> sessions);
  // Lists `session` under `id`, and lets go of sessions that ended meanwhile.
  void Insert(const std::string& id, std::shared_ptr<Session> session) REQUIRES(create_mu_) EXCLUDES(mu_);

  const std::string sessions_dir_;
  const SessionEnvironment env_;
  Mutex create_mu_ ACQUIRED_BEFORE(mu_);
  Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ GUARDED_BY(mu_);
};

}  // namespace uffdpager
