// MetricsRegistry: the measurements /metrics exposes beyond the plain
// counters: latency histograms of the fault path, and counters per cache key
// (so an operator can see which snapshot's restores hit the shared cache).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/userfaultfd.h"
#include "pager/metrics/fault_counters.h"
#include "pager/metrics/latency_histogram.h"

namespace uffdpager {

// The fault path's latencies. The fault engine reports each fault's service
// time and each backing read's time as one CounterSink::Add to its *_ns_total
// field; CounterSink files that same sample here (ObserveCounterSample), so
// the engine needs no second reporting path. Fill ioctls are timed by the
// Userfaultfd itself (UffdFillObserver).
class LatencyHistograms final : public UffdFillObserver {
 public:
  LatencyHistogram fault_service;  // fault read -> page installed and thread woken
  LatencyHistogram backing_read;   // one pread of the memory file (cache misses only)
  LatencyHistogram uffd_fill;      // one UFFDIO_COPY or UFFDIO_ZEROPAGE ioctl

  void ObserveCounterSample(CounterSink::Field field, uint64_t value);
  void OnFill(uint64_t nanoseconds) override { uffd_fill.Observe(nanoseconds); }
};

class MetricsRegistry {
 public:
  // Cache keys whose sessions are all gone are forgotten once more than this
  // many are known, so a pager that serves endless distinct keys stays bounded.
  static constexpr size_t kMaxIdleCacheKeys = 256;

  LatencyHistograms& latencies() { return latencies_; }
  const LatencyHistograms& latencies() const { return latencies_; }

  // The counters of `cache_key`, shared by every session of that key; the
  // entry lives at least as long as a session holds it.
  std::shared_ptr<FaultCounters> CountersForCacheKey(const std::string& cache_key);

  // Every known cache key with its counters, in key order.
  std::vector<std::pair<std::string, std::shared_ptr<FaultCounters>>> CacheKeys() const;

 private:
  LatencyHistograms latencies_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<FaultCounters>> by_cache_key_;
};

}  // namespace uffdpager
