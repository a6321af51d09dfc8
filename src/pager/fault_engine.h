// FaultEngine: serves one session's userfaultfd.
//
// Each wake-up drains every queued event before serving: page faults join a
// queue, removes mark their range as zeros-from-now-on. Faults are then served
// in order with UFFDIO_COPY from the shared PageCache (or zeros for removed
// ranges). When UFFDIO_COPY says EAGAIN (a remove event is queued and not yet
// read), serving stops, the fault stays at the head of the queue, events are
// drained again, and serving resumes: no fault is ever dropped for EAGAIN.
// The engine is driven by its session's thread; the one exception is the
// prefetcher, a thread of the engine's own that installs a recorded working
// set concurrently (see StartPrefetch for how the two stay consistent).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/memory_mapping.h"
#include "common/userfaultfd.h"
#include "pager/backing_file.h"
#include "pager/fault_counters.h"
#include "pager/memory_layout.h"
#include "pager/page_cache.h"
#include "pager/page_presence.h"
#include "pager/removed_ranges.h"

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
  static constexpr uint64_t kMaxRunBytes = 2ULL << 20;
  // Zero pages in a run shorter than this are copied with their neighbours.
  static constexpr uint64_t kMinZeroStretchPages = 16;
  // Plan entries the prefetcher sorts into runs at a time (32 MiB of 4 KiB pages).
  static constexpr size_t kPrefetchWindowPages = 8192;
  // Runs one PrefetchStep installs at most before demand faults get a turn.
  // The largest run the prefetcher installs: it holds the event lock while it
  // copies, so this bounds how long reading a demand fault can wait for it.
  static constexpr uint64_t kPrefetchMaxRunBytes = 512ULL << 10;

  FaultEngine(Userfaultfd* uffd, MemoryLayout layout, std::shared_ptr<BackingFile> backing, PageCache* cache,
              uint64_t cache_namespace, CounterSink counters, FaultEngineOptions options = {});
  ~FaultEngine();
  FaultEngine(const FaultEngine&) = delete;
  FaultEngine& operator=(const FaultEngine&) = delete;

  // Reads every queued event, then serves every queued fault.
  ServeReport ServeEvents();

  // One step of completion: installs up to `max_pages` pages that are neither
  // present nor removed. Sets *done once every page is in. Demand faults are
  // served between steps by the caller.
  Status PopulateStep(size_t max_pages, bool* done, ServeReport* report);

  // Working-set recording: remembers the memory-file offset of every page a
  // demand fault brings in, in first-touch order, up to `max_pages`.
  void StartRecording(size_t max_pages);
  bool recording() const { return recording_; }
  size_t recorded_pages() const { return recorded_.size(); }
  // Stops recording and hands over what was recorded.
  std::vector<uint64_t> TakeRecording();

  // Prefetch: installs the pages at `offsets` (a recorded working set) on a
  // thread of its own, while the session thread keeps serving demand faults,
  // so a fault never queues behind prefetch work and the two use both cores.
  // The plan goes in a window of kPrefetchWindowPages entries at a time in
  // file order, so consecutive offsets go in as one run. Pages already
  // present or removed are skipped; a page that cannot be loaded is skipped
  // too (a demand fault on it will report it). Consistency with removes: the
  // prefetcher checks and copies a run under remove_mu_, and events are read
  // under it, so a range is recorded as removed before the madvise that
  // removes it can go on (the kernel holds it until its event is read), and
  // no copy lands in it afterwards. Overlap with demand faults or completion
  // costs an EEXIST, nothing more.
  void StartPrefetch(std::vector<uint64_t> offsets, uint64_t page_size);
  // Stops the prefetcher and waits for it. Completion calls it first.
  void StopPrefetch();
  bool prefetching() const { return prefetch_running_.load(); }

  // Unregisters every region. Call only when PopulateStep reported done.
  Status UnregisterAll();

  const MemoryLayout& layout() const { return layout_; }
  uint64_t present_pages() const { return presence_.present_pages(); }
  uint64_t removed_bytes() const { return removed_.total_bytes(); }

 private:
  struct PendingFault {
    uint64_t address;
    std::chrono::steady_clock::time_point read_at;
  };
  enum class FillResult { kDone, kRetry, kVmGone, kFailed };
  // Where a run's bytes are assembled: one for the session thread, one for
  // the prefetcher.
  struct RunBuffer {
    MemoryMapping bytes;        // kMaxRunBytes
    std::vector<uint8_t> zero;  // per page: all zeros?
  };

  // Reads queued events until none is left; returns how many were read.
  size_t ReadEvents(ServeReport* report);
  void HandleRemove(uint64_t start, uint64_t end);
  // Serves the queue in order; returns false if it stopped on EAGAIN.
  bool ServePending(ServeReport* report);
  // Installs the page at `loc` (zeros if removed or all-zero) for a fault.
  FillResult FillPage(const PageLocation& loc, ServeReport* report);
  // The page's bytes through the shared cache (one backing read per miss,
  // none for holes); counts hits, misses and bytes read.
  Result<PageRef> LoadPage(uint64_t file_offset, uint64_t page_size);
  // Why a run is installed: decides whether its pages are kept in the shared
  // cache and whether a page that cannot be loaded fails the run.
  enum class RunUse {
    kFaultAround,  // a demand fault and its neighbours: kept; neighbours optional
    kPrefetch,     // a recorded working set: kept; pages after the first optional
    kCompletion,   // the rest of the memory, which no other session asked for: not kept; all required
  };
  // Installs pages [first, first+count) of `region`, all missing and not
  // removed (count * page size <= kMaxRunBytes): their bytes are assembled in
  // the staging buffer with one backing read per range the cache lacks, then
  // go in with one UFFDIO_COPY (long zero stretches: UFFDIO_ZEROPAGE), DONTWAKE,
  // then one wake. *installed says how far it got.
  FillResult PopulateRun(RunBuffer& buffer, size_t region, uint64_t first, uint64_t count, uint64_t* installed,
                         ServeReport* report, RunUse use);
  bool EnsureBuffer(RunBuffer& buffer, ServeReport* report);
  // Fills `buffer` with `count` pages from `file_offset`; *valid_pages is how
  // many leading pages it holds.
  Status ReadRunIntoBuffer(RunBuffer& buffer, uint64_t file_offset, uint64_t page_size, uint64_t count, RunUse use,
                           uint64_t* valid_pages);
  // How many buffered pages from `from` on are zero.
  static uint64_t ZeroStretch(const RunBuffer& buffer, uint64_t from, uint64_t count);
  // The prefetcher's thread.
  void PrefetchLoop();
  // Takes the next window of the prefetch plan, in file order; false when the
  // plan is done.
  bool RefillPrefetchWindow();
  // How many pages from `first` on (at most `max`) are neither present nor
  // removed: the longest run completion or fault-around may install.
  uint64_t MissingRunLength(size_t region, uint64_t first, uint64_t max) const;
  // Serves a demand fault together with its missing neighbours.
  FillResult FaultAround(const PageLocation& loc, ServeReport* report);
  FillResult FillZeros(const PageLocation& loc, ServeReport* report);
  FillResult ClassifyOutcome(const PageLocation& loc, const UffdFillOutcome& outcome, const char* what,
                             ServeReport* report);
  void RecordFailure(ServeReport* report, Status status);

  Userfaultfd* uffd_;
  MemoryLayout layout_;
  std::shared_ptr<BackingFile> backing_;
  PageCache* cache_;
  uint64_t cache_namespace_;
  CounterSink counters_;
  FaultEngineOptions options_;
  PagePresence presence_;
  RemovedRanges removed_;
  std::deque<PendingFault> pending_;
  MemoryMapping zero_huge_page_;  // read-only zeros for hugetlb (no ZEROPAGE there)
  RunBuffer staging_;             // the session thread's runs are assembled here
  bool recording_ = false;
  size_t record_limit_ = 0;
  std::vector<uint64_t> recorded_;
  // Held while events are read (session thread) and while the prefetcher
  // checks and installs a run; see StartPrefetch.
  std::mutex remove_mu_;
  std::atomic<bool> events_waiting_{false};  // the session thread wants remove_mu_: prefetcher, yield
  // The prefetcher's state; its plan and window are touched only by it.
  std::thread prefetcher_;
  std::atomic<bool> prefetch_stop_{false};
  std::atomic<bool> prefetch_running_{false};
  std::vector<uint64_t> prefetch_plan_;
  uint64_t prefetch_page_size_ = 0;
  size_t prefetch_cursor_ = 0;  // next plan entry to take into the window
  std::vector<uint64_t> prefetch_window_;
  size_t prefetch_window_pos_ = 0;
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
  // Completion cursor.
  size_t populate_region_ = 0;
  uint64_t populate_page_ = 0;
};

}  // namespace uffdpager
