#include "pager/serving/memory_layout.h"

#include <gtest/gtest.h>

#include "pager/serving/session_registry.h"

namespace uffdpager {
namespace {

TEST(MemoryLayoutTest, LocatesPagesAcrossRegions) {
  auto layout =
      MemoryLayout::Create({{0x40000000, 0x200000, 0x200000, 4096}, {0x10000000, 0x200000, 0, 4096}}, 0x400000);
  ASSERT_TRUE(layout.ok());
  auto loc = layout->Locate(0x40001234);
  ASSERT_TRUE(loc.has_value());
  EXPECT_EQ(loc->page_addr, 0x40001000u);
  EXPECT_EQ(loc->file_offset, 0x201000u);
  EXPECT_EQ(loc->page_index, 1u);
  EXPECT_FALSE(layout->Locate(0x40200000).has_value());
  EXPECT_FALSE(layout->Locate(0x0fffffff).has_value());
  EXPECT_EQ(layout->Locate(0x10000000)->file_offset, 0u);
}

TEST(MemoryLayoutTest, RefusesRegionsPastTheEndOfTheFile) {
  auto layout = MemoryLayout::Create({{0x10000000, 0x200000, 0x100000, 4096}}, 0x200000);
  ASSERT_FALSE(layout.ok());
  EXPECT_NE(layout.status().message().find("past the end"), std::string::npos);
}

TEST(SessionIdTest, OnlySafeFileNames) {
  EXPECT_TRUE(IsValidSessionId("vm-1.restore_2"));
  EXPECT_FALSE(IsValidSessionId(""));
  EXPECT_FALSE(IsValidSessionId(".."));
  EXPECT_FALSE(IsValidSessionId("../etc"));
  EXPECT_FALSE(IsValidSessionId("a/b"));
  EXPECT_FALSE(IsValidSessionId("a b"));
  EXPECT_FALSE(IsValidSessionId(std::string(129, 'a')));
}

}  // namespace
}  // namespace uffdpager
