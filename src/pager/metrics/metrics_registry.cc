#include "pager/metrics/metrics_registry.h"

namespace uffdpager {

std::shared_ptr<FaultCounters> MetricsRegistry::CountersForCacheKey(const CacheKey& key) {
  MutexLock lock(&mu_);
  auto& slot = by_cache_key_[key.name()];
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
  MutexLock lock(&mu_);
  return {by_cache_key_.begin(), by_cache_key_.end()};
}

}  // namespace uffdpager
