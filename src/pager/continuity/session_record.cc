#include "pager/continuity/session_record.h"

#include <optional>

#include <fmt/format.h>

namespace uffdpager {

namespace {

template <typename T>
Status Take(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end()) return Status::InvalidArgument(fmt::format("session record has no \"{}\"", key));
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(fmt::format("session record field \"{}\": {}", key, e.what()));
  }
  return Status::Ok();
}

template <typename T>
Status TakeOptional(const nlohmann::json& j, const char* key, std::optional<T>* out) {
  if (!j.contains(key) || j[key].is_null()) return Status::Ok();
  T value{};
  UFFD_RETURN_IF_ERROR(Take(j, key, &value));
  *out = value;
  return Status::Ok();
}

}  // namespace

nlohmann::json SessionRecordJson(const SessionCheckpoint& c) {
  nlohmann::json regions_json = nlohmann::json::array();
  for (const auto& r : c.regions) {
    regions_json.push_back(
        {{"base_host_virt_addr", r.base_host_virt_addr}, {"size", r.size}, {"offset", r.offset}, {"page_size", r.page_size}});
  }
  nlohmann::json removed_json = nlohmann::json::array();
  for (const auto& [start, end] : c.removed) removed_json.push_back({start, end});
  nlohmann::json j = {
      {"format", 1},
      {"session_id", c.spec.id},
      {"instance_id", c.spec.instance_id},
      {"backing_memory_path", c.spec.backing_path},
      {"cache_key", c.spec.cache_key},
      {"kill_client_on_failure", c.spec.kill_client_on_failure},
      {"socket_path", c.socket_path},
      {"incarnation", c.incarnation},
      {"phase", SessionPhaseName(c.phase)},
      {"backing_identity", c.backing_identity},
      {"regions", std::move(regions_json)},
      {"removed", std::move(removed_json)},
      {"client_pid", c.client_pid},
  };
  if (c.spec.socket_ownership.uid) j["socket_uid"] = *c.spec.socket_ownership.uid;
  if (c.spec.socket_ownership.gid) j["socket_gid"] = *c.spec.socket_ownership.gid;
  if (c.spec.expected_peer.uid) j["expected_uid"] = *c.spec.expected_peer.uid;
  if (c.spec.expected_peer.pid) j["expected_pid"] = *c.spec.expected_peer.pid;
  return j;
}

Result<SessionCheckpoint> ParseSessionRecord(const nlohmann::json& j) {
  if (!j.is_object()) return Status::InvalidArgument("session record is not a JSON object");
  int format = 0;
  UFFD_RETURN_IF_ERROR(Take(j, "format", &format));
  if (format != 1) return Status::InvalidArgument(fmt::format("session record format {} is not known", format));
  SessionCheckpoint r;
  UFFD_RETURN_IF_ERROR(Take(j, "session_id", &r.spec.id));
  UFFD_RETURN_IF_ERROR(Take(j, "instance_id", &r.spec.instance_id));
  UFFD_RETURN_IF_ERROR(Take(j, "backing_memory_path", &r.spec.backing_path));
  UFFD_RETURN_IF_ERROR(Take(j, "cache_key", &r.spec.cache_key));
  UFFD_RETURN_IF_ERROR(Take(j, "kill_client_on_failure", &r.spec.kill_client_on_failure));
  UFFD_RETURN_IF_ERROR(TakeOptional(j, "socket_uid", &r.spec.socket_ownership.uid));
  UFFD_RETURN_IF_ERROR(TakeOptional(j, "socket_gid", &r.spec.socket_ownership.gid));
  UFFD_RETURN_IF_ERROR(TakeOptional(j, "expected_uid", &r.spec.expected_peer.uid));
  UFFD_RETURN_IF_ERROR(TakeOptional(j, "expected_pid", &r.spec.expected_peer.pid));
  UFFD_RETURN_IF_ERROR(Take(j, "socket_path", &r.socket_path));
  UFFD_RETURN_IF_ERROR(Take(j, "incarnation", &r.incarnation));
  std::string phase;
  UFFD_RETURN_IF_ERROR(Take(j, "phase", &phase));
  if (phase == "serving") {
    r.phase = SessionPhase::kServing;
  } else if (phase == "waiting") {
    r.phase = SessionPhase::kWaiting;
  } else {
    return Status::InvalidArgument("session record phase \"" + phase + "\" is not known");
  }
  UFFD_RETURN_IF_ERROR(Take(j, "backing_identity", &r.backing_identity));
  UFFD_RETURN_IF_ERROR(Take(j, "client_pid", &r.client_pid));
  nlohmann::json regions;
  UFFD_RETURN_IF_ERROR(Take(j, "regions", &regions));
  if (!regions.is_array()) return Status::InvalidArgument("session record \"regions\" is not an array");
  for (const auto& rj : regions) {
    GuestRegionMapping m;
    UFFD_RETURN_IF_ERROR(Take(rj, "base_host_virt_addr", &m.base_host_virt_addr));
    UFFD_RETURN_IF_ERROR(Take(rj, "size", &m.size));
    UFFD_RETURN_IF_ERROR(Take(rj, "offset", &m.offset));
    UFFD_RETURN_IF_ERROR(Take(rj, "page_size", &m.page_size));
    r.regions.push_back(m);
  }
  if (r.phase == SessionPhase::kServing && r.regions.empty()) {
    return Status::InvalidArgument("session record of a serving session has no regions");
  }
  nlohmann::json removed;
  UFFD_RETURN_IF_ERROR(Take(j, "removed", &removed));
  try {
    for (const auto& range : removed) r.removed.emplace_back(range.at(0).get<uint64_t>(), range.at(1).get<uint64_t>());
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("session record \"removed\": ") + e.what());
  }
  return r;
}

}  // namespace uffdpager
