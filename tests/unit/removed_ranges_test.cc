#include "pager/serving/removed_ranges.h"

#include <gtest/gtest.h>

#include "common/uffd_handshake.h"
#include "pager/serving/page_presence.h"

namespace uffdpager {
namespace {

TEST(RemovedRangesTest, MergesOverlappingAndAdjacentRanges) {
  RemovedRanges r;
  r.Add(0x1000, 0x3000);
  r.Add(0x5000, 0x6000);
  r.Add(0x3000, 0x5000);  // bridges both
  EXPECT_EQ(r.total_bytes(), 0x5000u);
  EXPECT_TRUE(r.Contains(0x1000));
  EXPECT_TRUE(r.Contains(0x5fff));
  EXPECT_FALSE(r.Contains(0x6000));
  EXPECT_FALSE(r.Contains(0xfff));
  EXPECT_TRUE(r.Overlaps(0x0, 0x1001));
  EXPECT_FALSE(r.Overlaps(0x6000, 0x7000));
  r.Add(0x0, 0x10000);
  EXPECT_EQ(r.total_bytes(), 0x10000u);
}

TEST(PagePresenceTest, RemoveClearsOnlyOverlappingPages) {
  PagePresence p({{0x100000, 0x10000, 0, 4096}});
  for (uint64_t i = 0; i < 16; ++i) p.MarkPresent(0, i);
  p.MarkPresent(0, 3);  // twice counts once
  EXPECT_EQ(p.present_pages(), 16u);
  p.ClearRange(0, 0x102000, 0x104000);
  EXPECT_EQ(p.present_pages(), 14u);
  EXPECT_FALSE(p.IsPresent(0, 2));
  EXPECT_FALSE(p.IsPresent(0, 3));
  EXPECT_TRUE(p.IsPresent(0, 4));
  p.ClearRange(0, 0x0, 0x1000);  // outside the region: no effect
  EXPECT_EQ(p.present_pages(), 14u);
}

}  // namespace
}  // namespace uffdpager
