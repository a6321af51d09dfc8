// DataDirConfig and the lifecycle's enums, as they are spelled in JSON and on
// the command line.
#include <algorithm>
#include <cctype>

#include "common/json_fields.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager {

namespace {

constexpr int kConfigSchemaVersion = 1;
constexpr uint64_t kMaxId = 0xfffffffe;  // (uid_t)-1 is "no change" to chown, never an owner

// The fields of schema 1 (DataDirConfig::FromJson checked the version).
// Absent optional ones keep DataDirConfig's defaults.
Status ReadConfig(const nlohmann::json& j, DataDirConfig* c) {
  JsonFields fields(j);
  std::string backend;
  UFFD_RETURN_IF_ERROR(fields.Read("backend", &backend));
  auto parsed_backend = ParseMemoryBackend(backend);
  if (!parsed_backend.ok()) return parsed_backend.status();
  c->backend = *parsed_backend;
  UFFD_RETURN_IF_ERROR(fields.Read("vmm_binary", &c->vmm_binary));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("vmm_args", &c->vmm_args));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pager_binary", &c->pager_binary));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pager_version_key", &c->pager_version_key));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pager_autostart", &c->pager_autostart));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("pager_cache_bytes", &c->pager_cache_bytes));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("vmm_uid", &c->vmm_uid, kMaxId));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("vmm_gid", &c->vmm_gid, kMaxId));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("max_layers", &c->max_layers, kMaxPagerLayers));
  if (c->max_layers == 0)
    return Status::InvalidArgument("\"max_layers\" must be from 1 to " + std::to_string(kMaxPagerLayers));
  // A config written before compact_depth existed gets the default, within
  // its max_layers.
  c->compact_depth = std::min(c->compact_depth, c->max_layers);
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("compact_depth", &c->compact_depth, kMaxPagerLayers));
  return c->Check();
}

}  // namespace

const char* InstanceStateName(InstanceState state) {
  switch (state) {
    case InstanceState::kCreated: return "Created";
    case InstanceState::kRunning: return "Running";
    case InstanceState::kPaused: return "Paused";
    case InstanceState::kStandby: return "Standby";
    case InstanceState::kStopped: return "Stopped";
    case InstanceState::kUnknown: return "Unknown";
  }
  return "?";
}

Result<InstanceState> ParseInstanceState(const std::string& name) {
  for (auto s : {InstanceState::kCreated, InstanceState::kRunning, InstanceState::kPaused, InstanceState::kStandby,
                 InstanceState::kStopped, InstanceState::kUnknown}) {
    if (name == InstanceStateName(s)) return s;
  }
  return Status::InvalidArgument("unknown instance state \"" + name + "\"");
}

const char* MemoryBackendName(MemoryBackend backend) { return backend == MemoryBackend::kUffd ? "uffd" : "file"; }

Result<MemoryBackend> ParseMemoryBackend(const std::string& name) {
  if (name == "uffd") return MemoryBackend::kUffd;
  if (name == "file") return MemoryBackend::kFile;
  return Status::InvalidArgument("backend must be uffd or file, not \"" + name + "\"");
}

Result<ForkTarget> ParseForkTarget(const std::string& name) {
  std::string n;
  for (char ch : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (n == "running") return ForkTarget::kRunning;
  if (n == "standby") return ForkTarget::kStandby;
  if (n == "stopped") return ForkTarget::kStopped;
  return Status::InvalidArgument("fork target must be running, standby or stopped, not \"" + name + "\"");
}

Status DataDirConfig::Check() const {
  if (compact_depth > max_layers) {
    return Status::InvalidArgument("compact depth " + std::to_string(compact_depth) + " is above max layers " +
                                   std::to_string(max_layers) +
                                   ": a chain never grows past max layers, so it would never be compacted in the "
                                   "background (0 says that; or raise max layers)");
  }
  return Status::Ok();
}

nlohmann::json DataDirConfig::ToJson() const {
  nlohmann::json j = {{"schema_version", kConfigSchemaVersion},
                      {"backend", MemoryBackendName(backend)},
                      {"vmm_binary", vmm_binary},
                      {"vmm_args", vmm_args},
                      {"pager_binary", pager_binary},
                      {"pager_version_key", pager_version_key},
                      {"pager_autostart", pager_autostart},
                      {"pager_cache_bytes", pager_cache_bytes},
                      {"max_layers", max_layers},
                      {"compact_depth", compact_depth}};
  if (vmm_uid) j["vmm_uid"] = *vmm_uid;
  if (vmm_gid) j["vmm_gid"] = *vmm_gid;
  return j;
}

DataDirSettings DataDirSettings::Everything(const DataDirConfig& config) {
  DataDirSettings s;
  s.backend = config.backend;
  s.vmm_binary = config.vmm_binary;
  s.vmm_args = config.vmm_args;
  s.pager_binary = config.pager_binary;
  s.pager_version_key = config.pager_version_key;
  s.pager_autostart = config.pager_autostart;
  s.pager_cache_bytes = config.pager_cache_bytes;
  s.vmm_uid = config.vmm_uid;
  s.vmm_gid = config.vmm_gid;
  s.max_layers = config.max_layers;
  s.compact_depth = config.compact_depth;
  return s;
}

DataDirConfig DataDirSettings::AppliedTo(DataDirConfig config) const {
  if (backend) config.backend = *backend;
  if (vmm_binary) config.vmm_binary = *vmm_binary;
  if (vmm_args) config.vmm_args = *vmm_args;
  if (pager_binary) config.pager_binary = *pager_binary;
  if (pager_version_key) config.pager_version_key = *pager_version_key;
  if (pager_autostart) config.pager_autostart = *pager_autostart;
  if (pager_cache_bytes) config.pager_cache_bytes = *pager_cache_bytes;
  if (vmm_uid) config.vmm_uid = *vmm_uid;
  if (vmm_gid) config.vmm_gid = *vmm_gid;
  if (max_layers) config.max_layers = *max_layers;
  if (compact_depth) {
    config.compact_depth = *compact_depth;
  } else {
    config.compact_depth = std::min(config.compact_depth, config.max_layers);
  }
  return config;
}

Result<DataDirConfig> DataDirConfig::FromJson(const nlohmann::json& j) {
  int version = 0;
  if (Status st = JsonFields(j).Read("schema_version", &version); !st.ok()) return st.WithContext("config");
  if (version != kConfigSchemaVersion) {
    return Status::InvalidArgument("config schema " + std::to_string(version) + " (this snapctl reads " +
                                   std::to_string(kConfigSchemaVersion) + ")");
  }
  DataDirConfig c;
  if (Status st = ReadConfig(j, &c); !st.ok()) return st.WithContext("config");
  return c;
}

nlohmann::json InstanceStatus::ToJson() const {
  nlohmann::json j = details;
  j["name"] = name;
  // The details are metadata this process read or built; a state that is not
  // a string there shows as none.
  std::string recorded_state;
  (void)JsonFields(details).ReadOptional("state", &recorded_state);
  j["recorded_state"] = recorded_state;
  j["state"] = InstanceStateName(state);
  if (!reason.empty()) j["reason"] = reason;
  return j;
}

}  // namespace uffdpager
