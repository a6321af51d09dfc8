#include "pager/serving/session_backing.h"

#include <fmt/format.h>

#include "common/object_url.h"

namespace uffdpager {

namespace {

// An object through the object tier, at the version `*etag` names (empty:
// its current one, whose ETag is then written into *etag).
Result<std::shared_ptr<BackingFile>> OpenObject(const SessionEnvironment& env, const std::string& field,
                                                const std::string& text, std::string* etag) {
  if (env.object_tier == nullptr) {
    return Status::InvalidArgument("\"" + field + "\" cannot be served here: " + env.object_tier_absent);
  }
  auto url = ParseObjectUrl(text);
  if (!url.ok()) return url.status();
  auto opened = env.object_tier->Open(*url, *etag);
  if (!opened.ok()) return opened.status();
  *etag = opened->etag;
  return std::move(opened->file);
}

// Each layer as a single file or object would be opened (files through the
// backing path policy, objects at their pinned versions); an error names the
// layer.
Result<std::shared_ptr<const BackingChain>> OpenBackingLayers(const SessionEnvironment& env, SessionSpec* spec) {
  const std::vector<std::string>& names = spec->backing_layers;
  std::vector<std::string>& etags = spec->backing_layer_etags;
  etags.resize(names.size());
  std::vector<std::shared_ptr<BackingFile>> layers;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string field = fmt::format("backing_layers[{}]", i);
    auto file = IsObjectUrl(names[i]) ? OpenObject(env, field, names[i], &etags[i])
                                      : OpenBackingFile(env.backing_policy, names[i]);
    if (!file.ok()) return file.status().WithContext(fmt::format("layer {} of \"backing_layers\"", i));
    layers.push_back(std::move(*file));
  }
  return BackingChain::Create(std::move(layers));
}

}  // namespace

Result<std::shared_ptr<const BackingChain>> OpenSessionBacking(const SessionEnvironment& env, SessionSpec* spec) {
  if (!spec->backing_layers.empty()) return OpenBackingLayers(env, spec);
  auto file = spec->backing_url.empty() ? OpenBackingFile(env.backing_policy, spec->backing_path)
                                        : OpenObject(env, "backing_memory_url", spec->backing_url, &spec->backing_etag);
  if (!file.ok()) return file.status();
  return BackingChain::Single(std::move(*file));
}

}  // namespace uffdpager
