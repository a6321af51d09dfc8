// FaultEngine: serves one session's userfaultfd.
//
// Each wake-up drains every queued event before serving: page faults join a
// queue, removes mark their range as zeros-from-now-on. Then every queued
// fault is served without waiting on storage: a page already installed gets
// a wake, a removed one zeros, one whose bytes are at hand (the shared
// cache) is installed at once, and any other waits for the run of pages it
// belongs to, which the PageLoader reads asynchronously; meanwhile the
// faults behind it are served. So faults of several vCPUs, and the reads
// they need, overlap.
//
// Background work goes through the same runs: completion installs every page
// the VM lacks, prefetch the pages of a recorded working set. Their loads are
// bounded (PageLoader::CanStart) so demand reads never queue behind them,
// and each step installs at most one batch so a demand fault never waits
// long behind an install.
//
// When UFFDIO_COPY says EAGAIN (a remove event is queued and not yet read),
// installing stops, events are drained again, and installing resumes: no
// fault and no run is ever dropped for EAGAIN.
//
// The engine is driven by its session's thread and is not itself thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/memory_mapping.h"
#include "common/userfaultfd.h"
#include "pager/metrics/counter_sink.h"
#include "pager/metrics/fault_counters.h"
#include "pager/serving/memory_layout.h"
#include "pager/serving/page_loader.h"
#include "pager/serving/page_presence.h"
#include "pager/serving/removed_ranges.h"
#include "pager/storage/backing_chain.h"
#include "pager/storage/compact_working_set.h"
#include "pager/storage/page_cache.h"

namespace uffdpager {

// What one round of serving found.
struct ServeReport {
  // UFFDIO_COPY said EAGAIN but no new event was readable yet: the remover
  // has been read and is finishing its madvise. Poll briefly and serve again.
  bool retry_pending = false;
  // The VM's address space is gone (ESRCH): the session is over.
  bool vm_gone = false;
  // The first fault this round that could not be served (backing read error,
  // address outside every region, copy error). That fault is dropped: its
  // thread stays blocked, so the session must fail loudly.
  std::optional<Status> failure;
};

// How the engine serves, beyond the page that faulted.
struct FaultEngineOptions {
  // Fault-around: on a demand fault, also install up to this many following
  // pages that are missing, in the same copy. The window adapts per access
  // stream (several vCPUs walk at once): a fault just past where a stream's
  // last window ended doubles that stream's window; any other fault starts a
  // new stream (replacing the least recently used) with a window of one page,
  // so random access costs no extra pages. 0 turns it off.
  uint64_t fault_around_max_pages = 0;
};

class FaultEngine {
 public:
  // The most one UFFDIO_COPY installs: bounds completion, prefetch and
  // fault-around runs, so a demand fault waits for at most one run.
  static constexpr uint64_t kMaxRunBytes = PageLoader::kMaxRunBytes;
  // Zero pages in a run shorter than this are copied with their neighbours.
  static constexpr uint64_t kMinZeroStretchPages = 16;
  // A run whose pages are all in the shared cache goes in from them at once,
  // through a staging buffer of this size (a single page needs none).
  static constexpr uint64_t kMaxCachedRunBytes = 256 << 10;
  // A page the engine installed and woke that faults again, read after that
  // wake, more than this many times in a row (with no install or remove of
  // it between): the VMM's memory does not behave as its handshake promised
  // (a page discarded without UFFD_EVENT_REMOVE, 4 KiB memory claimed as
  // huge pages), and waking it forever would only spin. The fault fails.
  static constexpr uint32_t kMaxRefaults = 8;

  // Serves `backing`, its pages cached as PageLoader::Create says with
  // `chain_key`. `wake_fd` is the session's eventfd, written when another
  // session ends a load this one waits for. REQUIRES: every pointer outlives
  // the engine.
  static Result<std::unique_ptr<FaultEngine>> Create(Userfaultfd* uffd, MemoryLayout layout,
                                                     std::shared_ptr<const BackingChain> backing, PageCache* cache,
                                                     const CacheKey& chain_key, CounterSink counters,
                                                     FaultEngineOptions options, int wake_fd);
  ~FaultEngine();

  // The session polls this with the uffd: readable when reads completed.
  int loader_fd() const { return loader_->poll_fd(); }

  // Reads every queued event, takes what loads ended, then serves every
  // queued fault it can.
  ServeReport ServeEvents();

  // Whether the engine can make progress now without waiting for an fd:
  // loaded runs wait to be installed, or background work (prefetch, and
  // completion when `completing`) can start more loads. The session polls
  // without blocking while this is true.
  bool HasWorkNow(bool completing) const;

  // One step of completion: starts loads of pages that are neither present
  // nor removed, and installs those that arrived, at most about `max_pages`
  // of them. Sets *done once every page is in. Demand faults are served
  // between steps by the caller.
  Status PopulateStep(size_t max_pages, bool* done, ServeReport* report);

  // Working-set recording: remembers the memory-file offset of every page a
  // demand fault brings in (with fault-around, its neighbours too), in the
  // order they went in, up to `max_pages`.
  void StartRecording(size_t max_pages);
  bool recording() const { return recording_; }
  size_t recorded_pages() const { return recorded_.size(); }
  // Stops recording and hands over what was recorded.
  std::vector<uint64_t> TakeRecording();

  // Prefetch: installs the pages at `offsets` (a recorded working set, in
  // replay order: ReplayOrder) between rounds of demand faults; consecutive
  // offsets go in as one run. Pages already present or removed are skipped.
  void SetPrefetchPlan(std::vector<uint64_t> offsets, uint64_t page_size);
  // The same from a compact working set: its blocks are read one after the
  // other and their pages installed; a demand fault on a page of a block not
  // read yet has that block read at once (demand faults first), and waits
  // for it rather than reading the backing memory. A block whose hash does not match is
  // not installed: its pages and those of every block not yet read go back
  // to the scattered plan, and `fallback` is set.
  void SetCompactPlan(CompactWorkingSet compact);
  bool prefetching() const;
  // Pages of the plan (scattered or compact) that prefetch leaves to demand
  // faults: a refining replay's held-back sample (working_set_refinement.h).
  void HoldOut(std::unordered_set<uint64_t> offsets) { held_out_ = std::move(offsets); }
  // Whether the page at `file_offset` is one of them. (Asked for every page
  // of the plan: an empty set is not even hashed.)
  bool HeldOut(uint64_t file_offset) const { return !held_out_.empty() && held_out_.count(file_offset) != 0; }
  // Whether a compact plan turned out damaged and fell back to scattered reads.
  bool compact_fell_back() const { return compact_fell_back_; }
  // Starts loads of more of the plan, and installs those that arrived, at
  // most about `max_pages`. A page that cannot be loaded is skipped (a demand
  // fault on it will report it).
  void PrefetchStep(size_t max_pages, ServeReport* report);

  // Unregisters every region. Call only when PopulateStep reported done.
  Status UnregisterAll();

  const MemoryLayout& layout() const { return layout_; }
  uint64_t present_pages() const { return presence_.present_pages(); }
  uint64_t removed_bytes() const { return removed_.total_bytes(); }
  const RemovedRanges& removed() const { return removed_; }
  // Changes whenever a remove event is read: the session persists the ranges
  // when it moves.
  uint64_t remove_generation() const { return remove_generation_; }
  // A session taken over from another process: ranges the VMM discarded
  // while that process served it. Their pages are zeros from now on.
  void RestoreRemoved(uint64_t start, uint64_t end) { removed_.Add(start, end); }

 private:
  struct PendingFault {
    uint64_t address;
    std::chrono::steady_clock::time_point read_at;
    uint64_t read_round;  // which ReadEvents call read it
    uint64_t run = 0;     // the load it waits for; 0: none yet
  };
  // Refaults of one page woken as already present (see kMaxRefaults).
  struct Refaults {
    uint64_t woken_in_round = 0;  // the read round when it was last woken
    uint64_t page_size = 0;
    uint32_t count = 0;
  };
  // Pages followed for refaults at most; past that the count starts anew.
  static constexpr size_t kMaxRefaultPages = 1024;
  enum class FillResult { kDone, kRetry, kVmGone, kFailed };
  // An in-flight run of this session: which pages it covers.
  struct RunSpan {
    uint64_t id;
    size_t region;
    uint64_t first_page;
    uint64_t count;
    LoadPurpose purpose;
    uint64_t installed = 0;  // pages it put in so far
  };

  FaultEngine(Userfaultfd* uffd, MemoryLayout layout, CounterSink counters, FaultEngineOptions options);

  // Reads queued events until none is left; returns how many were read.
  size_t ReadEvents(ServeReport* report);
  void HandleRemove(uint64_t start, uint64_t end);
  // Installs the runs whose loads ended (demand first, then at most
  // `background_pages` pages of background runs); false if it stopped on
  // EAGAIN.
  bool InstallLoaded(size_t background_pages, ServeReport* report);
  // Whether a loop of fills stops at `result`, and what it answers if so:
  // false after EAGAIN (counted; the caller retries later), true once the
  // VM is gone (reported). nullopt: go on.
  std::optional<bool> StopsLoop(FillResult result, ServeReport* report);
  // Serves the queued faults it can; false if it stopped on EAGAIN.
  bool ServePending(ServeReport* report);
  // One fault: done (served or failed), waiting for a run, or kRetry.
  FillResult ServeFault(PendingFault& fault, bool* waiting, ServeReport* report);
  // Installs pages of a loaded run that are still missing and not removed.
  FillResult InstallRun(const LoadedRun& run, ServeReport* report);
  // Installs `count` pages of `region` from `first` (all missing, not
  // removed) from `source`, whose zero pages are flagged in `zero`.
  FillResult InstallPages(size_t region, uint64_t first, uint64_t count, const uint8_t* source, const uint8_t* zero,
                          uint64_t* installed, ServeReport* report);
  // How many pages from `loc` on a demand fault brings in: the page and its
  // fault-around neighbours, up to the first page another run of ours loads.
  uint64_t DemandRunLength(const PageLocation& loc);
  // Installs `pages` (at most CachedRunLimit; from the shared cache, found
  // by CachedPrefix) as pages of `region` from `first` (all missing, not
  // removed): no load, no run. Records what a demand run brought in.
  FillResult InstallCached(size_t region, uint64_t first, const std::vector<PageRef>& pages, LoadPurpose purpose,
                           uint64_t* installed, ServeReport* report);
  // The most pages InstallCached takes at once: its staging buffer's size.
  static uint64_t CachedRunLimit(uint64_t page_size);
  // Working-set recording of `count` pages of `region` from `first` that a
  // demand fault brought in.
  void RecordBroughtIn(size_t region, uint64_t first, uint64_t count);
  uint64_t StartRun(LoadPurpose purpose, size_t region, uint64_t first_page, uint64_t count);
  // The in-flight run covering page `page` of `region`, if any.
  const RunSpan* RunCovering(size_t region, uint64_t page) const;
  // Installs zeros at `loc`. If the page is there already (EEXIST) and
  // `still_there` is given, sets it and returns kDone without a wake.
  FillResult FillZeros(const PageLocation& loc, ServeReport* report, bool* still_there = nullptr);
  FillResult ClassifyOutcome(const PageLocation& loc, const UffdFillOutcome& outcome, const char* what,
                             ServeReport* report);
  // Called for a demand fault on a page believed present, before it is woken:
  // an error once that page loops (kMaxRefaults).
  Status CheckRefault(const PageLocation& loc, uint64_t fault_read_round);
  void RecordFailure(ServeReport* report, Status status);
  // A fault that is over: timed, and, if it brought its page in, recorded
  // for the working set.
  void FaultServed(const PendingFault& fault, const PageLocation& loc, bool brought_in);
  // A read-only page of zeros of `page_size`, the source of huge zero pages.
  const uint8_t* ZeroHugePage(uint64_t page_size, ServeReport* report);
  // How many pages from `first` on (at most `max`) are neither present nor
  // removed: the longest run completion or fault-around may install.
  uint64_t MissingRunLength(size_t region, uint64_t first, uint64_t max) const;
  // The fault-around window for a demand fault at `loc` (at least 1).
  uint64_t FaultAroundWindow(const PageLocation& loc);
  // Starts loads of the next blocks of the compact plan.
  void StartCompactLoads();
  // Starts reading compact block `block` (or takes its pages from the shared
  // cache); `awaited`: a demand fault waits for it, so it starts whatever the
  // loader's budget for background reads; otherwise false if that budget
  // has no room now.
  bool StartCompactBlock(size_t block, bool awaited);
  // Compact block `block`'s pages go to the scattered plan, to be taken from
  // the shared cache, where another session's read of them puts them.
  void TakeCompactBlockFromCache(size_t block);
  // A demand fault at `file_offset`: the compact block holding it, if not
  // started yet, starts now.
  void StartCompactBlockFor(uint64_t file_offset);
  // Whether the shared cache holds compact block `block`'s pages (by a few
  // probes); such a block is served from the cache instead of being read.
  bool CompactBlockCached(size_t block) const;
  // Installs the pages of a compact block whose load ended.
  FillResult InstallCompactBlock(const LoadedRun& run, size_t block);
  // The compact plan's blocks from `block` on go back to the scattered plan.
  void FallBackFromCompact(size_t block, const std::string& why);
  // Starts loads of the next missing runs of the completion cursor.
  void StartCompletionLoads();

  Userfaultfd* uffd_;
  MemoryLayout layout_;
  CounterSink counters_;
  FaultEngineOptions options_;
  std::unique_ptr<PageLoader> loader_;
  PagePresence presence_;
  RemovedRanges removed_;
  uint64_t remove_generation_ = 0;
  std::deque<PendingFault> pending_;
  // What CachedPrefix found last (reused, not to allocate per fault), and
  // the buffer a run of several cached pages goes in from.
  std::vector<PageRef> cached_pages_;
  MemoryMapping cached_run_buffer_;
  std::vector<RunSpan> runs_;                        // in flight or loaded, not yet installed
  uint64_t read_round_ = 0;                          // ReadEvents calls so far
  std::unordered_map<uint64_t, Refaults> refaults_;  // by page address
  // Pages found looping (kMaxRefaults): their faults are never woken again.
  // At most one entry per page of the guest.
  std::unordered_set<uint64_t> looping_;
  MemoryMapping zero_huge_page_;  // read-only zeros for hugetlb (no ZEROPAGE there)
  bool recording_ = false;
  size_t record_limit_ = 0;
  std::vector<uint64_t> recorded_;
  std::vector<uint64_t> prefetch_plan_;    // replay order
  std::unordered_set<uint64_t> held_out_;  // plan pages left to demand faults
  uint64_t prefetch_page_size_ = 0;
  size_t prefetch_pos_ = 0;  // next plan entry
  std::optional<CompactWorkingSet> compact_;
  size_t compact_next_block_ = 0;
  std::vector<std::pair<uint64_t, size_t>> compact_runs_;  // (run id, block) loading or loaded
  std::vector<bool> compact_started_;                      // per block
  std::unordered_set<uint64_t> compact_awaited_;           // compact runs a demand fault waits for
  bool compact_fell_back_ = false;
  // Fault-around state: recent forward streams, where each last window ended
  // and how wide it was.
  struct AccessStream {
    uint64_t next_addr = 0;
    uint64_t window = 0;  // 0: unused slot
    uint64_t last_used = 0;
  };
  static constexpr size_t kStreams = 8;
  AccessStream streams_[kStreams];
  uint64_t stream_clock_ = 0;
  // Completion cursor, and the first error a completion load met.
  size_t populate_region_ = 0;
  uint64_t populate_page_ = 0;
  std::optional<Status> completion_failure_;
};

}  // namespace uffdpager
