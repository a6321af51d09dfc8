// OpenSessionBacking: the bytes a session serves, from whichever source its
// spec names: a local file (through the pager's backing path policy) or an
// object in S3-compatible storage (through the object tier). The one place
// both a create and a resume open them, so both apply the same rules.
#pragma once

#include <memory>

#include "pager/serving/session.h"
#include "pager/storage/backing_chain.h"
#include "uffdpager/status.h"

namespace uffdpager {

// Opens spec->backing_path, or spec->backing_url at the version
// spec->backing_etag names (empty: the object's current version, whose ETag
// is then written into spec->backing_etag), or the chain
// spec->backing_layers, each object among them at the version
// spec->backing_layer_etags names in the same way. A URL on a pager without
// an object store is kInvalidArgument saying why it has none.
// REQUIRES: CheckSessionSpec(*spec) is OK.
Result<std::shared_ptr<const BackingChain>> OpenSessionBacking(const SessionEnvironment& env, SessionSpec* spec);

}  // namespace uffdpager
