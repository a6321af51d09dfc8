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
using PageLoader = std::function<Status(CachedPage& page)>;

// A run of consecutive pages of one namespace, as completion, prefetch and
// fault-around install them.
struct PageRun {
  uint64_t name_space = 0;
  uint64_t first_offset = 0;
  uint64_t page_size = 0;
  uint64_t count = 0;
};

// Reads [offset, offset+length) of the memory file into `out`.
using RangeReader = std::function<Status(uint64_t offset, uint64_t length, uint8_t* out)>;

// What one ReadRun did.
struct RunReadResult {
  uint64_t valid_pages = 0;  // pages [0, valid_pages) of `out` hold the run's bytes
  uint64_t hits = 0;         // pages that came from memory (or another caller's read)
  uint64_t misses = 0;       // pages this call read from the file
};

// Whether a run's pages are kept in the cache after they are read.
enum class RunKeep {
  kShare,  // keep them: other sessions of the snapshot will want them (prefetch, fault-around)
  kNone,   // don't: only this session needs them (completion); hits are still used
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

  // Returns the page for `key`, calling `load` on a miss. If another caller is
  // already loading the same page, waits for that load instead of reading
  // again. `hit` (optional) tells whether the bytes came from memory.
  Result<PageRef> GetOrLoad(const PageKey& key, const PageLoader& load, bool* hit = nullptr);

  // Fills out[0, run.count * run.page_size) with the run's bytes and
  // zero[i] with whether page i is all zeros, for installing the run with
  // one ioctl. Cached pages are copied; pages missing from the cache are read
  // with `read`, one call per contiguous range rather than one per page; with
  // RunKeep::kShare they are claimed first (single flight: a concurrent
  // GetOrLoad or ReadRun of the same page waits for this read) and kept.
  // If a read fails, the pages before the failed range are still valid
  // (result->valid_pages) and the error is returned.
  Status ReadRun(const PageRun& run, RunKeep keep, const RangeReader& read, uint8_t* out, std::vector<uint8_t>* zero,
                 RunReadResult* result);

  PageCacheCounters Counters() const;
  ZeroPageMode zero_pages() const { return zero_pages_; }

 private:
  struct Shard;
  struct RunState;
  Shard& ShardFor(const PageKey& key);
  // Whether a page just read is to be treated as zeros (1) or as data (0).
  uint8_t ZeroFlag(const uint8_t* bytes, size_t size) const;
  // ReadRun's phases, in order (see ReadRun).
  void LookUpRun(RunState& run);
  Status ReadMissingRanges(RunState& run, RunReadResult* result);
  void PublishClaims(RunState& run, RunReadResult* result);
  Status TakeWaitedPages(RunState& run, Status status, RunReadResult* result);

  uint64_t max_bytes_;
  ZeroPageMode zero_pages_;
  std::vector<std::unique_ptr<Shard>> shards_;
  Mutex namespaces_mu_;
  std::unordered_map<CacheKey, uint64_t, CacheKeyHash> namespaces_ GUARDED_BY(namespaces_mu_);
};

}  // namespace uffdpager
