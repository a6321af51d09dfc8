#include "pager/metrics/metrics_registry.h"

namespace uffdpager {

void LatencyHistograms::ObserveCounterSample(CounterSink::Field field, uint64_t value) {
  if (field == &FaultCounters::fault_service_ns_total) {
    fault_service.Observe(value);
  } else if (field == &FaultCounters::backing_read_ns_total) {
    backing_read.Observe(value);
  }
}

std::shared_ptr<FaultCounters> MetricsRegistry::CountersForCacheKey(const std::string& cache_key) {
  std::lock_guard lock(mu_);
  auto& slot = by_cache_key_[cache_key];
  if (!slot) slot = std::make_shared<FaultCounters>();
  auto counters = slot;
  if (by_cache_key_.size() > kMaxIdleCacheKeys) {
    // Forget keys no session holds (only the map's reference is left).
    for (auto it = by_cache_key_.begin(); it != by_cache_key_.end() && by_cache_key_.size() > kMaxIdleCacheKeys;) {
      it = it->second.use_count() == 1 ? by_cache_key_.erase(it) : std::next(it);
    }
  }
  return counters;
}

std::vector<std::pair<std::string, std::shared_ptr<FaultCounters>>> MetricsRegistry::CacheKeys() const {
  std::lock_guard lock(mu_);
  return {by_cache_key_.begin(), by_cache_key_.end()};
}

}  // namespace uffdpager
