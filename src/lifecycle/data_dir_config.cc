// DataDirConfig and the lifecycle's enums, as they are spelled in JSON and on
// the command line.
#include <cctype>

#include "common/json_fields.h"
#include "uffdpager/lifecycle.h"

namespace uffdpager {

namespace {

constexpr int kConfigSchemaVersion = 1;

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
  return Status::Ok();
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

nlohmann::json DataDirConfig::ToJson() const {
  return {{"schema_version", kConfigSchemaVersion},
          {"backend", MemoryBackendName(backend)},
          {"vmm_binary", vmm_binary},
          {"vmm_args", vmm_args},
          {"pager_binary", pager_binary},
          {"pager_version_key", pager_version_key},
          {"pager_autostart", pager_autostart},
          {"pager_cache_bytes", pager_cache_bytes}};
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
