// FileDataExtents: a sparse file's data extents as the filesystem reports
// them, what a layer's page map and a merge rely on.
#include "common/file_extents.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace file_extents_test {
namespace {

using testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

TEST(FileDataExtentsTest, SparseFileGivesItsWrittenRangesOnly) {
  TempDir dir;
  const std::string path = dir.path() + "/layer";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), 8 * kMiB), 0);
  const std::string page(4096, 'x');
  ASSERT_EQ(::pwrite(fd.get(), page.data(), page.size(), 0), 4096);
  ASSERT_EQ(::pwrite(fd.get(), page.data(), page.size(), 5 * kMiB), 4096);
  ASSERT_EQ(::fsync(fd.get()), 0);
  auto extents = FileDataExtents(fd.get(), 8 * kMiB, path);
  ASSERT_TRUE(extents.ok()) << extents.status().ToString();
  if (extents->size() == 1 && extents->front() == std::make_pair(uint64_t{0}, 8 * kMiB)) {
    GTEST_SKIP() << "this filesystem reports no holes";
  }
  // A filesystem may round extents to its blocks, never lose a written byte
  // or report the untouched middle.
  ASSERT_EQ(extents->size(), 2u);
  EXPECT_EQ((*extents)[0].first, 0u);
  EXPECT_GE((*extents)[0].second, 4096u);
  EXPECT_LE((*extents)[1].first, 5 * kMiB);
  EXPECT_GE((*extents)[1].second, 5 * kMiB + 4096);
  EXPECT_LT((*extents)[0].second, (*extents)[1].first);

  // Below a shorter size, the extents stop there.
  auto head = FileDataExtents(fd.get(), 1 * kMiB, path);
  ASSERT_TRUE(head.ok());
  ASSERT_EQ(head->size(), 1u);
  EXPECT_EQ((*head)[0].first, 0u);
}

TEST(FileDataExtentsTest, AllHoleFileHasNoExtents) {
  TempDir dir;
  const std::string path = dir.path() + "/empty";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::ftruncate(fd.get(), 4 * kMiB), 0);
  auto extents = FileDataExtents(fd.get(), 4 * kMiB, path);
  ASSERT_TRUE(extents.ok()) << extents.status().ToString();
  if (!extents->empty()) GTEST_SKIP() << "this filesystem reports no holes";
  EXPECT_TRUE(extents->empty());
}

}  // namespace
}  // namespace file_extents_test
}  // namespace uffdpager
