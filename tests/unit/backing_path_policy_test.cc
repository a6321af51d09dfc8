// BackingPathPolicy: with --allowed-backing-root, a backing file is opened
// only if it is beneath a root and its one resolution (openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS from the root's fd) never leaves
// it; without roots, any readable file opens.
#include "pager/access/backing_path_policy.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
  ASSERT_FALSE(st.ok()) << "a FIFO is not a memory file";
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(fifo + " is not a regular file (it is a FIFO)"), std::string::npos) << st.ToString();
}

TEST_F(BackingPathPolicyTest, AFifoBeneathARootIsRefusedWithoutBlocking) {
  BackingPathPolicy policy = Restricted({root_});
  const std::string fifo = root_ + "/snap/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ExpectFifoRefusedWithoutBlocking(policy, fifo);
}

TEST_F(BackingPathPolicyTest, AFifoIsRefusedWithoutBlockingWithoutRootsToo) {
  auto policy = BackingPathPolicy::Create({});
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  const std::string fifo = outside_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  ExpectFifoRefusedWithoutBlocking(*policy, fifo);
}

// What BackingFile::path() says, and every error, is the path the caller
// gave: never the /proc/self/fd/N through which a root's file is reached.
TEST_F(BackingPathPolicyTest, TheFileAndItsErrorsNameThePathTheCallerGave) {
  BackingPathPolicy policy = Restricted({root_});
  auto file = policy.Open(mem_);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->path(), mem_);
  std::string page(4096, '\0');
  Status past_end = (*file)->ReadExact(3 * 4096, page.data(), page.size());
  ASSERT_FALSE(past_end.ok());
  EXPECT_NE(past_end.message().find(mem_), std::string::npos) << past_end.ToString();

  auto dir = policy.Open(root_ + "/snap");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), ErrorCode::kInvalidArgument) << dir.status().ToString();
  EXPECT_NE(dir.status().message().find(root_ + "/snap is not a regular file (it is a directory)"), std::string::npos)
      << dir.status().ToString();
  EXPECT_EQ(dir.status().ToString().find("/proc/self/fd"), std::string::npos) << dir.status().ToString();

  auto unrestricted = BackingPathPolicy::Create({});
  ASSERT_TRUE(unrestricted.ok());
  auto plain = unrestricted->Open(mem_);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ((*plain)->path(), mem_);
}

// "//" and "/./" are only spelling: the path is matched against the roots
// after they are folded away, while ".." is left to RESOLVE_BENEATH.
TEST_F(BackingPathPolicyTest, DoubleSlashesAndDotComponentsAreNormalizedBeforeMatching) {
  BackingPathPolicy policy = Restricted({root_});
  const std::string spelled_root = "/." + root_.substr(0, 4) + "//" + root_.substr(5);  // "/./tmp//uffdt..."
  for (const std::string& path : {root_ + "//snap/mem", root_ + "/./snap/./mem", root_ + "/snap//mem",
                                  spelled_root + "/snap/mem", root_ + "///.//snap/mem"}) {
    auto file = policy.Open(path);
    ASSERT_TRUE(file.ok()) << path << ": " << file.status().ToString();
    EXPECT_EQ((*file)->identity().inode, InodeOf(mem_)) << path;
    EXPECT_EQ((*file)->path(), path) << "shown as given";
  }
  ExpectRefused(policy, root_ + "//..//outside/secret");
  ExpectRefused(policy, root_ + "/./../outside/secret");
  ExpectRefused(policy, root_ + "/.");
  ExpectRefused(policy, root_ + "//");
}

TEST_F(BackingPathPolicyTest, DevicesSocketsAndDirectoriesAreRefusedNamingWhatTheyAre) {
  struct Case {
    std::string root;
    std::string path;
    std::string type;
  };
  int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  UniqueFd sock_fd(sock);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = root_ + "/snap/sock";
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  for (const Case& c :
       {Case{"/dev", "/dev/zero", "a character device"}, Case{"/dev", "/dev/null", "a character device"},
        Case{root_, sock_path, "a socket"}, Case{root_, root_ + "/snap", "a directory"}}) {
    for (bool restricted : {true, false}) {
      auto policy =
          BackingPathPolicy::Create(restricted ? std::vector<std::string>{c.root} : std::vector<std::string>{});
      ASSERT_TRUE(policy.ok()) << policy.status().ToString();
      auto file = policy->Open(c.path);
      ASSERT_FALSE(file.ok()) << c.path << " was opened";
      EXPECT_EQ(file.status().code(), ErrorCode::kInvalidArgument) << file.status().ToString();
      EXPECT_NE(file.status().message().find(c.path + " is not a regular file (it is " + c.type + ")"),
                std::string::npos)
          << file.status().ToString();
    }
  }
}

}  // namespace
}  // namespace backing_path_policy_test
}  // namespace uffdpager
