#include "pager/storage/page_cache.h"

#include "pager/storage/page_allocator.h"
#include "pager/storage/zero_scan.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <list>
#include <new>

namespace uffdpager {

CachedPage::~CachedPage() { PageAllocator::Default().Free(data_, size_); }

uint8_t* CachedPage::mutable_data() {
  if (data_ == nullptr) {
    data_ = PageAllocator::Default().Allocate(size_);
    if (data_ == nullptr) throw std::bad_alloc();
  }
  return data_;
}

namespace {

// Writes a cached page's bytes (zeros if it has none) to `out`; returns
// whether the page is all zeros.
uint8_t CopyOut(const CachedPage& page, uint8_t* out) {
  if (page.is_zero()) {
    std::memset(out, 0, page.size());
    return 1;
  }
  std::memcpy(out, page.data(), page.size());
  return 0;
}

}  // namespace

void CachedPage::ReleaseIfZero() {
  if (data_ == nullptr || !IsAllZero(data_, size_)) return;
  PageAllocator::Default().Free(data_, size_);
  data_ = nullptr;
}

size_t PageKeyHash::operator()(const PageKey& k) const {
  uint64_t h = k.name_space * 0x9E3779B97F4A7C15ULL;
  h ^= (k.offset / 4096) + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
  h ^= k.length + (h << 6) + (h >> 2);
  return static_cast<size_t>(h ^ (h >> 29));
}

namespace {

// A load in progress; waiters block on the shard's condition variable. An
// abandoned load (a run read that stopped before this page) tells its waiters
// to load the page themselves.
struct InflightLoad {
  bool done = false;
  bool abandoned = false;
  Status status;
  PageRef page;
};

// Where ReadRun gets each page of a run from.
enum class RunSource : uint8_t { kCached, kRead, kWait };

struct RunScratch {
  std::vector<RunSource> source;
  std::vector<PageRef> cached;
  std::vector<std::shared_ptr<InflightLoad>> loads;
};

// What a page costs the cache: its buffer plus the bookkeeping of its entry,
// so that even pages with no buffer (zeros) are bounded in number.
constexpr uint64_t kEntryOverheadBytes = 128;
uint64_t Charge(const CachedPage& page) { return page.memory_bytes() + kEntryOverheadBytes; }

struct Entry {
  PageKey key;
  std::shared_ptr<CachedPage> page;
  uint8_t freq = 0;      // hits since it entered its queue (capped)
  bool in_main = false;
};

}  // namespace

// One shard runs S3-FIFO: new pages enter a small probationary FIFO (a tenth
// of the shard); a page hit while there is promoted to the main queue when it
// reaches the head, a page never hit is evicted and remembered as a ghost.
// The main queue is a CLOCK: a page with hits left is reinserted with one
// fewer. A miss on a ghost goes straight to main (it was evicted too early).
// A stream of pages read once therefore only ever churns the small queue.
struct PageCache::Shard {
  using List = std::list<Entry>;

  std::mutex mu;
  std::condition_variable load_done;
  uint64_t capacity = 0;
  uint64_t bytes = 0;
  uint64_t small_bytes = 0;
  List small, main;
  std::unordered_map<PageKey, List::iterator, PageKeyHash> index;
  std::unordered_map<PageKey, std::shared_ptr<InflightLoad>, PageKeyHash> inflight;
  std::list<PageKey> ghost_order;
  std::unordered_map<PageKey, std::list<PageKey>::iterator, PageKeyHash> ghosts;
  uint64_t hits = 0, misses = 0, evictions = 0, uncached = 0, zero_items = 0;

  uint64_t SmallCapacity() const { return std::max<uint64_t>(capacity / 10, 4096); }
  size_t GhostLimit() const { return std::max<size_t>(capacity / 4096, 16); }

  void Remember(const PageKey& key) {
    if (ghosts.count(key)) return;
    ghost_order.push_back(key);
    ghosts.emplace(key, std::prev(ghost_order.end()));
    if (ghosts.size() > GhostLimit()) {
      ghosts.erase(ghost_order.front());
      ghost_order.pop_front();
    }
  }

  bool Forget(const PageKey& key) {
    auto it = ghosts.find(key);
    if (it == ghosts.end()) return false;
    ghost_order.erase(it->second);
    ghosts.erase(it);
    return true;
  }

  void Evict(List& list, List::iterator it) {
    bytes -= Charge(*it->page);
    if (!it->in_main) small_bytes -= Charge(*it->page);
    if (it->page->is_zero()) --zero_items;
    index.erase(it->key);
    list.erase(it);
    ++evictions;
  }

  // One step at the head of the small queue. Returns false if the head is in
  // use by a copy (it is rotated, not freed).
  bool StepSmall() {
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

  bool StepMain() {
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
  bool MakeRoom(uint64_t need) {
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

  void Insert(const PageKey& key, std::shared_ptr<CachedPage> page) {
    bool to_main = Forget(key);
    uint64_t size = Charge(*page);
    if (page->is_zero()) ++zero_items;
    List& list = to_main ? main : small;
    list.push_back(Entry{key, std::move(page), 0, to_main});
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

uint8_t PageCache::ZeroFlag(const uint8_t* bytes, size_t size) const {
  return zero_pages_ == ZeroPageMode::kDetect && IsAllZero(bytes, size) ? 1 : 0;
}

uint64_t PageCache::InternNamespace(const std::string& key) {
  std::lock_guard lock(namespaces_mu_);
  auto [it, inserted] = namespaces_.emplace(key, namespaces_.size() + 1);
  return it->second;
}

PageCache::Shard& PageCache::ShardFor(const PageKey& key) {
  return *shards_[PageKeyHash{}(key) % shards_.size()];
}

Result<PageRef> PageCache::GetOrLoad(const PageKey& key, const PageLoader& load, bool* hit) {
  Shard& shard = ShardFor(key);
  std::unique_lock lock(shard.mu);
  for (;;) {
    if (auto it = shard.index.find(key); it != shard.index.end()) {
      Entry& e = *it->second;
      if (e.freq < kMaxCredit) ++e.freq;
      ++shard.hits;
      if (hit) *hit = true;
      return PageRef(e.page);
    }
    auto it = shard.inflight.find(key);
    if (it == shard.inflight.end()) break;
    std::shared_ptr<InflightLoad> pending = it->second;
    shard.load_done.wait(lock, [&] { return pending->done; });
    if (pending->abandoned) continue;  // look again; likely load it ourselves
    if (!pending->status.ok()) return pending->status;
    ++shard.hits;
    if (hit) *hit = true;
    return pending->page;
  }

  auto pending = std::make_shared<InflightLoad>();
  shard.inflight.emplace(key, pending);
  ++shard.misses;
  lock.unlock();

  std::shared_ptr<CachedPage> page;
  Status status;
  try {
    page = std::make_shared<CachedPage>(key.length);
    status = load(*page);
    if (status.ok() && zero_pages_ == ZeroPageMode::kDetect) page->ReleaseIfZero();
  } catch (const std::bad_alloc&) {
    status = Status::Internal("out of memory allocating a " + std::to_string(key.length) + "-byte page");
  }

  lock.lock();
  pending->done = true;
  pending->status = status;
  if (status.ok()) {
    pending->page = page;
    if (shard.MakeRoom(Charge(*page))) {
      shard.Insert(key, page);
    } else {
      ++shard.uncached;
    }
  }
  shard.inflight.erase(key);
  lock.unlock();
  shard.load_done.notify_all();
  if (hit) *hit = false;
  if (!status.ok()) return status;
  return PageRef(std::move(page));
}

Status PageCache::ReadRun(const PageRun& run, RunKeep keep, const RangeReader& read, uint8_t* out,
                          std::vector<uint8_t>* zero, RunReadResult* result) {
  const uint64_t ps = run.page_size;
  auto key_of = [&](uint64_t i) { return PageKey{run.name_space, run.first_offset + i * ps, ps}; };
  // Per-thread scratch: a run of single pages is common (prefetch of a
  // scattered working set), and allocating three vectors for each would cost
  // about as much as the copy.
  static thread_local RunScratch scratch;
  auto& source = scratch.source;
  auto& cached = scratch.cached;
  auto& loads = scratch.loads;  // our claims (kRead with kShare), others' loads (kWait)
  source.assign(run.count, RunSource::kRead);
  cached.assign(run.count, nullptr);
  loads.assign(run.count, nullptr);
  using Source = RunSource;
  zero->assign(run.count, 0);
  *result = {};

  // 1. Look every page up; claim the misses when they are to be shared.
  for (uint64_t i = 0; i < run.count; ++i) {
    const PageKey key = key_of(i);
    Shard& shard = ShardFor(key);
    std::lock_guard lock(shard.mu);
    if (auto it = shard.index.find(key); it != shard.index.end()) {
      Entry& e = *it->second;
      if (e.freq < kMaxCredit) ++e.freq;
      ++shard.hits;
      cached[i] = e.page;
      source[i] = Source::kCached;
      continue;
    }
    if (keep == RunKeep::kShare) {
      if (auto it = shard.inflight.find(key); it != shard.inflight.end()) {
        loads[i] = it->second;
        source[i] = Source::kWait;
        continue;
      }
      loads[i] = std::make_shared<InflightLoad>();
      shard.inflight.emplace(key, loads[i]);
    }
    ++shard.misses;
  }

  // 2. Copy the hits out, read each contiguous range of misses at once.
  Status status;
  uint64_t valid = run.count;
  for (uint64_t i = 0; i < run.count;) {
    if (source[i] == Source::kCached) {
      (*zero)[i] = CopyOut(*cached[i], out + i * ps);
      cached[i].reset();
      ++result->hits;
      ++i;
      continue;
    }
    if (source[i] == Source::kWait) {
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < run.count && source[j] == Source::kRead) ++j;
    if (status.ok()) {
      status = read(run.first_offset + i * ps, (j - i) * ps, out + i * ps);
      if (!status.ok()) valid = i;
    }
    i = j;
  }

  // 3. Publish our claims before waiting on anyone else's, so two runs that
  // overlap never wait on each other.
  for (uint64_t i = 0; i < run.count; ++i) {
    if (source[i] != Source::kRead) continue;
    const bool ok = i < valid;
    if (ok) {
      (*zero)[i] = ZeroFlag(out + i * ps, ps);
      ++result->misses;
    }
    if (!loads[i]) continue;  // RunKeep::kNone: nothing claimed
    std::shared_ptr<CachedPage> page;
    if (ok) {
      try {
        page = std::make_shared<CachedPage>(ps);
        if (!(*zero)[i]) std::memcpy(page->mutable_data(), out + i * ps, ps);
      } catch (const std::bad_alloc&) {
        page.reset();  // not kept; waiters read it themselves
      }
    }
    const PageKey key = key_of(i);
    Shard& shard = ShardFor(key);
    {
      std::lock_guard lock(shard.mu);
      loads[i]->done = true;
      if (page) {
        loads[i]->page = page;
        if (shard.MakeRoom(Charge(*page))) {
          shard.Insert(key, page);
        } else {
          ++shard.uncached;
        }
      } else {
        loads[i]->abandoned = true;
      }
      shard.inflight.erase(key);
    }
    shard.load_done.notify_all();
  }

  // 4. Pages other callers were loading: take their bytes, or read them here
  // if their load did not give any.
  for (uint64_t i = 0; i < valid; ++i) {
    if (source[i] != Source::kWait) continue;
    const PageKey key = key_of(i);
    Shard& shard = ShardFor(key);
    PageRef page;
    {
      std::unique_lock lock(shard.mu);
      shard.load_done.wait(lock, [&] { return loads[i]->done; });
      if (!loads[i]->abandoned && loads[i]->status.ok()) {
        page = loads[i]->page;
        ++shard.hits;
      } else {
        ++shard.misses;
      }
    }
    if (page) {
      (*zero)[i] = CopyOut(*page, out + i * ps);
      ++result->hits;
      continue;
    }
    Status st = read(key.offset, ps, out + i * ps);
    if (!st.ok()) {
      if (status.ok()) status = st;
      valid = i;
      break;
    }
    (*zero)[i] = ZeroFlag(out + i * ps, ps);
    ++result->misses;
  }
  result->valid_pages = valid;
  loads.clear();  // keep no load alive past the call
  return status;
}

PageCacheCounters PageCache::Counters() const {
  PageCacheCounters c;
  c.max_bytes = max_bytes_;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
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
