// MetricsRegistry: every measurement the pager keeps, in one place: the
// pager-wide fault counters, the session outcomes (failed sessions, refused
// peers and handshakes), the fault path's latency histograms, and counters per cache key
// (so an operator can see which snapshot's restores hit the shared cache).
// Sessions count into it through CounterSink; /stats and /metrics read it.
//
// Thread-safe: counters are relaxed atomics; the per-key map has its own lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "pager/metrics/counter_sink.h"
#include "pager/metrics/fault_counters.h"
#include "pager/metrics/fault_latencies.h"
#include "pager/storage/cache_key.h"

namespace uffdpager {

class MetricsRegistry {
 public:
  // Cache keys whose sessions are all gone are forgotten once more than this
  // many are known, so a pager that serves endless distinct keys stays bounded.
  static constexpr size_t kMaxIdleCacheKeys = 256;

  FaultCounters& pager_counters() { return pager_counters_; }
  const FaultCounters& pager_counters() const { return pager_counters_; }
  FaultLatencies& latencies() { return latencies_; }
  const FaultLatencies& latencies() const { return latencies_; }

  void CountFailedSession() { failed_sessions_.fetch_add(1, std::memory_order_relaxed); }
  void CountRefusedPeer() { refused_peers_.fetch_add(1, std::memory_order_relaxed); }
  // A connection to a session socket closed without serving it or failing
  // the session: it handed over no userfaultfd, or the session had its VMM.
  void CountRefusedHandshake() { refused_handshakes_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t failed_sessions() const { return failed_sessions_.load(std::memory_order_relaxed); }
  uint64_t refused_peers() const { return refused_peers_.load(std::memory_order_relaxed); }
  uint64_t refused_handshakes() const { return refused_handshakes_.load(std::memory_order_relaxed); }

  // The counters of `key`'s name, shared by every session of that name; the
  // entry lives at least as long as a session holds it.
  std::shared_ptr<FaultCounters> CountersForCacheKey(const CacheKey& key) EXCLUDES(mu_);
  // Every known cache-key name with its counters, in name order.
  std::vector<std::pair<std::string, std::shared_ptr<FaultCounters>>> CacheKeys() const EXCLUDES(mu_);

  // Where a session's fault engine counts: `session`, the pager's counters,
  // `cache_key` (may be null) and the latency histograms.
  CounterSink SinkFor(FaultCounters* session, FaultCounters* cache_key) {
    return CounterSink(session, &pager_counters_, cache_key, &latencies_);
  }

 private:
  FaultCounters pager_counters_;
  FaultLatencies latencies_;
  std::atomic<uint64_t> failed_sessions_{0};
  std::atomic<uint64_t> refused_peers_{0};
  std::atomic<uint64_t> refused_handshakes_{0};
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<FaultCounters>> by_cache_key_ GUARDED_BY(mu_);
};

}  // namespace uffdpager
