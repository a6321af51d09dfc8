#include "pager/serving/session_registry.h"

#include <algorithm>

namespace uffdpager {

bool IsValidSessionId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  for (char c : id) {
    bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

SessionRegistry::SessionRegistry(std::string sessions_dir, SessionEnvironment env)
    : sessions_dir_(std::move(sessions_dir)), env_(env) {}

SessionRegistry::~SessionRegistry() { CloseAll("pager shutting down"); }

std::string SessionRegistry::SocketPathFor(const std::string& id) const { return sessions_dir_ + "/" + id + ".sock"; }

Result<std::shared_ptr<Session>> SessionRegistry::Create(SessionSpec spec) {
  if (!IsValidSessionId(spec.id)) {
    return Status::InvalidArgument("session id \"" + spec.id +
                                   "\" is invalid: use 1-128 characters of [A-Za-z0-9._-], not starting with '.'");
  }
  MutexLock create_lock(&create_mu_);
  std::shared_ptr<Session> old;
  {
    MutexLock lock(&mu_);
    if (auto it = sessions_.find(spec.id); it != sessions_.end()) {
      old = std::move(it->second);
      sessions_.erase(it);
    }
  }
  if (old) old->Close("replaced by a new session with the same id", Session::VmAtClose::kEnd);
  std::string id = spec.id;
  auto session = Session::Start(std::move(spec), SocketPathFor(id), env_);
  if (!session.ok()) return session.status();
  std::vector<std::shared_ptr<Session>> forgotten;
  {
    MutexLock lock(&mu_);
    sessions_[id] = *session;
    forgotten = TakeForgotten();
  }
  Forget(std::move(forgotten));
  return session;
}

Result<std::shared_ptr<Session>> SessionRegistry::Add(const std::string& id, const SessionMaker& make) {
  if (!IsValidSessionId(id)) return Status::InvalidArgument("invalid session id \"" + id + "\"");
  MutexLock create_lock(&create_mu_);
  {
    MutexLock lock(&mu_);
    if (sessions_.count(id) != 0) return Status::Conflict("a session " + id + " is live here already");
  }
  auto session = make();
  if (!session.ok()) return session.status();
  std::vector<std::shared_ptr<Session>> forgotten;
  {
    MutexLock lock(&mu_);
    sessions_[id] = *session;
    forgotten = TakeForgotten();
  }
  Forget(std::move(forgotten));
  return session;
}

std::vector<DetachedSession> SessionRegistry::DetachAll() {
  MutexLock create_lock(&create_mu_);
  std::map<std::string, std::shared_ptr<Session>> all;
  {
    MutexLock lock(&mu_);
    all.swap(sessions_);
  }
  std::vector<DetachedSession> out;
  for (auto& [id, s] : all) {
    auto detached = s->Detach();
    if (detached.ok()) {
      out.push_back(std::move(*detached));
    } else {
      s->Close("pager handing over: " + detached.status().message());
    }
  }
  return out;
}

std::shared_ptr<Session> SessionRegistry::Find(const std::string& id) {
  MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

void SessionRegistry::Close(const std::string& id, const std::string& reason) {
  std::shared_ptr<Session> session;
  {
    MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    session = std::move(it->second);
    sessions_.erase(it);
  }
  session->Close(reason, Session::VmAtClose::kEnd);
}

std::vector<std::shared_ptr<Session>> SessionRegistry::TakeForgotten() {
  std::vector<std::pair<uint64_t, std::string>> ended;  // (end order, id)
  for (const auto& [id, s] : sessions_) {
    if (s->finished()) ended.emplace_back(s->end_order(), id);
  }
  std::vector<std::shared_ptr<Session>> forgotten;
  if (ended.size() <= kMaxEndedSessions) return forgotten;
  std::sort(ended.begin(), ended.end());
  for (size_t i = 0; i < ended.size() - kMaxEndedSessions; ++i) {
    auto it = sessions_.find(ended[i].second);
    forgotten.push_back(std::move(it->second));
    sessions_.erase(it);
  }
  return forgotten;
}

void SessionRegistry::Forget(std::vector<std::shared_ptr<Session>> sessions) {
  for (auto& s : sessions) s->Close("forgotten: more than " + std::to_string(kMaxEndedSessions) + " sessions ended");
}

std::vector<std::shared_ptr<Session>> SessionRegistry::List() {
  std::vector<std::shared_ptr<Session>> forgotten;
  std::vector<std::shared_ptr<Session>> out;
  {
    MutexLock lock(&mu_);
    forgotten = TakeForgotten();
    for (auto& [id, s] : sessions_) out.push_back(s);
  }
  Forget(std::move(forgotten));
  return out;
}

size_t SessionRegistry::CountHoldingVm() {
  size_t n = 0;
  for (const auto& s : List()) n += s->HoldsVm() ? 1 : 0;
  return n;
}

size_t SessionRegistry::CountActive() {
  size_t n = 0;
  for (const auto& s : List()) n += s->Active() ? 1 : 0;
  return n;
}

size_t SessionRegistry::StopWaiting() {
  size_t waiting = 0;
  for (const auto& s : List()) {
    s->StopWaiting();
    waiting += s->state() == SessionState::kWaiting ? 1 : 0;
  }
  return waiting;
}

void SessionRegistry::CloseAll(const std::string& reason) {
  std::map<std::string, std::shared_ptr<Session>> all;
  {
    MutexLock lock(&mu_);
    all.swap(sessions_);
  }
  for (auto& [id, s] : all) s->Close(reason);
}

}  // namespace uffdpager
