// What a restore benchmark restores and touches: a generated snapshot memory
// file and the working sets that vCPU-like threads touch in it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::bench {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kMiB = 1ULL << 20;

// Writes `bytes` of snapshot memory to `path`: random bytes, with every
// eighth page zero (real guests have plenty of zero pages, and the pager
// installs them differently). Reuses an existing file of the right size and
// generation so repeated runs do not pay for it.
Status GenerateSnapshotFile(const std::string& path, uint64_t bytes);

// The pages (indices into the memory file) each vCPU thread touches, in the
// order it touches them.
struct WorkingSet {
  std::string name;
  std::vector<std::vector<uint64_t>> per_thread;
  uint64_t distinct_pages = 0;

  uint64_t distinct_bytes() const { return distinct_pages * kPageSize; }
  uint64_t total_touches() const;
  // Every page the threads touch, once each, in ascending order.
  std::vector<uint64_t> SortedDistinctPages() const;
};

// A realistic boot-and-run pattern: a hot core (the first `hot_percent` of
// pages: kernel text, page tables, the service's heap) that EVERY thread walks
// through, each starting at a different point so threads collide on it, plus
// a long tail of `tail_percent` of the remaining pages picked uniformly at
// random and split between the threads.
WorkingSet RealisticWorkingSet(uint64_t pages, unsigned threads, unsigned hot_percent, unsigned tail_percent,
                               uint64_t seed);

// `percent` of all pages picked uniformly at random, split between threads:
// the worst case for anything that guesses by locality.
WorkingSet RandomWorkingSet(uint64_t pages, unsigned threads, unsigned percent, uint64_t seed);

// Touches (reads one byte of) every page of `set` from its threads, through
// `page_address(page index)`; returns the wall time until the last thread is
// done.
std::chrono::nanoseconds TouchWorkingSet(const WorkingSet& set,
                                         const std::function<const uint8_t*(uint64_t)>& page_address);

// Compares a sample of the touched pages (every `stride`-th touch of each
// thread) against the file; an error names the first page that differs. A
// benchmark that served the wrong bytes measured nothing.
Status VerifySample(const WorkingSet& set, const std::function<const uint8_t*(uint64_t)>& page_address,
                    const std::string& snapshot_path, uint64_t stride);

}  // namespace uffdpager::bench
