// PageCache: the host-wide cache of snapshot pages shared by every session.
//
// Keyed by (namespace, file offset, length), where a namespace stands for one
// CacheKey (a name bound to the identity of its bytes). Bounded by a byte budget split over
// shards, each with its own lock, so sessions faulting different pages do not
// contend. Eviction is S3-FIFO (a small probationary FIFO in front of a main
// CLOCK queue, with ghost keys): a page only one restore faulted leaves from
// the small queue, while pages that several restores fault are promoted and
// stay, however long the stream of pages read once. A page still referenced
// by a copy in progress is never freed under it (PageRef keeps it alive) and
// eviction passes it by.
// Concurrent misses on one page read the backing file once.
//
// Thread-safe. Each shard's lock guards its queues, index and in-flight
// loads; no lock is held while a page is read or copied, and no call holds
// two shards' locks at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "pager/storage/cache_key.h"
#include "uffdpager/status.h"

namespace uffdpager {

// One page of a memory file: a page-aligned buffer, or, for a page that is
// all zeros, no buffer at all (zero pages are installed with UFFDIO_ZEROPAGE
// and cost the cache nothing but their entry). Immutable once loaded.
class CachedPage {
 public:
  explicit CachedPage(size_t size) : size_(size) {}
  ~CachedPage();
  CachedPage(const CachedPage&) = delete;
  CachedPage& operator=(const CachedPage&) = delete;

  bool is_zero() const { return data_ == nullptr; }
  const uint8_t* data() const { return data_; }  // null when is_zero()
  size_t size() const { return size_; }          // the page's length
  size_t memory_bytes() const { return data_ ? size_ : 0; }

  // While loading: the buffer to fill (allocated on first call). A loader
  // that knows the page is zero (a hole) never calls it.
  uint8_t* mutable_data();
  // After loading: drops the buffer if every byte is zero.
  void ReleaseIfZero();
  // Writes the page's bytes (zeros if it has no buffer) to `out`; true if
  // the page is all zeros.
  bool CopyTo(uint8_t* out) const;

 private:
  uint8_t* data_ = nullptr;
  size_t size_;
};

using PageRef = std::shared_ptr<const CachedPage>;

struct PageKey {
  uint64_t name_space = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const PageKey&) const = default;
};

struct PageKeyHash {
  size_t operator()(const PageKey& k) const;
};

struct PageCacheCounters {
  uint64_t bytes = 0;
  uint64_t max_bytes = 0;
  uint64_t items = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t uncached_loads = 0;  // pages served without being kept (no room)
  uint64_t zero_items = 0;      // cached pages that are all zeros (no buffer)
};

// How the cache fills a page on a miss: write the key's `length` bytes into
// page.mutable_data(), or leave it untouched if the page is known to be zero
// (only with ZeroPageMode::kDetect).
using PageFiller = std::function<Status(CachedPage& page)>;

// One page's load in progress, shared by the caller that claimed it (which
// must finish it) and callers that wait for it. Opaque outside the cache.
struct PageLoad;
using PageLoadRef = std::shared_ptr<PageLoad>;

// Told when a load it waits for ends. Called by the thread that ended the
// load, with no cache lock held: it must be cheap (a write to an eventfd)
// and must not call into the cache.
class LoadWaiter {
 public:
  virtual ~LoadWaiter() = default;
  virtual void LoadEnded() = 0;
};

// What Claim found.
struct PageClaim {
  enum class Kind {
    kCached,     // `page` holds the bytes
    kClaimed,    // the caller loads it and must Finish(`load`)
    kWaiting,    // another caller loads it: look at `load` once the waiter is told
    kUnclaimed,  // not cached, not loading, and not claimed (claim == false): read it, share nothing
  };
  Kind kind = Kind::kUnclaimed;
  PageRef page;
  PageLoadRef load;
};

// What a load someone else claimed gave, once it ended.
enum class LoadOutcome {
  kLoading,  // not ended yet
  kLoaded,   // *page holds the bytes
  kFailed,   // the read failed: *error says why
  kGone,     // ended without a page (a run read that stopped short): load it yourself
};

// What the cache does with pages that are all zeros.
enum class ZeroPageMode {
  // Find them (holes without reading, data by scanning it once): they keep no
  // buffer, and sessions install them with UFFDIO_ZEROPAGE (lone ones amid
  // data are copied with their neighbours).
  kDetect,
  // Treat them as data: read, kept and copied like any page. Only there to
  // measure what detection is worth.
  kCopy,
};

class PageCache {
 public:
  static constexpr uint8_t kMaxCredit = 3;  // hits a main-queue page can bank

  explicit PageCache(uint64_t max_bytes, size_t shard_count = 16, ZeroPageMode zero_pages = ZeroPageMode::kDetect);
  ~PageCache();

  // A stable number for `key`, the namespace of its pages.
  uint64_t InternNamespace(const CacheKey& key) EXCLUDES(namespaces_mu_);

  // Returns the page for `key`, calling `fill` on a miss. If another caller
  // is already loading the same page, waits for that load instead of reading
  // again. `hit` (optional) tells whether the bytes came from memory.
  // Blocks; the fault engine uses Claim and Finish instead.
  Result<PageRef> GetOrLoad(const PageKey& key, const PageFiller& fill, bool* hit = nullptr);

  // Single flight without blocking. Looks `key` up: a hit is kCached. A page
  // another caller is loading is kWaiting, and `waiter` (if still alive then)
  // is told when that load ends. Otherwise, with `claim`, the caller now
  // loads the page (kClaimed) and anyone else who asks waits for it; without,
  // kUnclaimed. Counts a hit or a miss.
  PageClaim Claim(const PageKey& key, bool claim, const std::weak_ptr<LoadWaiter>& waiter);
  // The page for `key` if it is cached now (a hit), else null, counting
  // nothing: the caller then loads it through Claim, which counts the miss.
  PageRef Find(const PageKey& key);
  // Whether `key` is cached now, or a load of it is in flight. Counts
  // nothing: for planning, not serving.
  bool CachedOrLoading(const PageKey& key) const;
  // Ends a load this caller claimed: keeps `page` (if there is room) for
  // everyone; a null `page` with an OK `status` gives the load up (waiters
  // load the page themselves); an error is what the waiters get.
  void Finish(const PageKey& key, const PageLoadRef& load, std::shared_ptr<CachedPage> page, const Status& status);
  // What a load this caller waits for gave (kWaiting claims); *page and
  // *error are set for kLoaded and kFailed. Counts a hit for kLoaded.
  LoadOutcome Outcome(const PageKey& key, const PageLoadRef& load, PageRef* page, Status* error);

  PageCacheCounters Counters() const;
  ZeroPageMode zero_pages() const { return zero_pages_; }
  // Whether `bytes` (a page just read) is to be treated as zeros.
  bool IsZeroPage(const uint8_t* bytes, size_t size) const;

 private:
  struct Shard;
  Shard& ShardFor(const PageKey& key) const;

  uint64_t max_bytes_;
  ZeroPageMode zero_pages_;
  std::vector<std::unique_ptr<Shard>> shards_;
  Mutex namespaces_mu_;
  std::unordered_map<CacheKey, uint64_t, CacheKeyHash> namespaces_ GUARDED_BY(namespaces_mu_);
};

}  // namespace uffdpager
