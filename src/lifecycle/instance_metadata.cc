#include "lifecycle/instance_metadata.h"

#include <cctype>

#include "common/json_fields.h"

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

bool HasObjectLayer(const LayerChain& chain) {
  for (const auto& layer : chain) {
    if (IsObjectLayer(layer)) return true;
  }
  return false;
}

namespace {

Result<MemorySource> ParseMemorySource(const std::string& s) {
  if (s == "boot") return MemorySource::kBoot;
  if (s == "file") return MemorySource::kFile;
  if (s == "uffd") return MemorySource::kUffd;
  return Status::InvalidArgument("unknown memory source \"" + s + "\"");
}

// A layer is an object URL, or a blob id, which becomes a path under
// DATA/blobs/: a plain file name only.
Status ValidateLayer(const std::string& id, const std::string& field) {
  if (IsObjectLayer(id)) return ParseObjectUrl(id).status().WithContext(field);
  bool ok = !id.empty() && id.size() <= 128 && id[0] != '.';
  for (char c : id) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
  }
  if (!ok) return Status::InvalidArgument(field + " names blob \"" + id + "\", which is not a plain file name");
  return Status::Ok();
}

// A chain of blob ids: schema 2's array `chain_field`, or schema 1's single
// `blob_field` as a chain of one. Absent in both: empty.
Status ReadChain(const JsonFields& fields, int version, const char* chain_field, const char* blob_field,
                 LayerChain* out) {
  if (version == 1) {
    std::string blob;
    UFFD_RETURN_IF_ERROR(fields.ReadOptional(blob_field, &blob));
    *out = blob.empty() ? LayerChain() : LayerChain{blob};
  } else {
    UFFD_RETURN_IF_ERROR(fields.ReadOptional(chain_field, out));
  }
  for (const auto& id : *out) UFFD_RETURN_IF_ERROR(ValidateLayer(id, chain_field));
  return Status::Ok();
}

// The fields of schema `version` (1 or 2; InstanceMetadata::FromJson
// checked it). The two differ only in how memory is named.
Status ReadMetadata(const json& j, int version, InstanceMetadata* m) {
  JsonFields fields(j);
  UFFD_RETURN_IF_ERROR(fields.Read("name", &m->name));
  std::string state;
  UFFD_RETURN_IF_ERROR(fields.Read("state", &state));
  auto parsed_state = ParseInstanceState(state);
  if (!parsed_state.ok()) return parsed_state.status();
  m->state = *parsed_state;
  UFFD_RETURN_IF_ERROR(fields.Read("vcpu_count", &m->vcpu_count));
  UFFD_RETURN_IF_ERROR(fields.Read("mem_size_mib", &m->mem_size_mib));
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("forked_from", &m->forked_from));
  UFFD_RETURN_IF_ERROR(fields.Read("one_shot_uffd", &m->one_shot_uffd));
  UFFD_RETURN_IF_ERROR(fields.Read("needs_full_snapshot", &m->needs_full_snapshot));
  std::optional<json> snapshot;
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("snapshot", &snapshot));
  if (snapshot) {
    JsonFields s(*snapshot, "snapshot");
    SnapshotRecord record;
    UFFD_RETURN_IF_ERROR(s.Read("state_file", &record.state_file));
    UFFD_RETURN_IF_ERROR(ReadChain(s, version, "memory_layers", "memory_blob", &record.memory_layers));
    if (record.memory_layers.empty()) return Status::InvalidArgument("the snapshot names no memory");
    UFFD_RETURN_IF_ERROR(s.Read("owns_memory", &record.owns_memory));
    m->snapshot = record;
  }
  std::optional<json> vmm;
  UFFD_RETURN_IF_ERROR(fields.ReadOptional("vmm", &vmm));
  if (vmm) {
    JsonFields v(*vmm, "vmm");
    VmmRecord r;
    UFFD_RETURN_IF_ERROR(v.Read("pid", &r.process.pid));
    UFFD_RETURN_IF_ERROR(v.Read("start_time", &r.process.start_time));
    UFFD_RETURN_IF_ERROR(v.Read("api_socket", &r.api_socket));
    std::string source;
    UFFD_RETURN_IF_ERROR(v.Read("memory_source", &source));
    auto parsed_source = ParseMemorySource(source);
    if (!parsed_source.ok()) return parsed_source.status();
    r.memory_source = *parsed_source;
    UFFD_RETURN_IF_ERROR(v.ReadOptional("pager_session", &r.pager_session));
    UFFD_RETURN_IF_ERROR(ReadChain(v, version, "backing_layers", "backing_blob", &r.backing_layers));
    m->vmm = r;
  }
  return Status::Ok();
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
                     {"memory_layers", snapshot->memory_layers},
                     {"owns_memory", snapshot->owns_memory}};
  }
  if (vmm) {
    j["vmm"] = {{"pid", vmm->process.pid},
                {"start_time", vmm->process.start_time},
                {"api_socket", vmm->api_socket},
                {"memory_source", MemorySourceName(vmm->memory_source)},
                {"pager_session", vmm->pager_session},
                {"backing_layers", vmm->backing_layers}};
  }
  return j;
}

Result<InstanceMetadata> InstanceMetadata::FromJson(const json& j) {
  int version = 0;
  if (Status st = JsonFields(j).Read("schema_version", &version); !st.ok()) return st.WithContext("instance metadata");
  if (version != 1 && version != kMetadataSchemaVersion) {
    return Status::InvalidArgument("instance metadata schema " + std::to_string(version) +
                                   " (this snapctl reads 1 to " + std::to_string(kMetadataSchemaVersion) + ")");
  }
  InstanceMetadata m;
  if (Status st = ReadMetadata(j, version, &m); !st.ok()) return st.WithContext("instance metadata");
  return m;
}

}  // namespace uffdpager::lifecycle
