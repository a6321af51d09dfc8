#include "pager/storage/page_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <list>
#include <new>

#include "pager/storage/page_allocator.h"
#include "pager/storage/zero_scan.h"

namespace uffdpager {

CachedPage::~CachedPage() { PageAllocator::Default().Free(data_, size_); }

uint8_t* CachedPage::mutable_data() {
  if (data_ == nullptr) {
    data_ = PageAllocator::Default().Allocate(size_);
    if (data_ == nullptr) throw std::bad_alloc();
  }
  return data_;
}

bool CachedPage::CopyTo(uint8_t* out) const {
  if (is_zero()) {
    std::memset(out, 0, size_);
    return true;
  }
  std::memcpy(out, data_, size_);
  return false;
}

void CachedPage::ReleaseIfZero() {
  if (data_ == nullptr || !IsAllZero(data_, size_)) return;
  PageAllocator::Default().Free(data_, size_);
  data_ = nullptr;
}

// A load in progress. Its fields are read and written under the lock of the
// shard that holds it. Blocking waiters (GetOrLoad) wait on the shard's
// load_done; the others registered a LoadWaiter.
struct PageLoad {
  bool done = false;
  bool abandoned = false;  // ended without a page and without an error
  Status status;
  PageRef page;
  std::vector<std::weak_ptr<LoadWaiter>> waiters;
};

size_t PageKeyHash::operator()(const PageKey& k) const {
  uint64_t h = k.name_space * 0x9E3779B97F4A7C15ULL;
  h ^= (k.offset / 4096) + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
  h ^= k.length + (h << 6) + (h >> 2);
  return static_cast<size_t>(h ^ (h >> 29));
}

namespace {

// What a page costs the cache: its buffer plus the bookkeeping of its entry,
// so that even pages with no buffer (zeros) are bounded in number.
constexpr uint64_t kEntryOverheadBytes = 128;
uint64_t Charge(const CachedPage& page) { return page.memory_bytes() + kEntryOverheadBytes; }

}  // namespace

// Outside the anonymous namespace: PageCache::Shard, which has external
// linkage, holds lists of it.
struct CacheEntry {
  PageKey key;
  std::shared_ptr<CachedPage> page;
  uint8_t freq = 0;  // hits since it entered its queue (capped)
  bool in_main = false;
};

// One shard runs S3-FIFO: new pages enter a small probationary FIFO (a tenth
// of the shard); a page hit while there is promoted to the main queue when it
// reaches the head, a page never hit is evicted and remembered as a ghost.
// The main queue is a CLOCK: a page with hits left is reinserted with one
// fewer. A miss on a ghost goes straight to main (it was evicted too early).
// A stream of pages read once therefore only ever churns the small queue.
struct PageCache::Shard {
  using List = std::list<CacheEntry>;

  Mutex mu;
  CondVar load_done{&mu};  // an in-flight load finished
  uint64_t capacity = 0;   // set once, before any use
  uint64_t bytes GUARDED_BY(mu) = 0;
  uint64_t small_bytes GUARDED_BY(mu) = 0;
  List small GUARDED_BY(mu);
  List main GUARDED_BY(mu);
  std::unordered_map<PageKey, List::iterator, PageKeyHash> index GUARDED_BY(mu);
  std::unordered_map<PageKey, std::shared_ptr<PageLoad>, PageKeyHash> inflight GUARDED_BY(mu);
  std::list<PageKey> ghost_order GUARDED_BY(mu);
  std::unordered_map<PageKey, std::list<PageKey>::iterator, PageKeyHash> ghosts GUARDED_BY(mu);
  uint64_t hits GUARDED_BY(mu) = 0;
  uint64_t misses GUARDED_BY(mu) = 0;
  uint64_t evictions GUARDED_BY(mu) = 0;
  uint64_t uncached GUARDED_BY(mu) = 0;
  uint64_t zero_items GUARDED_BY(mu) = 0;

  uint64_t SmallCapacity() const { return std::max<uint64_t>(capacity / 10, 4096); }
  size_t GhostLimit() const { return std::max<size_t>(capacity / 4096, 16); }

  // The cached page for `key`, counted as a hit; null if not cached.
  std::shared_ptr<CachedPage> Lookup(const PageKey& key) REQUIRES(mu) {
    auto it = index.find(key);
    if (it == index.end()) return nullptr;
    CacheEntry& e = *it->second;
    if (e.freq < kMaxCredit) ++e.freq;
    ++hits;
    return e.page;
  }

  // Ends an in-flight load of `key` (whose status is set): keeps `page` if
  // there is room. Returns the waiters to tell; the caller tells them, and
  // signals load_done, after letting go of mu.
  std::vector<std::weak_ptr<LoadWaiter>> FinishLoad(const PageKey& key, PageLoad& load,
                                                    std::shared_ptr<CachedPage> page) REQUIRES(mu) {
    load.done = true;
    if (page) {
      load.page = page;
      if (MakeRoom(Charge(*page))) {
        Insert(key, std::move(page));
      } else {
        ++uncached;
      }
    } else {
      // Without a page and without an error (a run's read that stopped
      // short, no memory to keep it): waiters read the page themselves.
      load.abandoned = load.status.ok();
    }
    inflight.erase(key);
    return std::move(load.waiters);
  }

  void Remember(const PageKey& key) REQUIRES(mu) {
    if (ghosts.count(key)) return;
    ghost_order.push_back(key);
    ghosts.emplace(key, std::prev(ghost_order.end()));
    if (ghosts.size() > GhostLimit()) {
      ghosts.erase(ghost_order.front());
      ghost_order.pop_front();
    }
  }

  bool Forget(const PageKey& key) REQUIRES(mu) {
    auto it = ghosts.find(key);
    if (it == ghosts.end()) return false;
    ghost_order.erase(it->second);
    ghosts.erase(it);
    return true;
  }

  void Evict(List& list, List::iterator it) REQUIRES(mu) {
    bytes -= Charge(*it->page);
    if (!it->in_main) small_bytes -= Charge(*it->page);
    if (it->page->is_zero()) --zero_items;
    index.erase(it->key);
    list.erase(it);
    ++evictions;
  }

  // One step at the head of the small queue. Returns false if the head is in
  // use by a copy (it is rotated, not freed).
  bool StepSmall() REQUIRES(mu) {
    auto it = small.begin();
    if (it->page.use_count() > 1) {
      small.splice(small.end(), small, it);
      return false;
    }
    if (it->freq > 0) {  // hit while on probation: promote
      it->freq = 0;
      it->in_main = true;
      small_bytes -= Charge(*it->page);
      main.splice(main.end(), small, it);
      return true;
    }
    Remember(it->key);
    Evict(small, it);
    return true;
  }

  bool StepMain() REQUIRES(mu) {
    auto it = main.begin();
    if (it->page.use_count() > 1 || it->freq > 0) {
      if (it->freq > 0) --it->freq;
      main.splice(main.end(), main, it);
      return it->page.use_count() <= 1;
    }
    Evict(main, it);
    return true;
  }

  // Frees room for `need` bytes; false if it cannot (the page is larger than
  // the shard, or what is left is in use by copies right now).
  bool MakeRoom(uint64_t need) REQUIRES(mu) {
    if (need > capacity) return false;
    // Every step evicts, promotes, takes a hit away or rotates a page in use;
    // after this many steps without room, everything left is in use.
    size_t budget = (small.size() + main.size()) * (kMaxCredit + 2) + 2;
    while (bytes + need > capacity && budget-- > 0) {
      if (!small.empty() && (small_bytes > SmallCapacity() || main.empty())) {
        StepSmall();
      } else if (!main.empty()) {
        StepMain();
      } else {
        break;
      }
    }
    return bytes + need <= capacity;
  }

  void Insert(const PageKey& key, std::shared_ptr<CachedPage> page) REQUIRES(mu) {
    bool to_main = Forget(key);
    uint64_t size = Charge(*page);
    if (page->is_zero()) ++zero_items;
    List& list = to_main ? main : small;
    list.push_back(CacheEntry{key, std::move(page), 0, to_main});
    index.emplace(key, std::prev(list.end()));
    bytes += size;
    if (!to_main) small_bytes += size;
  }
};

PageCache::PageCache(uint64_t max_bytes, size_t shard_count, ZeroPageMode zero_pages)
    : max_bytes_(max_bytes), zero_pages_(zero_pages) {
  if (shard_count == 0) shard_count = 1;
  for (size_t i = 0; i < shard_count; ++i) {
    shards_.push_back(std::make_unique<Shard>());
    shards_.back()->capacity = max_bytes / shard_count;
  }
}

PageCache::~PageCache() = default;

bool PageCache::IsZeroPage(const uint8_t* bytes, size_t size) const {
  return zero_pages_ == ZeroPageMode::kDetect && IsAllZero(bytes, size);
}

namespace {
void Tell(const std::vector<std::weak_ptr<LoadWaiter>>& waiters) {
  for (const auto& w : waiters) {
    if (auto waiter = w.lock()) waiter->LoadEnded();
  }
}
}  // namespace

uint64_t PageCache::InternNamespace(const CacheKey& key) {
  MutexLock lock(&namespaces_mu_);
  auto [it, inserted] = namespaces_.emplace(key, namespaces_.size() + 1);
  return it->second;
}

PageCache::Shard& PageCache::ShardFor(const PageKey& key) const {
  return *shards_[PageKeyHash{}(key) % shards_.size()];
}

Result<PageRef> PageCache::GetOrLoad(const PageKey& key, const PageFiller& fill, bool* hit) {
  Shard& shard = ShardFor(key);
  std::shared_ptr<PageLoad> pending;
  {
    MutexLock lock(&shard.mu);
    for (;;) {
      if (auto page = shard.Lookup(key)) {
        if (hit) *hit = true;
        return PageRef(std::move(page));
      }
      auto it = shard.inflight.find(key);
      if (it == shard.inflight.end()) break;
      std::shared_ptr<PageLoad> other = it->second;
      while (!other->done) shard.load_done.Wait();
      if (other->abandoned) continue;  // look again; likely load it ourselves
      if (!other->status.ok()) return other->status;
      ++shard.hits;
      if (hit) *hit = true;
      return other->page;
    }
    pending = std::make_shared<PageLoad>();
    shard.inflight.emplace(key, pending);
    ++shard.misses;
  }

  // The read happens without the shard's lock: other pages of the shard are
  // served meanwhile, and faults on this one wait on `pending`.
  std::shared_ptr<CachedPage> page;
  Status status;
  try {
    page = std::make_shared<CachedPage>(key.length);
    status = fill(*page);
    if (status.ok() && zero_pages_ == ZeroPageMode::kDetect) page->ReleaseIfZero();
  } catch (const std::bad_alloc&) {
    status = Status::Internal("out of memory allocating a " + std::to_string(key.length) + "-byte page");
  }

  std::vector<std::weak_ptr<LoadWaiter>> waiters;
  {
    MutexLock lock(&shard.mu);
    pending->status = status;
    waiters = shard.FinishLoad(key, *pending, status.ok() ? page : nullptr);  // waiters take an error as theirs
  }
  shard.load_done.SignalAll();
  Tell(waiters);
  if (hit) *hit = false;
  if (!status.ok()) return status;
  return PageRef(std::move(page));
}

PageClaim PageCache::Claim(const PageKey& key, bool claim, const std::weak_ptr<LoadWaiter>& waiter) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  PageClaim out;
  if (auto page = shard.Lookup(key)) {
    out.kind = PageClaim::Kind::kCached;
    out.page = std::move(page);
    return out;
  }
  if (auto it = shard.inflight.find(key); it != shard.inflight.end()) {
    out.kind = PageClaim::Kind::kWaiting;
    out.load = it->second;
    out.load->waiters.push_back(waiter);
    return out;
  }
  ++shard.misses;
  if (!claim) return out;
  out.kind = PageClaim::Kind::kClaimed;
  out.load = std::make_shared<PageLoad>();
  shard.inflight.emplace(key, out.load);
  return out;
}

PageRef PageCache::Find(const PageKey& key) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  return shard.Lookup(key);
}

bool PageCache::CachedOrLoading(const PageKey& key) const {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  return shard.index.count(key) != 0 || shard.inflight.count(key) != 0;
}

void PageCache::Finish(const PageKey& key, const PageLoadRef& load, std::shared_ptr<CachedPage> page,
                       const Status& status) {
  Shard& shard = ShardFor(key);
  std::vector<std::weak_ptr<LoadWaiter>> waiters;
  {
    MutexLock lock(&shard.mu);
    load->status = status;
    waiters = shard.FinishLoad(key, *load, status.ok() ? std::move(page) : nullptr);
  }
  shard.load_done.SignalAll();
  Tell(waiters);
}

LoadOutcome PageCache::Outcome(const PageKey& key, const PageLoadRef& load, PageRef* page, Status* error) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  if (!load->done) return LoadOutcome::kLoading;
  if (load->abandoned) return LoadOutcome::kGone;
  if (!load->status.ok()) {
    *error = load->status;
    return LoadOutcome::kFailed;
  }
  ++shard.hits;
  *page = load->page;
  return LoadOutcome::kLoaded;
}

PageCacheCounters PageCache::Counters() const {
  PageCacheCounters c;
  c.max_bytes = max_bytes_;
  for (const auto& shard : shards_) {
    MutexLock lock(&shard->mu);
    c.bytes += shard->bytes;
    c.items += shard->index.size();
    c.hits += shard->hits;
    c.misses += shard->misses;
    c.evictions += shard->evictions;
    c.uncached_loads += shard->uncached;
    c.zero_items += shard->zero_items;
  }
  return c;
}

}  // namespace uffdpager
