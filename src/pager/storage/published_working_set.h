// Published working sets: a compact working set (compact_working_set.h)
// shared through the object store, so that a host that never restored a
// snapshot replays the working set another host recorded, fetched in a few
// large parallel GETs, instead of faulting it in chunk by chunk.
//
// A compact file is bound to the identity of the bytes it copies, not to a
// host: for a chain of object layers that identity is every layer's URL and
// ETag (and its page map's ETag), the same on every host. So the file the
// WorkingSetWriter wrote is what gets published, byte for byte, as the
// object `TOP.workingset` beside the chain's top layer `TOP`; and the file a
// host fetches is checked as its own would be: the header against the
// session's identity, the page list against the header, every block's XXH3
// when it is replayed. A file that fails is removed and the restore goes on
// without it (recording a working set of its own).
//
// Trust: the bytes of a published working set are served as the snapshot's.
// They are trusted as far as the bucket is: whoever may write `TOP.workingset`
// may also write `TOP` itself. A pager started with
// --no-published-working-sets neither fetches nor publishes.
#pragma once

#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/object_url.h"
#include "common/thread_annotations.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/cache_key.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/working_set_store.h"
#include "pager/storage/working_set_writer.h"
#include "uffdpager/status.h"

namespace uffdpager {

// Where the working set of `chain` is published: beside its top layer, if
// every layer is an object (a chain with a local file has an identity no
// other host shares); nullopt otherwise.
std::optional<ObjectUrl> PublishedWorkingSetUrl(const BackingChain& chain);

// Fetches published working sets into the local WorkingSetStore, one fetch
// per cache key at a time (every session that asks while it runs shares
// it), each on a thread of its own so no session waits for it.
//
// Thread-safe. The destructor waits for fetches under way.
class PublishedWorkingSetFetcher {
 public:
  // All three outlive the fetcher.
  PublishedWorkingSetFetcher(ObjectTier* tier, WorkingSetStore* store, WorkingSetWriter* writer)
      : tier_(tier), store_(store), writer_(writer) {}
  ~PublishedWorkingSetFetcher();
  PublishedWorkingSetFetcher(const PublishedWorkingSetFetcher&) = delete;
  PublishedWorkingSetFetcher& operator=(const PublishedWorkingSetFetcher&) = delete;

  // Fetches `url` as the compact working set of `key`, checks it, and saves
  // the record it holds; then WorkingSetStore::Load(key) finds that record
  // and CompactWorkingSet::Open the file. The future's Status: OK; kNotFound
  // if nothing is published there; kInvalidArgument, saying why, for a file
  // that is not a working set of these bytes or is larger than the compact
  // files' bound; the store's errors.
  std::shared_future<Status> Fetch(const CacheKey& key, const ObjectUrl& url) EXCLUDES(mu_);

 private:
  struct Fetching {
    std::shared_future<Status> done;
    std::thread thread;
  };

  Status FetchNow(const CacheKey& key, const ObjectUrl& url);
  // Joins the threads of fetches that are over.
  void ReapFinished() REQUIRES(mu_);

  ObjectTier* const tier_;
  WorkingSetStore* const store_;
  WorkingSetWriter* const writer_;
  Mutex mu_;
  std::map<std::string, Fetching> fetching_ GUARDED_BY(mu_);  // by CacheKey::ToString
};

}  // namespace uffdpager
