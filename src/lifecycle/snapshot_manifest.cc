#include "lifecycle/snapshot_manifest.h"

#include <nlohmann/json.hpp>

#include "common/json_fields.h"
#include "common/object_url.h"

namespace uffdpager::lifecycle {

namespace {

using nlohmann::json;

json ObjectJson(const PublishedObject& o) { return {{"url", o.url}, {"etag", o.etag}, {"size", o.size}}; }

Status ReadObject(const json& j, const std::string& path, PublishedObject* out) {
  JsonFields fields(j, path);
  UFFD_RETURN_IF_ERROR(fields.Read("url", &out->url));
  UFFD_RETURN_IF_ERROR(fields.Read("etag", &out->etag));
  UFFD_RETURN_IF_ERROR(fields.Read("size", &out->size));
  if (out->etag.empty()) return Status::InvalidArgument(path + ".etag is empty");
  return ParseObjectUrl(out->url).status().WithContext(path + ".url");
}

}  // namespace

std::string SnapshotManifest::Encode() const {
  json layer_list = json::array();
  for (const auto& l : layers) layer_list.push_back(ObjectJson(l));
  json j = {{"format", kManifestFormat}, {"version", kManifestVersion},  {"name", name},
            {"vcpu_count", vcpu_count},  {"mem_size_mib", mem_size_mib}, {"state_file", ObjectJson(state_file)},
            {"layers", layer_list}};
  return j.dump(2) + "\n";
}

Result<SnapshotManifest> SnapshotManifest::Parse(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::InvalidArgument("a snapshot manifest must be JSON");
  JsonFields fields(j);
  std::string format;
  int version = 0;
  UFFD_RETURN_IF_ERROR(fields.Read("format", &format));
  UFFD_RETURN_IF_ERROR(fields.Read("version", &version));
  if (format != kManifestFormat || version != kManifestVersion) {
    return Status::InvalidArgument("not a snapshot manifest this snapctl reads (format \"" + format + "\" version " +
                                   std::to_string(version) + "; it reads \"" + kManifestFormat + "\" version " +
                                   std::to_string(kManifestVersion) + ")");
  }
  SnapshotManifest m;
  UFFD_RETURN_IF_ERROR(fields.Read("name", &m.name));
  UFFD_RETURN_IF_ERROR(fields.Read("vcpu_count", &m.vcpu_count));
  UFFD_RETURN_IF_ERROR(fields.Read("mem_size_mib", &m.mem_size_mib));
  json state_file, layers;
  UFFD_RETURN_IF_ERROR(fields.Read("state_file", &state_file));
  UFFD_RETURN_IF_ERROR(ReadObject(state_file, "state_file", &m.state_file));
  UFFD_RETURN_IF_ERROR(fields.Read("layers", &layers));
  if (!layers.is_array() || layers.empty()) return Status::InvalidArgument("\"layers\" must be a non-empty array");
  for (size_t i = 0; i < layers.size(); ++i) {
    PublishedObject layer;
    UFFD_RETURN_IF_ERROR(ReadObject(layers[i], "layers[" + std::to_string(i) + "]", &layer));
    m.layers.push_back(layer);
  }
  return m;
}

}  // namespace uffdpager::lifecycle
