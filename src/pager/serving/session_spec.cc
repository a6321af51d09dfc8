#include "pager/serving/session_spec.h"

#include <algorithm>

namespace uffdpager {

void AddBackingFields(const SessionSpec& spec, nlohmann::json* j) {
  if (!spec.backing_url.empty()) {
    (*j)["backing_memory_url"] = spec.backing_url;
    (*j)["backing_etag"] = spec.backing_etag;
  }
  if (spec.backing_layers.empty()) return;
  (*j)["backing_layers"] = spec.backing_layers;
  const auto& etags = spec.backing_layer_etags;
  if (std::any_of(etags.begin(), etags.end(), [](const std::string& e) { return !e.empty(); })) {
    (*j)["backing_layer_etags"] = etags;
  }
}

}  // namespace uffdpager
