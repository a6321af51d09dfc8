#include "pager/continuity/session_continuity.h"

#include <fcntl.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "pager/continuity/session_handover.h"
#include "pager/serving/session_backing.h"

namespace uffdpager {

Result<std::shared_ptr<Session>> SessionContinuity::ResumeChecked(DetachedSession detached, const std::string& origin) {
  const SessionCheckpoint& checkpoint = detached.checkpoint;
  const SessionEnvironment& env = registry_->environment();
  if (checkpoint.phase == SessionPhase::kServing && !detached.fds.uffd) {
    return Status::NotFound(
        "its userfaultfd did not come back (the pager ran without systemd's fd store, or crashed while "
        "taking the VMM's memory)");
  }
  // With the ETag the session pinned: an object that changed is refused.
  SessionSpec spec = checkpoint.spec;
  auto backing = OpenSessionBacking(env, &spec);
  if (!backing.ok()) return backing.status().WithContext("reopen the backing memory");
  if ((*backing)->IdentityText() != checkpoint.backing_identity) {
    const char* kind = !spec.backing_layers.empty() ? "chain" : spec.backing_url.empty() ? "file" : "object";
    return Status::Conflict(
        fmt::format("the backing {} {} is not the {} the session began with (identity {} then, {} now); serving it "
                    "would give the VM other bytes",
                    kind, spec.BackingName(), kind, checkpoint.backing_identity, (*backing)->IdentityText()));
  }
  return Session::Resume(std::move(detached), std::move(*backing), origin, env);
}

Status SessionContinuity::Resume(DetachedSession detached, const std::string& origin, OnUnservable on_unservable) {
  const std::string id = detached.checkpoint.spec.id;
  auto added = registry_->Add(id, [&]() -> Result<std::shared_ptr<Session>> {
    // What a failed session needs if resuming fails: the checkpoint, and a
    // pidfd of its own (resuming consumes the fds it is given).
    SessionCheckpoint checkpoint = detached.checkpoint;
    UniqueFd client;
    if (detached.fds.client) client.reset(::fcntl(detached.fds.client.get(), F_DUPFD_CLOEXEC, 0));
    auto session = ResumeChecked(std::move(detached), origin);
    if (session.ok() || on_unservable == OnUnservable::kRefuse) return session;
    return Session::Failed(checkpoint, std::move(client),
                           session.status().WithContext("cannot serve this session after the pager restarted"),
                           "lost in a pager restart", registry_->environment());
  });
  return added.ok() ? Status::Ok() : added.status();
}

void SessionContinuity::RecoverAfterRestart(std::vector<DetachedSession> found) {
  if (found.empty()) return;
  spdlog::info("found {} sessions of a previous pager process ({})", found.size(),
               store_->fd_store_enabled() ? "fds from systemd's fd store" : "no fd store: serving ones are lost");
  for (auto& detached : found) {
    std::string id = detached.checkpoint.spec.id;
    Status st = Resume(std::move(detached), "recovered after a pager restart", OnUnservable::kKeepAsFailed);
    if (!st.ok()) spdlog::error("session {}: {}", id, st.ToString());
  }
}

void SessionContinuity::TakeOver(const std::string& data_dir, const std::vector<std::string>& versions,
                                 const std::string& own_version) {
  for (const auto& version : versions) {
    if (version == own_version || !IsValidSessionId(version)) continue;
    std::string socket = data_dir + "/uffd/" + version + "/handover.sock";
    auto taken = TakeOverSessions(socket, own_version, [&](DetachedSession session) {
      return Resume(std::move(session), "taken over from version " + version, OnUnservable::kRefuse);
    });
    if (taken.ok()) {
      spdlog::info("took over {} sessions from the pager of version {}", *taken, version);
    } else if (taken.status().code() == ErrorCode::kNotFound) {
      spdlog::info("no pager of version {} is running; nothing to take over", version);
    } else {
      spdlog::error("taking over from version {}: {}", version, taken.status().ToString());
    }
  }
}

size_t SessionContinuity::GiveTo(int conn, const std::string& taker_version) {
  std::vector<DetachedSession> detached = registry_->DetachAll();
  size_t count = detached.size();
  size_t given = GiveSessions(conn, std::move(detached), [this](DetachedSession session, bool taken) {
    if (taken) {
      store_->Forget(session.checkpoint);  // the taker keeps its own
      return;
    }
    std::string id = session.checkpoint.spec.id;
    Status back = Resume(std::move(session), "kept: the hand-over failed", OnUnservable::kKeepAsFailed);
    if (!back.ok()) spdlog::error("session {}: {}", id, back.ToString());
  });
  spdlog::info("handed {} of {} sessions to version {}; draining the rest", given, count, taker_version);
  return given;
}

}  // namespace uffdpager
