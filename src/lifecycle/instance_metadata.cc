#include "lifecycle/instance_metadata.h"

#include <cctype>

namespace uffdpager::lifecycle {

using nlohmann::json;

const char* MemorySourceName(MemorySource s) {
  switch (s) {
    case MemorySource::kBoot: return "boot";
    case MemorySource::kFile: return "file";
    case MemorySource::kUffd: return "uffd";
  }
  return "?";
}

namespace {

Result<MemorySource> ParseMemorySource(const std::string& s) {
  if (s == "boot") return MemorySource::kBoot;
  if (s == "file") return MemorySource::kFile;
  if (s == "uffd") return MemorySource::kUffd;
  return Status::InvalidArgument("unknown memory source \"" + s + "\"");
}

}  // namespace

Status ValidateInstanceName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.';
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
  }
  if (!ok) return Status::InvalidArgument("instance name \"" + name + "\": use 1-64 of [A-Za-z0-9._-], no leading dot");
  return Status::Ok();
}

json InstanceMetadata::ToJson() const {
  json j = {{"schema_version", kMetadataSchemaVersion},
            {"name", name},
            {"state", InstanceStateName(state)},
            {"vcpu_count", vcpu_count},
            {"mem_size_mib", mem_size_mib},
            {"forked_from", forked_from},
            {"one_shot_uffd", one_shot_uffd},
            {"needs_full_snapshot", needs_full_snapshot}};
  if (snapshot) {
    j["snapshot"] = {{"state_file", snapshot->state_file},
                     {"memory_blob", snapshot->memory_blob},
                     {"owns_memory", snapshot->owns_memory}};
  }
  if (vmm) {
    j["vmm"] = {{"pid", vmm->process.pid},
                {"start_time", vmm->process.start_time},
                {"api_socket", vmm->api_socket},
                {"memory_source", MemorySourceName(vmm->memory_source)},
                {"pager_session", vmm->pager_session},
                {"backing_blob", vmm->backing_blob}};
  }
  return j;
}

Result<InstanceMetadata> InstanceMetadata::FromJson(const json& j) {
  try {
    int version = j.at("schema_version").get<int>();
    if (version != kMetadataSchemaVersion) {
      return Status::InvalidArgument("instance metadata schema " + std::to_string(version) + " (this snapctl reads " +
                                     std::to_string(kMetadataSchemaVersion) + ")");
    }
    InstanceMetadata m;
    m.name = j.at("name").get<std::string>();
    auto state = ParseInstanceState(j.at("state").get<std::string>());
    if (!state.ok()) return state.status();
    m.state = *state;
    m.vcpu_count = j.at("vcpu_count").get<uint32_t>();
    m.mem_size_mib = j.at("mem_size_mib").get<uint64_t>();
    m.forked_from = j.value("forked_from", "");
    m.one_shot_uffd = j.at("one_shot_uffd").get<bool>();
    m.needs_full_snapshot = j.at("needs_full_snapshot").get<bool>();
    if (j.contains("snapshot")) {
      const json& s = j.at("snapshot");
      m.snapshot = SnapshotRecord{s.at("state_file").get<std::string>(), s.at("memory_blob").get<std::string>(),
                                  s.at("owns_memory").get<bool>()};
    }
    if (j.contains("vmm")) {
      const json& v = j.at("vmm");
      VmmRecord r;
      r.process = {v.at("pid").get<pid_t>(), v.at("start_time").get<uint64_t>()};
      r.api_socket = v.at("api_socket").get<std::string>();
      auto source = ParseMemorySource(v.at("memory_source").get<std::string>());
      if (!source.ok()) return source.status();
      r.memory_source = *source;
      r.pager_session = v.value("pager_session", "");
      r.backing_blob = v.value("backing_blob", "");
      m.vmm = r;
    }
    return m;
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("instance metadata: ") + e.what());
  }
}

}  // namespace uffdpager::lifecycle
