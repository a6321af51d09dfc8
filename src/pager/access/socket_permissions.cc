#include "pager/access/socket_permissions.h"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <vector>

namespace uffdpager {

namespace {

// A decimal id, or nullopt if `text` is not one.
std::optional<uint32_t> ParseId(const std::string& text) {
  uint32_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return id;
}

}  // namespace

SocketOwnership SocketOwnership::OverriddenBy(const SocketOwnership& other) const {
  return SocketOwnership{other.uid ? other.uid : uid, other.gid ? other.gid : gid};
}

Status ApplySocketOwnership(const std::string& path, const SocketOwnership& ownership) {
  if (ownership.is_default()) return Status::Ok();  // ListenUnixSocket made it 0600 already
  uid_t uid = ownership.uid ? *ownership.uid : static_cast<uid_t>(-1);
  gid_t gid = ownership.gid ? *ownership.gid : static_cast<gid_t>(-1);
  // lchown: the path was just bound by us, but never follow a link anyway.
  if (::lchown(path.c_str(), uid, gid) != 0) {
    return Status::FromErrno(
        errno, fmt::format("chown {} to uid {} gid {}", path, static_cast<int>(uid), static_cast<int>(gid)));
  }
  if (::chmod(path.c_str(), ownership.mode()) != 0) return Status::FromErrno(errno, "chmod " + path);
  return Status::Ok();
}

Result<uid_t> ResolveUser(const std::string& name_or_id) {
  if (auto id = ParseId(name_or_id)) return static_cast<uid_t>(*id);
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  int rc = ::getpwnam_r(name_or_id.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0) return Status::FromErrno(rc, "look up user " + name_or_id);
  if (found == nullptr) return Status::NotFound("no user named \"" + name_or_id + "\"");
  return found->pw_uid;
}

Result<gid_t> ResolveGroup(const std::string& name_or_id) {
  if (auto id = ParseId(name_or_id)) return static_cast<gid_t>(*id);
  group gr{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  int rc = ::getgrnam_r(name_or_id.c_str(), &gr, buf.data(), buf.size(), &found);
  if (rc != 0) return Status::FromErrno(rc, "look up group " + name_or_id);
  if (found == nullptr) return Status::NotFound("no group named \"" + name_or_id + "\"");
  return found->gr_gid;
}

Status MakeSearchable(const std::vector<std::string>& dirs) {
  for (const auto& dir : dirs) {
    if (::chmod(dir.c_str(), 0711) != 0) return Status::FromErrno(errno, "chmod 0711 " + dir);
  }
  return Status::Ok();
}

}  // namespace uffdpager
