#include "pager/continuity/recovery_store.h"

#include <unistd.h>

#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/durable_file.h"
#include "pager/continuity/session_record.h"

namespace uffdpager {

namespace fs = std::filesystem;

namespace {
// A record is a few hundred bytes plus 40 per removed range.
constexpr size_t kMaxRecordBytes = 16 << 20;
}  // namespace

RecoveryStore::RecoveryStore(std::string dir) : dir_(std::move(dir)) {}

std::string RecoveryStore::RecordPath(const SessionCheckpoint& checkpoint) const {
  return fmt::format("{}/{}.{}.json", dir_, checkpoint.spec.id, checkpoint.incarnation);
}

std::string RecoveryStore::FdName(const SessionCheckpoint& checkpoint, SessionFdRole role) {
  // Session ids are [A-Za-z0-9._-]: valid in an fd name, which may not hold ':'.
  return fmt::format("{}.{}.{}", checkpoint.spec.id, checkpoint.incarnation, SessionFdRoleName(role));
}

Status RecoveryStore::Keep(const SessionCheckpoint& checkpoint, std::initializer_list<ParkedFd> fds) {
  UFFD_RETURN_IF_ERROR(
      WriteFileAtomically(RecordPath(checkpoint), SessionRecordJson(checkpoint).dump(), Durability::kProcessCrash)
          .WithContext("save the record of session " + checkpoint.spec.id));
  for (const auto& [role, fd] : fds) {
    if (fd < 0) continue;
    UFFD_RETURN_IF_ERROR(fd_store_.Add(FdName(checkpoint, role), fd));
  }
  return Status::Ok();
}

void RecoveryStore::Release(const SessionCheckpoint& checkpoint, SessionFdRole role) {
  Status st = fd_store_.Remove(FdName(checkpoint, role));
  if (!st.ok()) spdlog::warn("session {}: {}", checkpoint.spec.id, st.ToString());
}

void RecoveryStore::Forget(const SessionCheckpoint& checkpoint) {
  for (SessionFdRole role : kAllSessionFdRoles) Release(checkpoint, role);
  std::string path = RecordPath(checkpoint);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("session {}: could not remove {}: errno {}", checkpoint.spec.id, path, errno);
  }
}

std::vector<DetachedSession> RecoveryStore::TakeAll() {
  auto passed = SystemdFdStore::TakePassedFds();
  std::map<std::string, UniqueFd> by_name;
  for (auto& [name, fd] : passed) {
    if (!by_name.emplace(name, std::move(fd)).second) {
      spdlog::warn("fd store passed two fds named {}; keeping the first", name);
    }
  }

  // The newest readable record per session id.
  std::map<std::string, SessionCheckpoint> newest;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string path = entry.path().string();
    if (entry.path().extension() != ".json") {
      fs::remove(entry.path(), ec);  // a temporary file a crash left behind
      continue;
    }
    auto text = ReadRegularFile(path, kMaxRecordBytes);
    Result<SessionCheckpoint> record =
        text.ok() ? ParseSessionRecord(nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false))
                  : Result<SessionCheckpoint>(text.status());
    if (!record.ok() || RecordPath(*record) != path) {
      spdlog::error("discarding unreadable session record {}: {}", path,
                    record.ok() ? "its name does not match its contents" : record.status().ToString());
      fs::remove(entry.path(), ec);
      continue;
    }
    // Two incarnations of one id: a crash while the session was replaced.
    // The older one is over.
    auto it = newest.find(record->spec.id);
    if (it == newest.end()) {
      newest.emplace(record->spec.id, std::move(*record));
    } else if (record->incarnation > it->second.incarnation) {
      Forget(it->second);
      it->second = std::move(*record);
    } else {
      Forget(*record);
    }
  }

  std::vector<DetachedSession> out;
  for (auto& [id, record] : newest) {
    DetachedSession recovered{std::move(record), {}};
    for (SessionFdRole role : kAllSessionFdRoles) {
      auto it = by_name.find(FdName(recovered.checkpoint, role));
      if (it == by_name.end()) continue;
      FdForRole(recovered.fds, role) = std::move(it->second);
      by_name.erase(it);
    }
    out.push_back(std::move(recovered));
  }
  for (auto& [name, fd] : by_name) {
    spdlog::warn("fd store passed {} which no session record claims; closing it", name);
    Status st = fd_store_.Remove(name);
    if (!st.ok()) spdlog::warn("{}", st.ToString());
  }
  return out;
}

}  // namespace uffdpager
