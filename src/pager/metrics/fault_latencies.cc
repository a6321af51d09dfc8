#include "pager/metrics/fault_latencies.h"

namespace uffdpager {

void FaultLatencies::ObserveCounterSample(FaultCounter counter, uint64_t value) {
  if (counter == &FaultCounters::fault_service_ns_total) {
    fault_service.Observe(value);
  } else if (counter == &FaultCounters::backing_read_ns_total) {
    backing_read.Observe(value);
  }
}

}  // namespace uffdpager
