// FaultCounters: what the fault path counts, kept once per session and once
// for the whole pager. CounterSink updates both with one call.
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>

namespace uffdpager {

struct FaultCounters {
  std::atomic<uint64_t> faults{0};             // page-fault events read
  std::atomic<uint64_t> pages_copied{0};       // UFFDIO_COPY successes
  std::atomic<uint64_t> bytes_copied{0};
  std::atomic<uint64_t> zero_pages{0};         // pages installed as zeros (zero content, holes, removed ranges)
  std::atomic<uint64_t> already_present{0};    // EEXIST or known-present: answered with a wake
  std::atomic<uint64_t> copy_errors{0};
  std::atomic<uint64_t> eagain_retries{0};
  std::atomic<uint64_t> remove_events{0};
  std::atomic<uint64_t> removed_bytes{0};
  std::atomic<uint64_t> backing_bytes_read{0};
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> cache_misses{0};
  std::atomic<uint64_t> unservable_faults{0};
  std::atomic<uint64_t> completion_pages{0};   // pages installed by complete
  std::atomic<uint64_t> fault_around_pages{0}; // neighbours installed with a demand fault
  std::atomic<uint64_t> prefetch_pages{0};     // pages installed from a recorded working set
  std::atomic<uint64_t> fault_service_ns_total{0};
  std::atomic<uint64_t> fault_service_ns_max{0};
  std::atomic<uint64_t> backing_read_ns_total{0};

  nlohmann::json ToJson() const;
};

class LatencyHistograms;

// Adds to a session's counters and the pager-wide ones together, and, where
// given, to its cache key's counters and (for the *_ns_total timing fields,
// one sample per call) the latency histograms.
class CounterSink {
 public:
  using Field = std::atomic<uint64_t> FaultCounters::*;
  CounterSink(FaultCounters* session, FaultCounters* global, FaultCounters* cache_key = nullptr,
              LatencyHistograms* latencies = nullptr)
      : session_(session), global_(global), cache_key_(cache_key), latencies_(latencies) {}

  void Add(Field field, uint64_t n = 1) const {
    (session_->*field).fetch_add(n, std::memory_order_relaxed);
    (global_->*field).fetch_add(n, std::memory_order_relaxed);
    if (cache_key_ != nullptr) (cache_key_->*field).fetch_add(n, std::memory_order_relaxed);
    if (latencies_ != nullptr) ObserveLatency(field, n);
  }
  void Max(Field field, uint64_t v) const {
    RaiseTo(session_->*field, v);
    RaiseTo(global_->*field, v);
  }

 private:
  static void RaiseTo(std::atomic<uint64_t>& a, uint64_t v) {
    uint64_t cur = a.load(std::memory_order_relaxed);
    while (cur < v && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }
  void ObserveLatency(Field field, uint64_t n) const;

  FaultCounters* session_;
  FaultCounters* global_;
  FaultCounters* cache_key_;
  LatencyHistograms* latencies_;
};

}  // namespace uffdpager
