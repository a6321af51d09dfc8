#include "pager/metrics/fault_counters.h"

namespace uffdpager {

nlohmann::json FaultCounters::ToJson() const {
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  uint64_t served = get(faults);
  return {
      {"faults", get(faults)},
      {"pages_copied", get(pages_copied)},
      {"bytes_copied", get(bytes_copied)},
      {"zero_pages", get(zero_pages)},
      {"already_present", get(already_present)},
      {"copy_errors", get(copy_errors)},
      {"eagain_retries", get(eagain_retries)},
      {"remove_events", get(remove_events)},
      {"removed_bytes", get(removed_bytes)},
      {"backing_bytes_read", get(backing_bytes_read)},
      {"cache_hits", get(cache_hits)},
      {"cache_misses", get(cache_misses)},
      {"unservable_faults", get(unservable_faults)},
      {"completion_pages", get(completion_pages)},
      {"fault_around_pages", get(fault_around_pages)},
      {"prefetch_pages", get(prefetch_pages)},
      {"working_set_bytes_read", get(working_set_bytes_read)},
      {"compact_replays", get(compact_replays)},
      {"compact_fallbacks", get(compact_fallbacks)},
      {"compact_blocks_from_cache", get(compact_blocks_from_cache)},
      {"published_working_set_replays", get(published_working_set_replays)},
      {"published_working_set_refusals", get(published_working_set_refusals)},
      {"working_set_refinements", get(working_set_refinements)},
      {"fault_service_ns_total", get(fault_service_ns_total)},
      {"fault_service_ns_max", get(fault_service_ns_max)},
      {"fault_service_ns_avg", served ? get(fault_service_ns_total) / served : 0},
      {"backing_read_ns_total", get(backing_read_ns_total)},
  };
}

}  // namespace uffdpager
