// The /metrics page: every pager-wide counter, gauge and latency histogram,
// and per-cache-key counters, in Prometheus text format.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "pager/metrics/fault_counters.h"
#include "pager/metrics/metrics_registry.h"
#include "pager/storage/page_cache.h"

namespace uffdpager {

// What the page is made of, gathered by the control API at request time.
struct MetricsPageSources {
  const FaultCounters* counters = nullptr;  // pager-wide
  PageCacheCounters cache;
  const MetricsRegistry* registry = nullptr;
  std::map<std::string, uint64_t> sessions_by_state;  // every state, zeros included
  uint64_t failed_sessions = 0;
  uint64_t refused_peers = 0;
  bool draining = false;
  double uptime_seconds = 0;
  std::string version_key;
  std::string pager_version;
};

std::string RenderMetricsPage(const MetricsPageSources& sources);

}  // namespace uffdpager
