#include "pager/serving/working_set_refinement.h"

#include <algorithm>

namespace uffdpager {

namespace {

// SplitMix64's finalizer: neighbouring offsets land in unrelated samples.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

RefiningReplay PlanRefiningReplay(const std::vector<uint64_t>& record, uint64_t seed) {
  RefiningReplay plan;
  plan.replayed.reserve(record.size());
  const uint64_t salt = Mix(seed);
  for (uint64_t offset : record) {
    if (Mix(offset ^ salt) % kHeldOutOneIn == 0) {
      plan.held_out.insert(offset);
    } else {
      plan.replayed.push_back(offset);
    }
  }
  return plan;
}

std::vector<uint64_t> RefinedRecord(const std::vector<uint64_t>& replayed, const std::vector<uint64_t>& faulted,
                                    size_t max_pages) {
  std::vector<uint64_t> out;
  out.reserve(std::min(max_pages, replayed.size() + faulted.size()));
  std::unordered_set<uint64_t> seen;
  seen.reserve(replayed.size() + faulted.size());
  for (const std::vector<uint64_t>* part : {&replayed, &faulted}) {
    for (uint64_t offset : *part) {
      if (out.size() >= max_pages) return out;
      if (seen.insert(offset).second) out.push_back(offset);
    }
  }
  return out;
}

}  // namespace uffdpager
