// CounterSink: where one session's fault path counts. One Add goes to the
// session's counters, the pager-wide ones, the session's cache key's (if
// kept) and, for the timing totals, the latency histograms (if kept).
// Relaxed atomics only: counting costs nanoseconds and never takes a lock.
#pragma once

#include <atomic>
#include <cstdint>

#include "pager/metrics/fault_counters.h"
#include "pager/metrics/fault_latencies.h"

namespace uffdpager {

class CounterSink {
 public:
  CounterSink(FaultCounters* session, FaultCounters* pager, FaultCounters* cache_key = nullptr,
              FaultLatencies* latencies = nullptr)
      : session_(session), pager_(pager), cache_key_(cache_key), latencies_(latencies) {}

  void Add(FaultCounter counter, uint64_t n = 1) const {
    (session_->*counter).fetch_add(n, std::memory_order_relaxed);
    (pager_->*counter).fetch_add(n, std::memory_order_relaxed);
    if (cache_key_ != nullptr) (cache_key_->*counter).fetch_add(n, std::memory_order_relaxed);
    if (latencies_ != nullptr) latencies_->ObserveCounterSample(counter, n);
  }
  // Raises a maximum (the session's and the pager's) to `v`.
  void Max(FaultCounter counter, uint64_t v) const {
    RaiseTo(session_->*counter, v);
    RaiseTo(pager_->*counter, v);
  }

 private:
  static void RaiseTo(std::atomic<uint64_t>& a, uint64_t v) {
    uint64_t cur = a.load(std::memory_order_relaxed);
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }

  FaultCounters* session_;
  FaultCounters* pager_;
  FaultCounters* cache_key_;
  FaultLatencies* latencies_;
};

}  // namespace uffdpager
