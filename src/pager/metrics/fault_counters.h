// FaultCounters: what the fault path counts. One set per session, one per
// cache key, one for the whole pager; CounterSink adds to all of them at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>

namespace uffdpager {

struct FaultCounters {
  std::atomic<uint64_t> faults{0};        // page-fault events read
  std::atomic<uint64_t> pages_copied{0};  // UFFDIO_COPY successes
  std::atomic<uint64_t> bytes_copied{0};
  std::atomic<uint64_t> zero_pages{0};       // pages installed as zeros (zero content, holes, removed ranges)
  std::atomic<uint64_t> already_present{0};  // EEXIST or known-present: answered with a wake
  std::atomic<uint64_t> copy_errors{0};
  std::atomic<uint64_t> eagain_retries{0};
  std::atomic<uint64_t> remove_events{0};
  std::atomic<uint64_t> removed_bytes{0};
  std::atomic<uint64_t> backing_bytes_read{0};
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> cache_misses{0};
  std::atomic<uint64_t> unservable_faults{0};
  std::atomic<uint64_t> completion_pages{0};           // pages installed by complete
  std::atomic<uint64_t> fault_around_pages{0};         // neighbours installed with a demand fault
  std::atomic<uint64_t> prefetch_pages{0};             // pages installed from a recorded working set
  std::atomic<uint64_t> working_set_bytes_read{0};     // read from compact working sets
  std::atomic<uint64_t> compact_replays{0};            // restores that replayed a compact working set
  std::atomic<uint64_t> compact_fallbacks{0};          // ... that found it missing, stale or damaged: scattered reads
  std::atomic<uint64_t> compact_blocks_from_cache{0};  // compact blocks served from the shared cache, not read
  std::atomic<uint64_t> published_working_set_replays{0};   // restores that replayed a working set from the store
  std::atomic<uint64_t> published_working_set_refusals{0};  // ... that found one not fit to replay
  std::atomic<uint64_t> working_set_refinements{0};         // replays that held back a sample to refine the record
  std::atomic<uint64_t> fault_service_ns_total{0};
  std::atomic<uint64_t> fault_service_ns_max{0};
  std::atomic<uint64_t> backing_read_ns_total{0};

  nlohmann::json ToJson() const;
};

// A pointer to one of the counters, so a call site can name which to add to.
using FaultCounter = std::atomic<uint64_t> FaultCounters::*;

}  // namespace uffdpager
