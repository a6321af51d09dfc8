// BackingMapping: completion's read-only source, and its SIGBUS guard.
#include "pager/storage/backing_mapping.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace {

constexpr uint64_t kPage = 4096;

// A file of `pages` pages: page p holds the byte p + 1, except the pages in
// `zero` (written as zeros) and `holes` (punched out).
std::string MakeFile(const std::string& dir, uint64_t pages, const std::vector<uint64_t>& zero,
                     const std::vector<uint64_t>& holes) {
  std::string path = dir + "/mem";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  EXPECT_TRUE(fd.valid());
  std::vector<uint8_t> page(kPage);
  for (uint64_t p = 0; p < pages; ++p) {
    bool is_zero = std::find(zero.begin(), zero.end(), p) != zero.end();
    std::memset(page.data(), is_zero ? 0 : int(p + 1), kPage);
    EXPECT_EQ(::pwrite(fd.get(), page.data(), kPage, off_t(p * kPage)), ssize_t(kPage));
  }
  for (uint64_t p : holes) {
    EXPECT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(p * kPage), kPage), 0);
  }
  return path;
}

TEST(BackingMappingTest, FindsZeroPagesInDataAndHolesAndReadsOnlyData) {
  testing::TempDir dir;
  std::string path = MakeFile(dir.path(), 8, {2}, {5});
  auto file = BackingFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  if (!(*file)->IsHole(5 * kPage, kPage)) GTEST_SKIP() << "this filesystem does not report holes";
  auto mapping = BackingMapping::Map(*file);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  uint64_t read = 0;
  ASSERT_TRUE(mapping->Load(0, 8 * kPage, &read).ok());
  EXPECT_EQ(read, 7 * kPage) << "the hole must not count as read";
  std::vector<uint8_t> zero(8, 7);
  ASSERT_TRUE(mapping->FindZeroPages(0, kPage, 8, zero.data()).ok());
  EXPECT_EQ(zero, (std::vector<uint8_t>{0, 0, 1, 0, 0, 1, 0, 0}));
  EXPECT_EQ(mapping->at(3 * kPage)[100], 4);
  mapping->Release(0, 8 * kPage);
  EXPECT_EQ(mapping->at(3 * kPage)[100], 4) << "released pages read again from the page cache";
}

TEST(BackingMappingTest, AFileTruncatedUnderTheMappingFailsTheRunNotThePager) {
  testing::TempDir dir;
  std::string path = MakeFile(dir.path(), 256, {}, {});
  auto file = BackingFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto mapping = BackingMapping::Map(*file);
  ASSERT_TRUE(mapping.ok()) << mapping.status().ToString();
  ASSERT_EQ(::truncate(path.c_str(), 4 * kPage), 0);

  // The zero scan reads the mapping from user space: past the new end that
  // is a SIGBUS, which the guard turns into this run's error.
  std::vector<uint8_t> zero(256);
  Status scan = mapping->FindZeroPages(0, kPage, 256, zero.data());
  ASSERT_FALSE(scan.ok());
  EXPECT_NE(scan.message().find("truncated"), std::string::npos) << scan.ToString();
  uint64_t read = 0;
  Status load = mapping->Load(0, 256 * kPage, &read);
  ASSERT_FALSE(load.ok());
  EXPECT_NE(load.message().find("truncated"), std::string::npos) << load.ToString();
  // What is left of the file still reads.
  EXPECT_TRUE(mapping->FindZeroPages(0, kPage, 4, zero.data()).ok());
  EXPECT_EQ(mapping->at(kPage)[0], 2);
}

TEST(BackingMappingDeathTest, ASigbusOutsideAGuardedReadStillKills) {
  // The guard catches only its own range: any other SIGBUS is a bug and must
  // end the process as it would have without the handler.
  testing::TempDir dir;
  std::string path = MakeFile(dir.path(), 16, {}, {});
  auto file = BackingFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto mapping = BackingMapping::Map(*file);
  ASSERT_TRUE(mapping.ok());
  std::vector<uint8_t> zero(16);
  ASSERT_TRUE(mapping->FindZeroPages(0, kPage, 16, zero.data()).ok());  // the handler is installed
  ASSERT_EQ(::truncate(path.c_str(), kPage), 0);
  EXPECT_EXIT(
      {
        volatile uint8_t byte = mapping->at(8 * kPage)[0];
        (void)byte;
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

}  // namespace
}  // namespace uffdpager
