// FaultLatencies: the fault path's latency histograms. The fault engine
// reports each fault's service time and each backing read's time as one
// CounterSink::Add to a *_ns_total counter; the sink files that same sample
// here (ObserveCounterSample), so the engine needs no second reporting path.
// Fill ioctls are timed by the Userfaultfd itself (UffdFillObserver).
#pragma once

#include <cstdint>

#include "common/userfaultfd.h"
#include "pager/metrics/fault_counters.h"
#include "pager/metrics/latency_histogram.h"

namespace uffdpager {

class FaultLatencies final : public UffdFillObserver {
 public:
  LatencyHistogram fault_service;  // fault read -> page installed and thread woken
  LatencyHistogram backing_read;   // one read of the backing memory (cache misses only)
  LatencyHistogram uffd_fill;      // one UFFDIO_COPY or UFFDIO_ZEROPAGE ioctl

  // Files `value` if `counter` is one of the timing totals; ignores the rest.
  void ObserveCounterSample(FaultCounter counter, uint64_t value);
  void OnFill(uint64_t nanoseconds) override { uffd_fill.Observe(nanoseconds); }
};

}  // namespace uffdpager
