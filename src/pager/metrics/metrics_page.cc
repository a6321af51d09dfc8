#include "pager/metrics/metrics_page.h"

#include <string>

#include "pager/metrics/prometheus_exposition.h"

namespace uffdpager {

namespace {

struct CounterMetric {
  FaultCounter field;
  const char* name;
  const char* help;
};

// The fault path's counters, pager-wide. (Timing totals are exposed as
// histograms instead.)
constexpr CounterMetric kFaultCounters[] = {
    {&FaultCounters::faults, "uffdpager_faults_total", "Page-fault events read from userfaultfds."},
    {&FaultCounters::pages_copied, "uffdpager_pages_copied_total", "Pages installed with UFFDIO_COPY."},
    {&FaultCounters::bytes_copied, "uffdpager_copied_bytes_total", "Bytes installed with UFFDIO_COPY."},
    {&FaultCounters::zero_pages, "uffdpager_zero_pages_total",
     "Pages installed as zeros (zero content, holes, removed ranges)."},
    {&FaultCounters::already_present, "uffdpager_already_present_total",
     "Faults on pages already installed, answered with a wake."},
    {&FaultCounters::copy_errors, "uffdpager_copy_errors_total", "UFFDIO_COPY or UFFDIO_ZEROPAGE calls that failed."},
    {&FaultCounters::eagain_retries, "uffdpager_eagain_retries_total",
     "Fills retried after EAGAIN (a remove event was pending)."},
    {&FaultCounters::remove_events, "uffdpager_remove_events_total",
     "UFFD_EVENT_REMOVE events (balloon, free-page reporting)."},
    {&FaultCounters::removed_bytes, "uffdpager_removed_bytes_total", "Bytes discarded by remove events."},
    {&FaultCounters::backing_bytes_read, "uffdpager_backing_read_bytes_total", "Bytes read from backing memory files."},
    {&FaultCounters::cache_hits, "uffdpager_cache_hits_total", "Page loads served from the shared page cache."},
    {&FaultCounters::cache_misses, "uffdpager_cache_misses_total", "Page loads that missed the shared page cache."},
    {&FaultCounters::unservable_faults, "uffdpager_unservable_faults_total",
     "Faults the pager could not serve (session failed)."},
    {&FaultCounters::completion_pages, "uffdpager_completion_pages_total", "Pages installed by complete."},
    {&FaultCounters::fault_around_pages, "uffdpager_fault_around_pages_total",
     "Neighbour pages installed with demand faults."},
    {&FaultCounters::prefetch_pages, "uffdpager_prefetch_pages_total", "Pages installed from recorded working sets."},
    {&FaultCounters::working_set_bytes_read, "uffdpager_working_set_read_bytes_total",
     "Bytes read from compact working sets."},
    {&FaultCounters::compact_replays, "uffdpager_compact_replays_total",
     "Restores that replayed their working set from its compact file."},
    {&FaultCounters::compact_fallbacks, "uffdpager_compact_fallbacks_total",
     "Restores whose compact working set was missing, stale or damaged (scattered reads instead)."},
    {&FaultCounters::compact_blocks_from_cache, "uffdpager_compact_blocks_from_cache_total",
     "Compact working-set blocks served from the shared page cache instead of being read."},
    {&FaultCounters::published_working_set_replays, "uffdpager_published_working_set_replays_total",
     "Restores that replayed a working set fetched from beside their object."},
    {&FaultCounters::published_working_set_refusals, "uffdpager_published_working_set_refusals_total",
     "Published working sets fetched but not fit to replay (other bytes, damaged, too large)."},
    {&FaultCounters::working_set_refinements, "uffdpager_working_set_refinements_total",
     "Replays that held back a sample of their working set to refine its record."},
};

// Per cache key: enough to tell a key's hit rate and disk traffic.
constexpr CounterMetric kCacheKeyCounters[] = {
    {&FaultCounters::cache_hits, "uffdpager_cache_key_hits_total",
     "Page loads of this cache key served from the cache."},
    {&FaultCounters::cache_misses, "uffdpager_cache_key_misses_total",
     "Page loads of this cache key that missed the cache."},
    {&FaultCounters::faults, "uffdpager_cache_key_faults_total", "Page-fault events of sessions of this cache key."},
    {&FaultCounters::backing_bytes_read, "uffdpager_cache_key_backing_read_bytes_total",
     "Bytes read from the backing file for this cache key."},
};

uint64_t Get(const FaultCounters& c, FaultCounter field) { return (c.*field).load(std::memory_order_relaxed); }

}  // namespace

std::string RenderMetricsPage(const MetricsPageSources& s) {
  PrometheusWriter w;
  w.Gauge("uffdpager_info", "The pager's version key and build version.", 1,
          {{"version_key", s.version_key}, {"pager_version", s.pager_version}});
  w.Gauge("uffdpager_uptime_seconds", "Seconds since the pager started.", s.uptime_seconds);
  w.Gauge("uffdpager_draining", "1 while the pager drains (refuses new sessions).", s.draining ? 1 : 0);
  for (const auto& [state, n] : s.sessions_by_state) {
    w.Gauge("uffdpager_sessions", "Sessions by state.", static_cast<double>(n), {{"state", state}});
  }
  w.Counter("uffdpager_failed_sessions_total", "Sessions that failed (a fault or handshake could not be served).",
            s.registry->failed_sessions());
  w.Counter("uffdpager_refused_peers_total", "Session connections turned away: not the expected peer.",
            s.registry->refused_peers());
  w.Counter("uffdpager_refused_handshakes_total",
            "Session connections closed without failing the session: no userfaultfd handed over, or the session "
            "had its VMM already.",
            s.registry->refused_handshakes());
  for (const auto& m : kFaultCounters) w.Counter(m.name, m.help, Get(s.registry->pager_counters(), m.field));

  w.Gauge("uffdpager_cache_bytes", "Bytes held by the shared page cache.", static_cast<double>(s.cache.bytes));
  w.Gauge("uffdpager_cache_max_bytes", "Bound of the shared page cache.", static_cast<double>(s.cache.max_bytes));
  w.Gauge("uffdpager_cache_items", "Pages in the shared page cache.", static_cast<double>(s.cache.items));
  w.Gauge("uffdpager_cache_zero_items", "Cached pages that are all zeros (no buffer).",
          static_cast<double>(s.cache.zero_items));
  w.Counter("uffdpager_cache_evictions_total", "Pages evicted from the shared page cache.", s.cache.evictions);
  w.Counter("uffdpager_cache_uncached_loads_total", "Pages served without being cached (no room).",
            s.cache.uncached_loads);

  if (s.working_set_writer != nullptr) {
    w.Gauge("uffdpager_working_set_disk_bytes", "Bytes of compact working sets on disk.",
            static_cast<double>(s.working_set_writer->disk_bytes()));
    w.Gauge("uffdpager_working_set_disk_max_bytes", "Bound of the compact working sets on disk.",
            static_cast<double>(s.working_set_writer->max_bytes()));
    w.Counter("uffdpager_working_set_write_errors_total", "Compact working sets that could not be written.",
              s.working_set_writer->write_errors());
    w.Counter("uffdpager_working_sets_published_total", "Compact working sets published beside their object.",
              s.working_set_writer->published());
    w.Counter("uffdpager_working_set_publish_errors_total", "Compact working sets that could not be published.",
              s.working_set_writer->publish_errors());
  }

  if (s.object_tier) {
    for (const auto& f : kObjectTierStatFields) {
      w.Counter(std::string("uffdpager_") + f.name + "_total", f.help, (*s.object_tier).*f.field);
    }
    w.Histogram("uffdpager_object_fetch_seconds",
                "Time of one ranged GET from the object store that succeeded (its last attempt).",
                s.object_tier->fetch_latency);
  }

  const FaultLatencies& lat = s.registry->latencies();
  w.Histogram("uffdpager_fault_service_seconds",
              "Time from reading a page fault to the page being installed and its thread woken.",
              lat.fault_service.Read());
  w.Histogram("uffdpager_backing_read_seconds", "Time of one read of a backing memory file (cache misses).",
              lat.backing_read.Read());
  w.Histogram("uffdpager_copy_seconds", "Time of one UFFDIO_COPY or UFFDIO_ZEROPAGE ioctl.", lat.uffd_fill.Read());

  auto keys = s.registry->CacheKeys();
  for (const auto& m : kCacheKeyCounters) {
    for (const auto& [key, counters] : keys) w.Counter(m.name, m.help, Get(*counters, m.field), {{"cache_key", key}});
  }
  return w.text();
}

}  // namespace uffdpager
