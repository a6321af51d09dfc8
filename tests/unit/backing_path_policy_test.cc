// BackingPathPolicy: with --allowed-backing-root, a backing file is opened
// only if it is beneath a root and its one resolution (openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS from the root's fd) never leaves
// it; without roots, any readable file opens.
#include "pager/access/backing_path_policy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace backing_path_policy_test {
namespace {

// A failure guard for opens that must not block.
constexpr std::chrono::seconds kOpenDeadline{5};

void WriteFile(const std::string& path, size_t bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string(bytes, 'm');
}

ino_t InodeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st.st_ino;
}

// A root with a memory file in it (ROOT/snap/mem, 3 pages) and, next to the
// root, a file that must stay out of reach (OUTSIDE/secret).
class BackingPathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    root_ = dir_ / "root";
    outside_ = dir_ / "outside";
    std::filesystem::create_directories(root_ + "/snap");
    std::filesystem::create_directories(outside_);
    mem_ = root_ + "/snap/mem";
    secret_ = outside_ + "/secret";
    WriteFile(mem_, 3 * 4096);
    WriteFile(secret_, 4096);
  }

  BackingPathPolicy Restricted(const std::vector<std::string>& roots) {
    auto policy = BackingPathPolicy::Create(roots);
    EXPECT_TRUE(policy.ok()) << policy.status().ToString();
    return std::move(*policy);
  }

  // Opening `path` must be refused as a permission matter, naming the path.
  static void ExpectRefused(const BackingPathPolicy& policy, const std::string& path) {
    auto file = policy.Open(path);
    ASSERT_FALSE(file.ok()) << path << " was opened";
    EXPECT_EQ(file.status().code(), ErrorCode::kPermissionDenied) << file.status().ToString();
    EXPECT_NE(file.status().message().find(path), std::string::npos)
        << "the refusal should name the path: " << file.status().ToString();
  }

  testing::TempDir dir_;
  std::string root_, outside_, mem_, secret_;
};

TEST_F(BackingPathPolicyTest, WithoutRootsAnyReadableFileOpens) {
  auto policy = BackingPathPolicy::Create({});
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_FALSE(policy->restricted());
  for (const std::string& path : {mem_, secret_}) {
    auto file = policy->Open(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    EXPECT_EQ((*file)->identity().inode, InodeOf(path));
  }
  auto missing = policy->Open(dir_ / "missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound) << missing.status().ToString();
}

TEST_F(BackingPathPolicyTest, AFileBeneathARootOpensAsThatVeryFile) {
  // Configured with a trailing slash, after another root.
  BackingPathPolicy policy = Restricted({outside_, root_ + "/"});
  EXPECT_TRUE(policy.restricted());
  auto file = policy.Open(mem_);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->identity().inode, InodeOf(mem_));
  EXPECT_EQ((*file)->size(), 3u * 4096);
  std::string bytes(16, '\0');
  ASSERT_TRUE((*file)->ReadExact(4096, bytes.data(), bytes.size()).ok());
  EXPECT_EQ(bytes, std::string(16, 'm'));

  // ".." that stays inside the root, and a relative symlink inside it, are fine.
  auto dotdot = policy.Open(root_ + "/snap/../snap/mem");
  ASSERT_TRUE(dotdot.ok()) << dotdot.status().ToString();
  EXPECT_EQ((*dotdot)->identity().inode, InodeOf(mem_));
  ASSERT_EQ(::symlink("snap/mem", (root_ + "/link").c_str()), 0) << std::strerror(errno);
  auto linked = policy.Open(root_ + "/link");
  ASSERT_TRUE(linked.ok()) << linked.status().ToString();
  EXPECT_EQ((*linked)->identity().inode, InodeOf(mem_));
}

TEST_F(BackingPathPolicyTest, DotDotOutOfTheRootIsRefused) {
  BackingPathPolicy policy = Restricted({root_});
  ExpectRefused(policy, root_ + "/../outside/secret");
  ExpectRefused(policy, root_ + "/snap/../../outside/secret");
  ExpectRefused(policy, root_ + "/snap/../../root/snap/mem");  // out and back in: still out once
}

TEST_F(BackingPathPolicyTest, AbsoluteSymlinksAreRefusedEvenToAFileInsideTheRoot) {
  BackingPathPolicy policy = Restricted({root_});
  ASSERT_EQ(::symlink(secret_.c_str(), (root_ + "/to-secret").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::symlink(mem_.c_str(), (root_ + "/to-mem").c_str()), 0) << std::strerror(errno);
  ExpectRefused(policy, root_ + "/to-secret");
  ExpectRefused(policy, root_ + "/to-mem");
  // As an intermediate component too.
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/snap/dir").c_str()), 0) << std::strerror(errno);
  ExpectRefused(policy, root_ + "/snap/dir/secret");
}

TEST_F(BackingPathPolicyTest, RelativeSymlinksThatEscapeTheRootAreRefused) {
  BackingPathPolicy policy = Restricted({root_});
  ASSERT_EQ(::symlink("../../outside/secret", (root_ + "/snap/escape").c_str()), 0) << std::strerror(errno);
  ExpectRefused(policy, root_ + "/snap/escape");
  ASSERT_EQ(::symlink("..", (root_ + "/up").c_str()), 0) << std::strerror(errno);
  ExpectRefused(policy, root_ + "/up/outside/secret");
}

TEST_F(BackingPathPolicyTest, ProcMagicLinksAreRefused) {
  // A memory file the process has open, reached through /proc's magic links
  // (which resolve to the open file itself, wherever it is).
  UniqueFd secret(::open(secret_.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(secret.valid()) << std::strerror(errno);
  const std::string fd_link = "/proc/self/fd/" + std::to_string(secret.get());

  // Under a root of /proc itself, the path is textually beneath the root.
  BackingPathPolicy proc = Restricted({"/proc"});
  ExpectRefused(proc, fd_link);
  ExpectRefused(proc, "/proc/self/root" + secret_);
  ExpectRefused(proc, "/proc/self/cwd/" + secret_.substr(1));

  // And a symlink inside a root that points at /proc.
  BackingPathPolicy policy = Restricted({root_});
  ASSERT_EQ(::symlink(fd_link.c_str(), (root_ + "/magic").c_str()), 0) << std::strerror(errno);
  ExpectRefused(policy, root_ + "/magic");
}

TEST_F(BackingPathPolicyTest, APathUnderNoRootIsRefusedNamingTheRoots) {
  BackingPathPolicy policy = Restricted({root_});
  auto file = policy.Open(secret_);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), ErrorCode::kPermissionDenied) << file.status().ToString();
  EXPECT_NE(file.status().message().find(secret_), std::string::npos) << file.status().ToString();
  EXPECT_NE(file.status().message().find(root_), std::string::npos) << file.status().ToString();

  // A sibling whose name merely starts with the root's name is not beneath it.
  std::filesystem::create_directories(root_ + "-sibling");
  WriteFile(root_ + "-sibling/mem", 4096);
  ExpectRefused(policy, root_ + "-sibling/mem");
  // Nor is the root itself, nor a relative path.
  ExpectRefused(policy, root_);
  ExpectRefused(policy, root_ + "/");
  auto relative = policy.Open("snap/mem");
  EXPECT_FALSE(relative.ok());
}

TEST_F(BackingPathPolicyTest, CreateFailsForARootThatIsNotAnExistingAbsoluteDirectory) {
  auto missing = BackingPathPolicy::Create({dir_ / "no-such-root"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir_ / "no-such-root"), std::string::npos) << missing.status().ToString();
  EXPECT_FALSE(BackingPathPolicy::Create({mem_}).ok()) << "a file is not a root";
  EXPECT_FALSE(BackingPathPolicy::Create({"relative/root"}).ok());
  EXPECT_FALSE(BackingPathPolicy::Create({""}).ok());
  EXPECT_FALSE(BackingPathPolicy::Create({root_, dir_ / "no-such-root"}).ok()) << "one bad root fails them all";
}

// Opens `fifo` through `policy` on a thread and expects a prompt refusal.
// If the open is still blocked after kOpenDeadline, the FIFO is opened for
// writing (a writer lets a waiting reader through) so the thread can be
// joined, and the test fails.
void ExpectFifoRefusedWithoutBlocking(const BackingPathPolicy& policy, const std::string& fifo) {
  std::promise<Status> opened;
  std::future<Status> result = opened.get_future();
  std::thread opener([&] {
    auto file = policy.Open(fifo);
    opened.set_value(file.ok() ? Status::Ok() : file.status());
  });
  const bool returned = result.wait_for(kOpenDeadline) == std::future_status::ready;
  UniqueFd writer;  // kept until the opener is done, for any reopen after the open
  if (!returned) {
    writer = UniqueFd(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    EXPECT_TRUE(writer.valid()) << std::strerror(errno);
  }
  opener.join();
  EXPECT_TRUE(returned) << "opening the FIFO " << fifo << " blocked for " << kOpenDeadline.count() << " s";
  Status st = result.get();
  EXPECT_FALSE(st.ok()) << "a FIFO is not a memory file";
}

// DISABLED: a known bug, to be fixed in src/pager (another engineer's
// change). Opening a FIFO blocks until some process opens it for writing:
// OpenBeneath (and BackingFile::Open, for an unrestricted policy) opens with
// O_RDONLY and no O_NONBLOCK, and only BackingFile::Open, after the open,
// refuses what is not a regular file. Whoever may create a FIFO in a root
// (or, without roots, name one anywhere) can thus park the thread that opens
// a session's backing file. Enable these two with the fix; until then they
// fail after kOpenDeadline.
TEST_F(BackingPathPolicyTest, DISABLED_AFifoBeneathARootIsRefusedWithoutBlocking) {
  BackingPathPolicy policy = Restricted({root_});
  const std::string fifo = root_ + "/snap/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ExpectFifoRefusedWithoutBlocking(policy, fifo);
}

TEST_F(BackingPathPolicyTest, DISABLED_AFifoIsRefusedWithoutBlockingWithoutRootsToo) {
  auto policy = BackingPathPolicy::Create({});
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  const std::string fifo = outside_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ExpectFifoRefusedWithoutBlocking(*policy, fifo);
}

}  // namespace
}  // namespace backing_path_policy_test
}  // namespace uffdpager
