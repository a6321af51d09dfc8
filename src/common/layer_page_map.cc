#include "common/layer_page_map.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common/json_fields.h"

namespace uffdpager {

namespace {

constexpr const char* kFormat = "uffdpager-layer-page-map";
constexpr uint64_t kVersion = 1;

}  // namespace

ObjectUrl LayerPageMap::LocationOf(const ObjectUrl& layer) { return ObjectUrl{layer.bucket, layer.key + ".pagemap"}; }

std::string LayerPageMap::Encode() const {
  nlohmann::json extents_json = nlohmann::json::array();
  for (const auto& [start, end] : extents) extents_json.push_back({start, end});
  nlohmann::json j = {{"format", kFormat},
                      {"version", kVersion},
                      {"layer_etag", layer_etag},
                      {"layer_size", layer_size},
                      {"extents", std::move(extents_json)}};
  return j.dump() + "\n";
}

Result<LayerPageMap> LayerPageMap::Parse(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("the page map is not JSON");
  JsonFields fields(j);
  std::string format;
  uint64_t version = 0;
  UFFD_RETURN_IF_ERROR(fields.Read("format", &format));
  if (format != kFormat) {
    return Status::InvalidArgument(fmt::format("the page map's \"format\" is \"{}\", not \"{}\"", format, kFormat));
  }
  UFFD_RETURN_IF_ERROR(fields.Read("version", &version));
  if (version != kVersion) {
    return Status::InvalidArgument(
        fmt::format("the page map is version {}; this pager reads version {}", version, kVersion));
  }
  LayerPageMap map;
  std::vector<std::vector<uint64_t>> extents;
  UFFD_RETURN_IF_ERROR(fields.Read("layer_etag", &map.layer_etag));
  UFFD_RETURN_IF_ERROR(fields.Read("layer_size", &map.layer_size));
  UFFD_RETURN_IF_ERROR(fields.Read("extents", &extents));
  if (map.layer_etag.empty()) return Status::InvalidArgument("the page map's \"layer_etag\" is empty");
  uint64_t previous_end = 0;
  for (size_t i = 0; i < extents.size(); ++i) {
    const auto& e = extents[i];
    if (e.size() != 2) {
      return Status::InvalidArgument(fmt::format("page map extent {} is not a [start, end] pair", i));
    }
    if (e[0] >= e[1] || e[1] > map.layer_size || (i > 0 && e[0] < previous_end)) {
      return Status::InvalidArgument(
          fmt::format("page map extent {} [{}, {}) is empty, past the layer's {} bytes, or overlaps or precedes the "
                      "one before it (extents are sorted, disjoint [start, end) ranges)",
                      i, e[0], e[1], map.layer_size));
    }
    previous_end = e[1];
    map.extents.emplace_back(e[0], e[1]);
  }
  return map;
}

}  // namespace uffdpager
