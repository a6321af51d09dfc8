#include "pager/serving/session_registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include <fmt/format.h>

#include "common/object_url.h"
#include "pager/serving/session_backing.h"

namespace uffdpager {

namespace {

constexpr size_t kMaxSessionIdLength = 128;

// kInvalidArgument naming `field` if `value` holds a control character. The
// message names the byte and where it is, never the value itself.
Status CheckNoControlCharacter(const char* field, const std::string& value) {
  for (size_t i = 0; i < value.size(); ++i) {
    const auto byte = static_cast<unsigned char>(value[i]);
    if (byte < 0x20 || byte == 0x7f) {
      return Status::InvalidArgument(
          fmt::format("\"{}\" contains a control character (byte 0x{:02x} at offset {}); control characters (bytes "
                      "below 0x20, and 0x7f) are not accepted",
                      field, byte, i));
    }
  }
  return Status::Ok();
}

// What the kernel takes as a path: PATH_MAX counts the terminating NUL.
Status CheckPathLength(const char* field, const std::string& path) {
  if (path.size() >= PATH_MAX) {
    return Status::InvalidArgument(fmt::format(
        "\"{}\" is {} bytes long; paths of at most {} bytes are accepted (PATH_MAX {}, with the terminating NUL)",
        field, path.size(), PATH_MAX - 1, PATH_MAX));
  }
  size_t start = 0;
  while (start < path.size()) {
    size_t end = std::min(path.find('/', start), path.size());
    if (end - start > NAME_MAX) {
      return Status::InvalidArgument(
          fmt::format("\"{}\" has a component of {} bytes; components of at most {} bytes are accepted (NAME_MAX)",
                      field, end - start, NAME_MAX));
    }
    start = end + 1;
  }
  return Status::Ok();
}

// A local path a session may open: absolute, and short enough for the kernel.
Status CheckBackingPath(const std::string& field, const std::string& path) {
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter(field.c_str(), path));
  if (path.empty() || path[0] != '/') return Status::InvalidArgument("\"" + field + "\" must be an absolute path");
  return CheckPathLength(field.c_str(), path);
}

// An object a session may open: "s3://BUCKET/KEY" by ParseObjectUrl's rules.
Status CheckBackingUrl(const std::string& field, const std::string& url) {
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter(field.c_str(), url));
  auto parsed = ParseObjectUrl(url);
  if (!parsed.ok()) return parsed.status().WithContext("\"" + field + "\"");
  return Status::Ok();
}

Status CheckBackingLayers(const std::vector<std::string>& layers) {
  if (layers.size() > BackingChain::kMaxLayers) {
    return Status::InvalidArgument(fmt::format(
        "\"backing_layers\" has {} layers, more than the {} a session may have (layer {}, {}, is one too many); "
        "merge the chain into a new base first",
        layers.size(), BackingChain::kMaxLayers, BackingChain::kMaxLayers, layers[BackingChain::kMaxLayers]));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string field = fmt::format("backing_layers[{}]", i);
    UFFD_RETURN_IF_ERROR(IsObjectUrl(layers[i]) ? CheckBackingUrl(field, layers[i])
                                                : CheckBackingPath(field, layers[i]));
  }
  return Status::Ok();
}

}  // namespace

bool IsValidSessionId(const std::string& id) {
  if (id.empty() || id.size() > kMaxSessionIdLength || id[0] == '.') return false;
  for (char c : id) {
    bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status CheckSessionSpec(const SessionSpec& spec) {
  // The instance id first: it is the session id when none was given.
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("instance_id", spec.instance_id));
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("session_id", spec.id));
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("backing_memory_path", spec.backing_path));
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("backing_memory_url", spec.backing_url));
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("backing_etag", spec.backing_etag));
  UFFD_RETURN_IF_ERROR(CheckNoControlCharacter("cache_key", spec.cache_key));
  if (!IsValidSessionId(spec.id)) {
    std::string shown =
        spec.id.size() <= kMaxSessionIdLength ? "\"" + spec.id + "\"" : fmt::format("of {} characters", spec.id.size());
    return Status::InvalidArgument(fmt::format(
        "session id {} is invalid: use 1-128 characters of [A-Za-z0-9._-], not starting with '.' (\"session_id\", or "
        "\"instance_id\" when no session id is given)",
        shown));
  }
  const int sources = !spec.backing_path.empty() + !spec.backing_url.empty() + !spec.backing_layers.empty();
  if (sources > 1) {
    return Status::InvalidArgument(
        "give one of \"backing_memory_path\", \"backing_memory_url\" and \"backing_layers\", not more: a session "
        "serves one memory");
  }
  if (!spec.backing_url.empty()) return CheckBackingUrl("backing_memory_url", spec.backing_url);
  if (!spec.backing_layers.empty()) return CheckBackingLayers(spec.backing_layers);
  if (spec.backing_path.empty()) {
    return Status::InvalidArgument(
        "one of \"backing_memory_path\", \"backing_memory_url\" and \"backing_layers\" is required");
  }
  return CheckBackingPath("backing_memory_path", spec.backing_path);
}

SessionRegistry::SessionRegistry(std::string sessions_dir, SessionEnvironment env)
    : sessions_dir_(std::move(sessions_dir)), env_(env) {}

SessionRegistry::~SessionRegistry() { CloseAll("pager shutting down"); }

std::string SessionRegistry::SocketPathFor(const std::string& id) const { return sessions_dir_ + "/" + id + ".sock"; }

size_t SessionRegistry::MaxSessionIdLength() const {
  const size_t fixed = SocketPathFor("").size();
  return fixed >= kMaxSocketPathBytes ? 0 : std::min(kMaxSocketPathBytes - fixed, kMaxSessionIdLength);
}

Status SessionRegistry::CheckSocketPathFits(const std::string& id) const {
  const std::string path = SocketPathFor(id);
  if (path.size() <= kMaxSocketPathBytes) return Status::Ok();
  const size_t longest = MaxSessionIdLength();
  return Status::InvalidArgument(fmt::format(
      "session id \"{}\" is too long for this data directory: its socket path {} would be {} bytes, more than the {} "
      "a Unix socket address holds; {}",
      id, path, path.size(), kMaxSocketPathBytes,
      longest == 0 ? "no id fits here (the pager needs a shorter --data-dir or --version-key)"
                   : fmt::format("ids of at most {} characters fit here", longest)));
}

Status SessionRegistry::CheckSocketOwnership(const SessionSpec& spec) const {
  // The pager-wide owner and group were given to control.sock at start-up.
  if (spec.socket_ownership.is_default()) return Status::Ok();
  const SocketOwnership ownership = env_.socket_ownership.OverriddenBy(spec.socket_ownership);
  UniqueFd probe(::open(sessions_dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  // A file system without unnamed files: the socket's own chown will tell.
  if (!probe) return Status::Ok();
  uid_t uid = ownership.uid ? *ownership.uid : static_cast<uid_t>(-1);
  gid_t gid = ownership.gid ? *ownership.gid : static_cast<gid_t>(-1);
  if (::fchown(probe.get(), uid, gid) != 0) {
    return Status::FromErrno(errno, fmt::format("chown {} to uid {} gid {}", SocketPathFor(spec.id),
                                                static_cast<int>(uid), static_cast<int>(gid)));
  }
  return Status::Ok();
}

Result<std::shared_ptr<Session>> SessionRegistry::Create(SessionSpec spec) {
  UFFD_RETURN_IF_ERROR(CheckSessionSpec(spec));
  UFFD_RETURN_IF_ERROR(CheckSocketPathFits(spec.id));
  // No lock is held while the file opens (it never blocks on the file's
  // kind, but a file system may be slow).
  auto backing = OpenSessionBacking(env_, &spec);
  if (!backing.ok()) return backing.status();
  UFFD_RETURN_IF_ERROR(CheckSocketOwnership(spec));
  const std::string id = spec.id;
  const std::string socket_path = SocketPathFor(id);
  MutexLock create_lock(&create_mu_);
  // A live session's socket is a socket; anything else there would make
  // the new session's listen fail after the old one was closed.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
    return Status::Conflict(socket_path + " exists and is not a socket");
  }
  std::shared_ptr<Session> old;
  {
    MutexLock lock(&mu_);
    if (auto it = sessions_.find(id); it != sessions_.end()) {
      old = std::move(it->second);
      sessions_.erase(it);
    }
  }
  if (old) old->Close("replaced by a new session with the same id", Session::VmAtClose::kEnd);
  auto session = Session::Start(std::move(spec), std::move(*backing), socket_path, env_);
  if (!session.ok()) return session.status();
  Insert(id, *session);
  return session;
}

void SessionRegistry::Insert(const std::string& id, std::shared_ptr<Session> session) {
  std::vector<std::shared_ptr<Session>> forgotten;
  {
    MutexLock lock(&mu_);
    sessions_[id] = std::move(session);
    forgotten = TakeForgotten();
  }
  Forget(std::move(forgotten));
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
  Insert(id, *session);
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
