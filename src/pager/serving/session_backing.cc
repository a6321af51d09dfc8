#include "pager/serving/session_backing.h"

#include "common/object_url.h"

namespace uffdpager {

Result<std::shared_ptr<BackingFile>> OpenSessionBacking(const SessionEnvironment& env, SessionSpec* spec) {
  if (spec->backing_url.empty()) return OpenBackingFile(env.backing_policy, spec->backing_path);
  if (env.object_tier == nullptr) {
    return Status::InvalidArgument("\"backing_memory_url\" cannot be served here: " + env.object_tier_absent);
  }
  auto url = ParseObjectUrl(spec->backing_url);
  if (!url.ok()) return url.status();
  auto opened = env.object_tier->Open(*url, spec->backing_etag);
  if (!opened.ok()) return opened.status();
  spec->backing_etag = opened->etag;
  return std::move(opened->file);
}

}  // namespace uffdpager
