// Working-set refinement: how a replay keeps a recorded working set current.
//
// A replay installs the recorded pages before the guest asks, so it cannot
// see which of them the guest still uses. A refining replay therefore holds
// back a sample of the record (one page in kHeldOutOneIn, chosen anew each
// time from `seed`) and records the demand faults of its record window. The
// refined record is the record without the held-back pages, plus every page
// the window faulted in first-touch order: a held-back page the guest still
// touches faults and stays; one it no longer touches ages out; a page outside
// the record joins. Over successive refinements every recorded page is held
// back in turn, so a guest whose behaviour drifts keeps a useful record,
// while each refining replay demand-faults only about 1/kHeldOutOneIn of the
// record. Refinement is rate-limited by the caller (a record younger than
// the refine interval is replayed whole).
//
// Pure functions, no state: thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_set>
#include <vector>

namespace uffdpager {

inline constexpr uint64_t kHeldOutOneIn = 16;

struct RefiningReplay {
  std::vector<uint64_t> replayed;         // the record without the held-back pages, in its order
  std::unordered_set<uint64_t> held_out;  // the held-back offsets
};

// Splits `record` (memory offsets) into what a refining replay installs and
// what it holds back. The same `seed` holds back the same pages.
RefiningReplay PlanRefiningReplay(const std::vector<uint64_t>& record, uint64_t seed);

// The refined record: `replayed` (the record minus the held-back pages), then
// the pages of `faulted` not already in it, in first-touch order, at most
// `max_pages` in all.
std::vector<uint64_t> RefinedRecord(const std::vector<uint64_t>& replayed, const std::vector<uint64_t>& faulted,
                                    size_t max_pages);

}  // namespace uffdpager
