#include "pager/continuity/session_record.h"

#include <fmt/format.h>

#include "common/json_fields.h"
#include "common/object_url.h"
#include "pager/serving/session_registry.h"

namespace uffdpager {

namespace {

// ParseSessionRecord, whose errors say "session record" in front.
Result<SessionCheckpoint> ParseRecord(const nlohmann::json& j) {
  if (!j.is_object()) return Status::InvalidArgument("not a JSON object");
  JsonFields fields(j);
  int format = 0;
  UFFD_RETURN_IF_ERROR(fields.Read("format", &format));
  if (format != 1) return Status::InvalidArgument(fmt::format("format {} is not known", format));
  SessionCheckpoint r;
  UFFD_RETURN_IF_ERROR(fields.Read("session_id", &r.spec.id));
  UFFD_RETURN_IF_ERROR(fields.Read("instance_id", &r.spec.instance_id));
  UFFD_RETURN_IF_ERROR(fields.Read("backing_memory_path", &r.spec.backing_path));
  // Records of older pagers have no URL: a file session.
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_memory_url", &r.spec.backing_url));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_etag", &r.spec.backing_etag));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_layers", &r.spec.backing_layers));
  if (!r.spec.backing_url.empty() && r.spec.backing_etag.empty()) {
    return Status::InvalidArgument("a session with \"backing_memory_url\" has no \"backing_etag\"");
  }
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("backing_layer_etags", &r.spec.backing_layer_etags));
  if (!r.spec.backing_layer_etags.empty() && r.spec.backing_layer_etags.size() != r.spec.backing_layers.size()) {
    return Status::InvalidArgument(fmt::format("\"backing_layer_etags\" has {} entries for {} layers",
                                               r.spec.backing_layer_etags.size(), r.spec.backing_layers.size()));
  }
  for (size_t i = 0; i < r.spec.backing_layers.size(); ++i) {
    // A restart must serve the version it served, never the current one.
    if (IsObjectUrl(r.spec.backing_layers[i]) &&
        (i >= r.spec.backing_layer_etags.size() || r.spec.backing_layer_etags[i].empty())) {
      return Status::InvalidArgument(fmt::format("layer {} ({}) has no pinned ETag", i, r.spec.backing_layers[i]));
    }
  }
  UFFD_RETURN_IF_ERROR(fields.Read("cache_key", &r.spec.cache_key));
  UFFD_RETURN_IF_ERROR(fields.Read("kill_client_on_failure", &r.spec.kill_client_on_failure));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("socket_uid", &r.spec.socket_ownership.uid));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("socket_gid", &r.spec.socket_ownership.gid));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("expected_uid", &r.spec.expected_peer.uid));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("expected_pid", &r.spec.expected_peer.pid));
  UFFD_RETURN_IF_ERROR(fields.Read("socket_path", &r.socket_path));
  UFFD_RETURN_IF_ERROR(fields.Read("incarnation", &r.incarnation));
  std::string phase;
  UFFD_RETURN_IF_ERROR(fields.Read("phase", &phase));
  if (phase == "serving") {
    r.phase = SessionPhase::kServing;
  } else if (phase == "waiting") {
    r.phase = SessionPhase::kWaiting;
  } else {
    return Status::InvalidArgument("phase \"" + phase + "\" is not known");
  }
  UFFD_RETURN_IF_ERROR(fields.Read("backing_identity", &r.backing_identity));
  UFFD_RETURN_IF_ERROR(fields.Read("client_pid", &r.client_pid));
  // A record of an older pager has no start time: unknown (0).
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("client_start_time", &r.client_start_time));
  std::vector<nlohmann::json> regions;
  UFFD_RETURN_IF_ERROR(fields.Read("regions", &regions));
  for (size_t i = 0; i < regions.size(); ++i) {
    JsonFields region(regions[i], fmt::format("regions[{}]", i));
    GuestRegionMapping m;
    UFFD_RETURN_IF_ERROR(region.Read("base_host_virt_addr", &m.base_host_virt_addr));
    UFFD_RETURN_IF_ERROR(region.Read("size", &m.size));
    UFFD_RETURN_IF_ERROR(region.Read("offset", &m.offset));
    UFFD_RETURN_IF_ERROR(region.Read("page_size", &m.page_size));
    r.regions.push_back(m);
  }
  // Held to the rules a create is: a record is read by another process,
  // maybe written by another version, maybe tampered with.
  UFFD_RETURN_IF_ERROR(CheckSessionSpec(r.spec));
  if (r.phase == SessionPhase::kServing && r.regions.empty()) {
    return Status::InvalidArgument("a serving session has no regions");
  }
  std::vector<std::vector<uint64_t>> removed;
  UFFD_RETURN_IF_ERROR(fields.Read("removed", &removed));
  for (size_t i = 0; i < removed.size(); ++i) {
    if (removed[i].size() != 2) return Status::InvalidArgument(fmt::format("\"removed[{}]\" must be [start, end]", i));
    r.removed.emplace_back(removed[i][0], removed[i][1]);
  }
  return r;
}

}  // namespace

nlohmann::json SessionRecordJson(const SessionCheckpoint& c) {
  nlohmann::json regions_json = nlohmann::json::array();
  for (const auto& r : c.regions) {
    regions_json.push_back({{"base_host_virt_addr", r.base_host_virt_addr},
                            {"size", r.size},
                            {"offset", r.offset},
                            {"page_size", r.page_size}});
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
      {"client_start_time", c.client_start_time},
  };
  AddBackingFields(c.spec, &j);
  if (c.spec.socket_ownership.uid) j["socket_uid"] = *c.spec.socket_ownership.uid;
  if (c.spec.socket_ownership.gid) j["socket_gid"] = *c.spec.socket_ownership.gid;
  if (c.spec.expected_peer.uid) j["expected_uid"] = *c.spec.expected_peer.uid;
  if (c.spec.expected_peer.pid) j["expected_pid"] = *c.spec.expected_peer.pid;
  return j;
}

Result<SessionCheckpoint> ParseSessionRecord(const nlohmann::json& j) {
  auto record = ParseRecord(j);
  if (!record.ok()) return record.status().WithContext("session record");
  return record;
}

}  // namespace uffdpager
