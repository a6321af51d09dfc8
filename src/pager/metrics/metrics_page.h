// The /metrics page: every pager-wide counter, gauge and latency histogram,
// and per-cache-key counters, in Prometheus text format.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "pager/metrics/metrics_registry.h"
#include "pager/storage/object_tier.h"
#include "pager/storage/page_cache.h"
#include "pager/storage/working_set_writer.h"

namespace uffdpager {

// What the page is made of, gathered by the control API at request time.
struct MetricsPageSources {
  const MetricsRegistry* registry = nullptr;  // counters, outcomes, latencies, cache keys
  PageCacheCounters cache;
  const WorkingSetWriter* working_set_writer = nullptr;  // may be null
  std::optional<ObjectTierStats> object_tier;            // none: no object store
  std::map<std::string, uint64_t> sessions_by_state;     // every state, zeros included
  bool draining = false;
  double uptime_seconds = 0;
  std::string version_key;
  std::string pager_version;
};

std::string RenderMetricsPage(const MetricsPageSources& sources);

}  // namespace uffdpager
