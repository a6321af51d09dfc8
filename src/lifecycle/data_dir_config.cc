// DataDirConfig and the lifecycle's enums, as they are spelled in JSON and on
// the command line.
#include <cctype>

#include "uffdpager/lifecycle.h"

namespace uffdpager {

namespace {
constexpr int kConfigSchemaVersion = 1;
}

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
  try {
    int version = j.at("schema_version").get<int>();
    if (version != kConfigSchemaVersion) {
      return Status::InvalidArgument("config schema " + std::to_string(version) + " (this snapctl reads " +
                                     std::to_string(kConfigSchemaVersion) + ")");
    }
    DataDirConfig c;
    auto backend = ParseMemoryBackend(j.at("backend").get<std::string>());
    if (!backend.ok()) return backend.status();
    c.backend = *backend;
    c.vmm_binary = j.at("vmm_binary").get<std::string>();
    c.vmm_args = j.value("vmm_args", std::vector<std::string>{});
    c.pager_binary = j.value("pager_binary", "");
    c.pager_version_key = j.value("pager_version_key", "default");
    c.pager_autostart = j.value("pager_autostart", true);
    c.pager_cache_bytes = j.value("pager_cache_bytes", uint64_t{1} << 30);
    return c;
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(std::string("config: ") + e.what());
  }
}

nlohmann::json InstanceStatus::ToJson() const {
  nlohmann::json j = details;
  j["name"] = name;
  j["recorded_state"] = details.value("state", "");
  j["state"] = InstanceStateName(state);
  if (!reason.empty()) j["reason"] = reason;
  return j;
}

}  // namespace uffdpager
