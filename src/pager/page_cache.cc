#include "pager/page_cache.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace uffdpager {

CachedPage::CachedPage(size_t size) : size_(size) {
  size_t alignment = size >= 4096 ? 4096 : 64;
  data_ = static_cast<uint8_t*>(std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment));
  if (data_ == nullptr) throw std::bad_alloc();
}

CachedPage::~CachedPage() { std::free(data_); }

size_t PageKeyHash::operator()(const PageKey& k) const {
  uint64_t h = k.name_space * 0x9E3779B97F4A7C15ULL;
  h ^= (k.offset / 4096) + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
  h ^= k.length + (h << 6) + (h >> 2);
  return static_cast<size_t>(h ^ (h >> 29));
}

namespace {

// A load in progress; waiters block on the shard's condition variable.
struct InflightLoad {
  bool done = false;
  Status status;
  PageRef page;
};

struct Slot {
  PageKey key;
  std::shared_ptr<CachedPage> page;  // null when the slot is free
  uint8_t credit = 0;
};

}  // namespace

struct PageCache::Shard {
  std::mutex mu;
  std::condition_variable load_done;
  uint64_t capacity = 0;
  uint64_t bytes = 0;
  std::unordered_map<PageKey, size_t, PageKeyHash> index;  // key -> slot
  std::unordered_map<PageKey, std::shared_ptr<InflightLoad>, PageKeyHash> inflight;
  std::vector<Slot> slots;
  std::vector<size_t> free_slots;
  size_t hand = 0;
  uint64_t hits = 0, misses = 0, evictions = 0, uncached = 0;

  // Frees room for `need` bytes by running the clock; false if it cannot
  // (everything left is in use by copies or the page is bigger than the shard).
  bool MakeRoom(uint64_t need) {
    if (need > capacity) return false;
    // Each pass over a slot either evicts it, takes a credit, or skips it as
    // in use; after (kMaxCredit + 1) full turns nothing more can change.
    size_t budget = slots.size() * (kMaxCredit + 1) + 1;
    while (bytes + need > capacity && budget-- > 0 && !slots.empty()) {
      hand = (hand + 1) % slots.size();
      Slot& s = slots[hand];
      if (!s.page) continue;
      if (s.page.use_count() > 1) continue;  // a copy is reading it right now
      if (s.credit > 0) {
        --s.credit;
        continue;
      }
      bytes -= s.page->size();
      index.erase(s.key);
      s.page.reset();
      free_slots.push_back(hand);
      ++evictions;
    }
    return bytes + need <= capacity;
  }

  void Insert(const PageKey& key, std::shared_ptr<CachedPage> page) {
    size_t slot;
    if (!free_slots.empty()) {
      slot = free_slots.back();
      free_slots.pop_back();
    } else {
      slot = slots.size();
      slots.emplace_back();
    }
    bytes += page->size();
    slots[slot] = Slot{key, std::move(page), 0};
    index.emplace(key, slot);
  }
};

PageCache::PageCache(uint64_t max_bytes, size_t shard_count) : max_bytes_(max_bytes) {
  if (shard_count == 0) shard_count = 1;
  for (size_t i = 0; i < shard_count; ++i) {
    shards_.push_back(std::make_unique<Shard>());
    shards_.back()->capacity = max_bytes / shard_count;
  }
}

PageCache::~PageCache() = default;

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
  if (auto it = shard.index.find(key); it != shard.index.end()) {
    Slot& s = shard.slots[it->second];
    if (s.credit < kMaxCredit) ++s.credit;
    ++shard.hits;
    if (hit) *hit = true;
    return PageRef(s.page);
  }
  if (auto it = shard.inflight.find(key); it != shard.inflight.end()) {
    std::shared_ptr<InflightLoad> pending = it->second;
    shard.load_done.wait(lock, [&] { return pending->done; });
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
    status = load(page->mutable_data());
  } catch (const std::bad_alloc&) {
    status = Status::Internal("out of memory allocating a " + std::to_string(key.length) + "-byte page");
  }

  lock.lock();
  pending->done = true;
  pending->status = status;
  if (status.ok()) {
    pending->page = page;
    if (shard.MakeRoom(page->size())) {
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
  }
  return c;
}

}  // namespace uffdpager
