// In-process tests of the refinement arithmetic (the pager-level behaviour is
// in pager_compact_working_set_test.cc).
#include "pager/serving/working_set_refinement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace uffdpager::testing::working_set_refinement_test {
namespace {

std::vector<uint64_t> Record(size_t pages) {
  std::vector<uint64_t> out(pages);
  for (size_t i = 0; i < pages; ++i) out[i] = (pages - i) * 4096;  // not in file order
  return out;
}

TEST(WorkingSetRefinementTest, AReplayHoldsBackAboutOnePageInSixteenAndKeepsTheRestInOrder) {
  const auto record = Record(16000);
  const RefiningReplay plan = PlanRefiningReplay(record, 42);
  EXPECT_EQ(plan.replayed.size() + plan.held_out.size(), record.size());
  EXPECT_GT(plan.held_out.size(), record.size() / kHeldOutOneIn / 2);
  EXPECT_LT(plan.held_out.size(), record.size() / kHeldOutOneIn * 2);
  // The replayed pages keep the record's order, and none is held back.
  std::vector<uint64_t> expected;
  for (uint64_t o : record) {
    if (plan.held_out.count(o) == 0) expected.push_back(o);
  }
  EXPECT_EQ(plan.replayed, expected);
}

TEST(WorkingSetRefinementTest, TheSameSeedHoldsBackTheSamePagesAnotherSeedOthers) {
  const auto record = Record(4000);
  EXPECT_EQ(PlanRefiningReplay(record, 7).held_out, PlanRefiningReplay(record, 7).held_out);
  EXPECT_NE(PlanRefiningReplay(record, 7).held_out, PlanRefiningReplay(record, 8).held_out);
}

TEST(WorkingSetRefinementTest, TheRefinedRecordIsTheReplayedPagesThenNewFaultsOnceEachWithinTheBound) {
  const std::vector<uint64_t> replayed = {5, 1, 9};
  const std::vector<uint64_t> faulted = {9, 4, 4, 2};
  EXPECT_EQ(RefinedRecord(replayed, faulted, 100), (std::vector<uint64_t>{5, 1, 9, 4, 2}));
  EXPECT_EQ(RefinedRecord(replayed, faulted, 4), (std::vector<uint64_t>{5, 1, 9, 4}));
  EXPECT_EQ(RefinedRecord({}, faulted, 100), (std::vector<uint64_t>{9, 4, 2}));
}

}  // namespace
}  // namespace uffdpager::testing::working_set_refinement_test
