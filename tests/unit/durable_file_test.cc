// ReadRegularFile: a file this program wrote is read back; anything else
// put in its place (symlink, FIFO, device, directory, a huge file) is
// refused at once, without being read and without blocking.
#include "common/durable_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>

#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace uffdpager {
namespace durable_file_test {
namespace {

using testing::TempDir;
using namespace std::chrono_literals;

// Runs ReadRegularFile on another thread, so a read that blocks fails the
// test instead of hanging it.
Result<std::string> ReadWithin(const std::string& path, size_t max_bytes = kMaxMetadataBytes) {
  auto task = std::async(std::launch::async, [=] { return ReadRegularFile(path, max_bytes); });
  if (task.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "reading " << path << " blocked";
    std::abort();  // the blocked thread cannot be joined
  }
  return task.get();
}

void ExpectRefused(const Result<std::string>& r, const std::string& words) {
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().ToString();
}

TEST(ReadRegularFileTest, ReadsARegularFile) {
  TempDir dir;
  ASSERT_TRUE(WriteFileAtomically(dir / "instance.json", "{\"name\":\"a\"}\n").ok());
  auto r = ReadWithin(dir / "instance.json");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"name\":\"a\"}\n");
}

TEST(ReadRegularFileTest, AMissingFileIsNotFound) {
  TempDir dir;
  auto r = ReadWithin(dir / "missing.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound);
}

TEST(ReadRegularFileTest, ASymlinkIsNotFollowedEvenToARegularFile) {
  TempDir dir;
  ASSERT_TRUE(WriteFileAtomically(dir / "real.json", "{}").ok());
  ASSERT_EQ(::symlink((dir / "real.json").c_str(), (dir / "link.json").c_str()), 0);
  ExpectRefused(ReadWithin(dir / "link.json"), "is a symbolic link");
  ASSERT_EQ(::symlink("/dev/zero", (dir / "zero.json").c_str()), 0);
  ExpectRefused(ReadWithin(dir / "zero.json"), "is a symbolic link");
}

TEST(ReadRegularFileTest, AFifoIsRefusedWithoutBlocking) {
  TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo.json").c_str(), 0600), 0);
  ExpectRefused(ReadWithin(dir / "fifo.json"), "is not a regular file (it is a FIFO)");
}

TEST(ReadRegularFileTest, DevicesAndDirectoriesAreRefused) {
  ExpectRefused(ReadWithin("/dev/zero"), "(it is a character device)");
  TempDir dir;
  ExpectRefused(ReadWithin(dir.path()), "(it is a directory)");
}

TEST(ReadRegularFileTest, AFileOverTheBoundIsRefusedUnread) {
  TempDir dir;
  {
    std::ofstream out(dir / "big.json");
    out << std::string(kMaxMetadataBytes + 1, 'x');
  }
  ExpectRefused(ReadWithin(dir / "big.json"), "more than the 1048576");
  EXPECT_TRUE(ReadWithin(dir / "big.json", kMaxMetadataBytes + 1).ok());
}

}  // namespace
}  // namespace durable_file_test
}  // namespace uffdpager
