// PageLoader: gets the bytes of the runs of pages a session installs,
// without blocking the session's thread. A run (1 to kMaxRunPages
// consecutive pages of the memory) comes from the shared page cache where it
// can, from another session's read in flight (single flight: the cache
// hands out one claim per page, and the others wait for it), and otherwise
// from reads of the backing chain's layers through the session's
// UringReader, many in flight at once. Pages are cached per layer of the
// chain (BackingChain::PageLayer), so chains that share a layer share its
// cached pages. Demand runs are started at once; background runs
// (prefetch, completion) only while CanStart says there is room, so a demand
// fault never queues behind them.
//
// Owned and driven by one session's thread; not thread-safe (other sessions
// only ever touch it through the LoadWaiter it registers with the cache,
// which writes to an eventfd).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "pager/metrics/counter_sink.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/cache_key.h"
#include "pager/storage/page_cache.h"
#include "pager/storage/uring_reader.h"

namespace uffdpager {

// Why a run is loaded: how urgent it is, and whether its pages are kept in
// the shared cache.
enum class LoadPurpose : uint8_t {
  kDemand,      // a fault (and the neighbours fault-around adds): kept, never waits for room
  kPrefetch,    // a recorded working set: kept, background
  kCompletion,  // the rest of the memory, which no other session asked for: not kept, background
};

struct RunRequest {
  LoadPurpose purpose = LoadPurpose::kDemand;
  uint64_t file_offset = 0;
  uint64_t page_size = 4096;
  uint64_t count = 1;
  // Another file to read the run from instead (a compact working set):
  // count * page_size bytes at `source_offset`, in one read, through no
  // cache. -1: the backing file.
  int source_fd = -1;
  uint64_t source_offset = 0;
  // With `source_fd`: the backing-file offset of each of the run's `count`
  // pages (valid until Release). The run then claims those pages in the
  // shared cache, so that other sessions wait for this one read instead of
  // reading them again, and shares them at Release once the caller has
  // vouched for the bytes.
  const uint64_t* page_offsets = nullptr;
};

// A run whose load ended. Pages [0, valid_pages) hold the run's bytes (and
// the per-page zero flags); if valid_pages < count, `status` says why the
// page at valid_pages could not be loaded.
struct LoadedRun {
  uint64_t id = 0;
  RunRequest request;
  Status status;
  uint64_t valid_pages = 0;
  const uint8_t* bytes = nullptr;  // count * page_size bytes
  const uint8_t* zero = nullptr;   // per page: all zeros (installed as such)
};

class PageLoader {
 public:
  // The most one run holds: one UFFDIO_COPY's worth.
  static constexpr uint64_t kMaxRunBytes = 2ULL << 20;
  // Reads in flight at once (the io_uring's depth).
  static constexpr unsigned kQueueDepth = 64;
  // Background runs in flight at once; demand runs are not counted.
  static constexpr unsigned kMaxBackgroundRuns = 8;
  // Bytes of background runs in flight at once (their staging buffers).
  static constexpr uint64_t kMaxBackgroundBytes = 8ULL << 20;

  // Loads pages of `backing`, caching them under `chain_key` (the session's
  // CacheKey) where they come from more than one layer or the chain is one
  // file, else under each layer's own key (its path and identity). `wake_fd`
  // is written to when another session ends a load this one waits for; the
  // session polls it. REQUIRES: every pointer outlives the loader.
  static Result<std::unique_ptr<PageLoader>> Create(std::shared_ptr<const BackingChain> backing, PageCache* cache,
                                                    const CacheKey& chain_key, const CounterSink& counters,
                                                    int wake_fd);
  ~PageLoader();

  // Readable when reads completed; poll it with the session's other fds.
  int poll_fd() const { return reader_->poll_fd(); }

  // Whether a background run of `bytes` may start now.
  bool CanStart(LoadPurpose purpose, uint64_t bytes) const;
  // Starts loading `request` (count * page_size <= kMaxRunBytes). Its
  // LoadedRun shows in ready() once its load ends, at once if every page
  // was cached. Returns the run's id, or 0 for a run with `page_offsets`
  // that another session is reading right now (its first and last pages
  // are loading elsewhere): it is not started, and the caller takes its
  // pages from the cache as that read puts them there. Of several sessions
  // that reach one block at once, one reads it.
  uint64_t Start(const RunRequest& request);
  // Whether run `id` is still loading.
  bool Loading(uint64_t id) const { return runs_.count(id) != 0 && !runs_.at(id).finished; }
  // Whether the shared cache holds the page at `file_offset` of the backing
  // file, or some session is loading it: a run of it would not read it.
  bool CachedOrLoading(uint64_t file_offset, uint64_t page_size) const {
    return cache_->CachedOrLoading(KeyAt(file_offset, page_size));
  }
  // The run of `count` pages from `file_offset` without a load: sets *pages
  // to the leading pages of it the shared cache holds (counted as hits) and
  // returns how many. A run whose bytes are all in memory needs no
  // buffer, no read and no run to release; the rest of it is Start's.
  uint64_t CachedPrefix(uint64_t file_offset, uint64_t page_size, uint64_t count, std::vector<PageRef>* pages);
  // Reaps reads, takes what other sessions' loads gave, ends runs.
  void Poll();
  // Runs whose loads ended, oldest first. Each stays valid until Release.
  const std::deque<LoadedRun>& ready() const { return ready_; }
  // Forgets a run from ready() (its buffer is reused). A run with
  // `page_offsets` shares the pages it claimed: as loaded if `vouched`,
  // else given up (whoever waits for them reads them itself).
  void Release(uint64_t id, bool vouched = true);
  // Runs started and not yet released.
  size_t runs() const { return runs_.size(); }
  size_t background_runs() const { return background_runs_; }

 private:
  enum class Source : uint8_t { kCached, kRead, kWait };
  struct Run {
    RunRequest request;
    bool finished = false;
    std::vector<Source> source;
    std::vector<PageLoadRef> loads;  // our claims (kRead, kept) and others' loads (kWait)
    std::vector<uint8_t> zero;
    uint8_t* bytes = nullptr;
    MemoryMapping big_buffer;  // runs over kSmallRunBytes
    std::unique_ptr<uint8_t, void (*)(void*)> small_buffer{nullptr, nullptr};
    PageRef single;      // a one-page run the cache had: its bytes
    unsigned reads = 0;  // reads in flight
    unsigned waits = 0;  // pages waited for
    bool claims_published = false;
    uint64_t valid = 0;  // pages [0, valid) are not known bad
    Status status;
  };
  struct ReadOp {
    uint64_t run = 0;
    uint64_t first_page = 0;  // in the run
    uint64_t offset = 0;      // in the file
    uint64_t length = 0;
    uint8_t* out = nullptr;
    std::chrono::steady_clock::time_point submitted;
    int fd = -1;
    size_t layer = 0;  // of the chain, for a read of it
  };
  class Waker;

  static constexpr uint64_t kSmallRunBytes = 64 << 10;

  PageLoader(std::shared_ptr<const BackingChain> backing, PageCache* cache, const CacheKey& chain_key,
             const CounterSink& counters);
  // The cache's key of the page at `file_offset`: in the namespace of the
  // layer it comes from, or the chain's own.
  PageKey KeyAt(uint64_t file_offset, uint64_t page_size) const;
  PageKey KeyOf(const Run& run, uint64_t page) const;
  // Claims the pages of `request` (a run with page_offsets) into *claims (a
  // null entry: cached, or loading elsewhere); false, with no claim taken,
  // if another block read has it (its first and last pages are loading).
  bool ClaimBlock(const RunRequest& request, std::vector<PageLoadRef>* claims);
  Status AllocateBuffer(Run& run);
  // Reads pages [first, end) of `run` (holes filled with zeros).
  void ReadPages(uint64_t id, Run& run, uint64_t first, uint64_t end);
  void SubmitQueued();
  void Complete(const UringReader::Completion& completion);
  void MarkBad(Run& run, uint64_t page, const Status& status);
  // Our claims end once our reads have: their pages go to the cache, or,
  // past a failure, the claim is given up (waiters read for themselves). A
  // run with page_offsets keeps them until it is released (`releasing`),
  // once its caller has vouched for the bytes.
  void PublishClaims(Run& run, bool releasing = false);
  // Looks at the loads a run waits for that have ended.
  void CollectWaited(uint64_t id, Run& run);
  void FinishIfDone(uint64_t id, Run& run);

  const std::shared_ptr<const BackingChain> backing_;
  PageCache* const cache_;
  std::vector<uint64_t> layer_namespaces_;  // by layer
  uint64_t chain_namespace_ = 0;            // pages of more than one layer
  const CounterSink counters_;
  std::unique_ptr<UringReader> reader_;
  std::shared_ptr<Waker> waker_;
  uint64_t next_run_ = 1;
  uint64_t next_op_ = 1;
  std::map<uint64_t, Run> runs_;
  std::map<uint64_t, ReadOp> ops_;   // in flight, by tag
  std::deque<uint64_t> queued_ops_;  // waiting for room in the ring
  std::deque<LoadedRun> ready_;
  std::vector<MemoryMapping> free_big_buffers_;
  size_t background_runs_ = 0;
  uint64_t background_bytes_ = 0;
  std::vector<UringReader::Completion> completions_;  // scratch
};

}  // namespace uffdpager
