// ObjectTier: snapshots in S3-compatible storage, pager-wide. It binds a
// session to one version of an object (HEAD: size and ETag), and gives it a
// BackingFile whose bytes come from that version's ObjectChunkStore (one per
// URL + ETag, shared by every session of it), fetched through one
// ObjectRangeFetcher for the whole pager.
//
// The store's configuration (endpoint, region, credentials) comes from the
// AWS environment at pager start (object_store_config.h); no message of this
// tier holds a credential.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/layer_page_map.h"
#include "common/mutex.h"
#include "common/object_range_fetcher.h"
#include "common/object_store_client.h"
#include "common/object_store_config.h"
#include "common/object_url.h"
#include "common/thread_annotations.h"
#include "pager/metrics/latency_histogram.h"
#include "pager/storage/backing_file.h"
#include "pager/storage/object_chunk_store.h"
#include "uffdpager/status.h"

namespace uffdpager {

// What /stats and /metrics show of the tier.
struct ObjectTierStats {
  uint64_t requests = 0;    // requests to the store (attempts: HEADs and ranged GETs)
  uint64_t bytes = 0;       // bytes received by ranged GETs that succeeded
  uint64_t retries = 0;     // attempts that were retries
  uint64_t errors = 0;      // HEADs and chunk fetches that failed
  uint64_t chunk_hits = 0;  // chunks asked for that the disk tier had
  uint64_t chunk_misses = 0;
  uint64_t chunks_reused = 0;  // chunks of an earlier pager process, XXH3 checked
  uint64_t chunks_damaged = 0;
  uint64_t evictions = 0;  // object versions removed from disk to stay within the bound
  // How long each ranged GET that succeeded took (its last attempt).
  LatencyHistogram::Snapshot fetch_latency;
};

// Each counter of ObjectTierStats as /stats names it (/metrics adds
// "uffdpager_" and "_total"), with what it means.
struct ObjectTierStatField {
  uint64_t ObjectTierStats::*field;
  const char* name;
  const char* help;
};
inline constexpr ObjectTierStatField kObjectTierStatFields[] = {
    {&ObjectTierStats::requests, "object_store_requests", "Requests to the object store (HEADs and ranged GETs)."},
    {&ObjectTierStats::bytes, "object_store_bytes", "Bytes received from the object store."},
    {&ObjectTierStats::retries, "object_store_retries", "Object store requests retried."},
    {&ObjectTierStats::errors, "object_store_errors", "HEADs and chunk fetches that failed."},
    {&ObjectTierStats::chunk_hits, "object_chunk_hits", "Object chunks asked for that the disk tier had."},
    {&ObjectTierStats::chunk_misses, "object_chunk_misses", "Object chunks fetched from the store."},
    {&ObjectTierStats::chunks_reused, "object_chunks_reused",
     "Object chunks of an earlier pager process reused after their XXH3 was checked."},
    {&ObjectTierStats::chunks_damaged, "object_chunks_damaged",
     "Object chunks on disk whose XXH3 failed (fetched again)."},
    {&ObjectTierStats::evictions, "object_cache_evictions",
     "Object versions removed from the disk tier to stay within --object-cache-max-bytes."},
};

class ObjectTier {
 public:
  // Ranged GETs in flight at once, pager-wide.
  static constexpr int kMaxInFlight = 16;
  // Downloads of whole objects (Download) run on connections of their own,
  // this many GETs of kDownloadPieceBytes at once.
  static constexpr int kMaxDownloadsInFlight = 8;
  static constexpr uint64_t kDownloadPieceBytes = 8ULL << 20;

  // Starts the fetcher; chunk files go under `cache_dir` (created), which
  // is kept within `max_bytes` of disk (0: no bound) by removing whole
  // object versions no session uses, least recently written first. Versions
  // in use are never removed (a read of a chunk it made present must not
  // find a hole), so the bound is exceeded while they need more.
  // A fetch reads up to `readahead_chunks` chunks ahead (ObjectChunkStore).
  static Result<std::unique_ptr<ObjectTier>> Start(
      std::string cache_dir, ObjectStoreConfig config, uint64_t max_bytes = 0,
      uint64_t readahead_chunks = ObjectChunkStore::kDefaultReadaheadChunks);
  ~ObjectTier();

  struct Opened {
    std::shared_ptr<BackingFile> file;
    std::string etag;  // the version the file is bound to
  };
  // The object's current version (or, with a non-empty `pinned_etag`, that
  // version, kConflict if the object is another now) as a BackingFile.
  // Where the object has a page map beside it (LayerPageMap) the file's data
  // is what the map names, and its identity includes the map's version; a
  // map written for another version of the object, or one that cannot be
  // read, is kInvalidArgument naming it. Errors as object_exchange.h
  // classifies them, naming the object.
  Result<Opened> Open(const ObjectUrl& url, const std::string& pinned_etag) EXCLUDES(mu_);

  // Whole objects that lie beside snapshots (published working sets):
  // Download writes the object `url` into `fd` (resized to it) with ranged
  // GETs in parallel, each pinned to the version its HEAD found, on
  // connections of their own, so a bulk download never queues ahead of a
  // demand fault's chunk. An object larger than `max_bytes` is
  // kInvalidArgument (nothing fetched); errors as object_exchange.h
  // classifies them (kNotFound: no such object). The bytes count in Stats.
  Result<ObjectInfo> Download(const ObjectUrl& url, uint64_t max_bytes, int fd);
  // Stores the first `size` bytes of `fd` as the object `url`.
  Result<ObjectInfo> Upload(const ObjectUrl& url, int fd, uint64_t size);

  ObjectTierStats Stats() const;
  const ObjectStoreConfig& config() const { return client_.config(); }

 private:
  ObjectTier(std::string cache_dir, ObjectStoreConfig config, uint64_t max_bytes, uint64_t readahead_chunks);
  // Starts both fetchers, which report to fetch_latency_.
  Status StartFetchers();
  // Removes unused versions (files of earlier processes included) until the
  // directory is within max_bytes_ or only versions in use are left.
  void Trim() EXCLUDES(mu_);
  // A chunk store wrote `bytes`: trims once the directory may be over the
  // bound (by what the last trim found plus what was written since).
  void Grew(uint64_t bytes) EXCLUDES(mu_);
  // A page map and the ETag of its own version.
  struct PageMapVersion {
    LayerPageMap map;
    std::string etag;
  };
  // The page map beside `layer` (none if there is no such object), checked
  // against the layer's version.
  Result<std::optional<PageMapVersion>> ReadPageMap(const ObjectUrl& layer, const ObjectInfo& layer_info);
  // The chunk store of `object`, made on first use.
  Result<std::shared_ptr<ObjectChunkStore>> StoreFor(const ObjectVersion& object) EXCLUDES(mu_);

  const std::string cache_dir_;
  const uint64_t max_bytes_;
  const uint64_t readahead_chunks_;
  ObjectStoreClient client_;
  LatencyHistogram fetch_latency_;  // before the fetchers, whose threads write it
  std::unique_ptr<ObjectRangeFetcher> fetcher_;
  std::unique_ptr<ObjectRangeFetcher> download_fetcher_;
  ObjectTierCounters counters_;
  std::atomic<uint64_t> head_errors_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> trimmed_bytes_{0};     // on disk when the last trim ended
  std::atomic<uint64_t> bytes_since_trim_{0};  // written by chunk stores since it began
  Mutex mu_;
  // Object versions opened since start and not evicted; one whose only
  // holder is this map is not in use.
  std::map<std::string, std::shared_ptr<ObjectChunkStore>> stores_ GUARDED_BY(mu_);
};

}  // namespace uffdpager
