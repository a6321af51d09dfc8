#include "pager/serving/session_backing.h"

#include <fmt/format.h>

#include "common/object_url.h"

namespace uffdpager {

namespace {

// Each layer through the backing path policy, as a single file would be;
// an error names the layer.
Result<std::shared_ptr<const BackingChain>> OpenBackingLayers(const BackingPathPolicy* policy,
                                                              const std::vector<std::string>& paths) {
  std::vector<std::shared_ptr<BackingFile>> layers;
  for (size_t i = 0; i < paths.size(); ++i) {
    auto file = OpenBackingFile(policy, paths[i]);
    if (!file.ok()) return file.status().WithContext(fmt::format("layer {} of \"backing_layers\"", i));
    layers.push_back(std::move(*file));
  }
  return BackingChain::Create(std::move(layers));
}

}  // namespace

Result<std::shared_ptr<const BackingChain>> OpenSessionBacking(const SessionEnvironment& env, SessionSpec* spec) {
  if (!spec->backing_layers.empty()) return OpenBackingLayers(env.backing_policy, spec->backing_layers);
  if (spec->backing_url.empty()) {
    auto file = OpenBackingFile(env.backing_policy, spec->backing_path);
    if (!file.ok()) return file.status();
    return BackingChain::Single(std::move(*file));
  }
  if (env.object_tier == nullptr) {
    return Status::InvalidArgument("\"backing_memory_url\" cannot be served here: " + env.object_tier_absent);
  }
  auto url = ParseObjectUrl(spec->backing_url);
  if (!url.ok()) return url.status();
  auto opened = env.object_tier->Open(*url, spec->backing_etag);
  if (!opened.ok()) return opened.status();
  spec->backing_etag = opened->etag;
  return BackingChain::Single(std::move(opened->file));
}

}  // namespace uffdpager
