// FaultEngine: serves one session's userfaultfd.
//
// Each wake-up drains every queued event before serving: page faults join a
// queue, removes mark their range as zeros-from-now-on. Faults are then served
// in order with UFFDIO_COPY from the shared PageCache (or zeros for removed
// ranges). When UFFDIO_COPY says EAGAIN (a remove event is queued and not yet
// read), serving stops, the fault stays at the head of the queue, events are
// drained again, and serving resumes: no fault is ever dropped for EAGAIN.
// The engine is driven by its session's thread and is not itself thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>

#include "common/memory_mapping.h"
#include "common/userfaultfd.h"
#include "pager/metrics/counter_sink.h"
#include "pager/metrics/fault_counters.h"
#include "pager/serving/memory_layout.h"
#include "pager/serving/page_presence.h"
#include "pager/serving/removed_ranges.h"
#include "pager/storage/backing_file.h"
#include "pager/storage/backing_mapping.h"
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
  static constexpr uint64_t kMaxRunBytes = 2ULL << 20;
  // Zero pages in a run shorter than this are copied with their neighbours.
  static constexpr uint64_t kMinZeroStretchPages = 16;
  // Plan entries the prefetcher sorts into runs at a time (32 MiB of 4 KiB pages).
  static constexpr size_t kPrefetchWindowPages = 8192;
  // Runs one PrefetchStep installs at most before demand faults get a turn.
  static constexpr size_t kPrefetchRunsPerStep = 32;
  // A page the engine installed and woke that faults again, read after that
  // wake, more than this many times in a row (with no install or remove of
  // it between): the VMM's memory does not behave as its handshake promised
  // (a page discarded without UFFD_EVENT_REMOVE, 4 KiB memory claimed as
  // huge pages), and waking it forever would only spin. The fault fails.
  static constexpr uint32_t kMaxRefaults = 8;

  FaultEngine(Userfaultfd* uffd, MemoryLayout layout, std::shared_ptr<BackingFile> backing, PageCache* cache,
              uint64_t cache_namespace, CounterSink counters, FaultEngineOptions options = {});

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

  // Prefetch: installs the pages at `offsets` (a recorded working set)
  // between rounds of demand faults, a window of kPrefetchWindowPages entries
  // at a time in file order, so consecutive offsets go in as one run. Pages
  // already present or removed are skipped.
  void SetPrefetchPlan(std::vector<uint64_t> offsets, uint64_t page_size);
  bool prefetching() const;
  // Installs up to `max_pages` more pages of the plan. A page that cannot be
  // loaded is skipped (a demand fault on it will report it).
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
  // Reads [offset, offset+length) of the backing file (holes as zeros) with
  // pread: the backing read of the demand path and of cached runs.
  Status ReadBacking(uint64_t offset, uint64_t length, uint8_t* out);
  // Runs `read` (which adds the bytes it read from the file to its argument),
  // timed and counted: every backing read goes through here.
  template <typename Read>
  Status CountBackingRead(Read&& read);
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
  FillResult PopulateRun(size_t region, uint64_t first, uint64_t count, uint64_t* installed, ServeReport* report,
                         RunUse use);
  Status EnsureStaging();
  // Gets a run's `count` pages from `file_offset` ready to copy: sets
  // *source to their bytes and staging_zero_ to which of them are zero;
  // *valid_pages is how many leading pages that holds. Completion copies
  // straight from the backing mapping (*mapped set: release it after the
  // copy); other runs are assembled in the staging buffer through the cache.
  Status LoadRun(uint64_t file_offset, uint64_t page_size, uint64_t count, RunUse use, const uint8_t** source,
                 uint64_t* valid_pages, bool* mapped);
  // Fills the staging buffer (and staging_zero_) with `count` pages from
  // `file_offset`; *valid_pages is how many leading pages it holds.
  Status ReadRunIntoStaging(uint64_t file_offset, uint64_t page_size, uint64_t count, RunUse use,
                            uint64_t* valid_pages);
  // The read-only mapping of the backing file, made on first use; null if it
  // cannot be made (runs then go through the staging buffer).
  BackingMapping* MappedBacking();
  // How many staged pages from `from` on are zero.
  uint64_t ZeroStretch(uint64_t from, uint64_t count) const;
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
  // Called for a demand fault on a page believed present, before it is woken:
  // an error once that page loops (kMaxRefaults).
  Status CheckRefault(const PageLocation& loc);
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
  uint64_t remove_generation_ = 0;
  std::deque<PendingFault> pending_;
  uint64_t read_round_ = 0;                          // ReadEvents calls so far
  uint64_t serving_round_ = 0;                       // the read round of the fault being served
  std::unordered_map<uint64_t, Refaults> refaults_;  // by page address
  MemoryMapping zero_huge_page_;                     // read-only zeros for hugetlb (no ZEROPAGE there)
  MemoryMapping staging_;                            // runs are assembled here (kMaxRunBytes)
  std::unique_ptr<BackingMapping> mapped_backing_;   // completion's source
  bool mapping_tried_ = false;
  std::vector<uint8_t> staging_zero_;  // per staged page: all zeros?
  bool recording_ = false;
  size_t record_limit_ = 0;
  std::vector<uint64_t> recorded_;
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
