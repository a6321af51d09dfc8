// WorkingSetWriter: writes compact working sets (compact_working_set.h) on a
// thread of its own, so no session waits for the copy, and keeps their disk
// use under a bound: when a new file would pass it, the files used least
// recently go first (a replay marks its file used); a file larger than the
// whole bound is not kept. A file whose job names an object URL is then
// published there (published_working_set.h), through `tier`.
//
// Thread-safe: sessions enqueue from their threads; the writer thread does
// the work; counters are atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/object_url.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/cache_key.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/working_set_store.h"

namespace uffdpager {

class WorkingSetWriter {
 public:
  // `store` names the files and outlives the writer, as does `tier` (null:
  // nothing is published). `max_bytes` 0: no compact files at all.
  WorkingSetWriter(const WorkingSetStore* store, uint64_t max_bytes, ObjectTier* tier = nullptr);
  ~WorkingSetWriter();  // writes what is queued, then stops
  WorkingSetWriter(const WorkingSetWriter&) = delete;
  WorkingSetWriter& operator=(const WorkingSetWriter&) = delete;

  bool enabled() const { return max_bytes_ > 0; }
  // Queues the compact file of `key`'s record `first_touch` (what the store
  // saved), with the pages of `backing`, then publishes it as `publish_to`
  // (when given, and the writer has a tier). A job queued for the same key
  // is replaced.
  void Enqueue(const CacheKey& key, uint64_t page_size, std::vector<uint64_t> first_touch,
               std::shared_ptr<const BackingChain> backing, std::optional<ObjectUrl> publish_to = std::nullopt)
      EXCLUDES(mu_);
  // Counts the compact file at `path`, made elsewhere (a published one
  // fetched), toward the bound, and keeps the bound.
  void Adopt(const std::string& path) EXCLUDES(trim_mu_);
  // Blocks until nothing is queued or being written (tests).
  void WaitIdle() EXCLUDES(mu_);

  uint64_t disk_bytes() const { return disk_bytes_.load(std::memory_order_relaxed); }
  uint64_t max_bytes() const { return max_bytes_; }
  uint64_t files() const { return files_.load(std::memory_order_relaxed); }
  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  uint64_t published() const { return published_.load(std::memory_order_relaxed); }
  uint64_t publish_errors() const { return publish_errors_.load(std::memory_order_relaxed); }

 private:
  struct Job {
    CacheKey key;
    uint64_t page_size = 0;
    std::vector<uint64_t> first_touch;
    std::shared_ptr<const BackingChain> backing;
    std::optional<ObjectUrl> publish_to;
  };

  void Run() EXCLUDES(mu_);
  void Write(const Job& job);
  void Publish(const ObjectUrl& url, const std::string& path, uint64_t bytes);
  // Sums the compact files on disk and removes the least recently used ones
  // until at most `max_bytes_` remain; never removes `keep`.
  void Trim(const std::string& keep) EXCLUDES(trim_mu_);

  const WorkingSetStore* const store_;
  const uint64_t max_bytes_;
  ObjectTier* const tier_;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> publish_errors_{0};
  Mutex trim_mu_;  // Trim runs on the writer's thread and on fetchers' (Adopt)
  std::atomic<uint64_t> disk_bytes_{0};
  std::atomic<uint64_t> files_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> write_errors_{0};

  Mutex mu_;
  CondVar changed_{&mu_};
  std::deque<Job> queue_ GUARDED_BY(mu_);
  bool busy_ GUARDED_BY(mu_) = false;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace uffdpager
