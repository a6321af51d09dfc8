// Fan-out: eight forks of one standby source, restored at once through one
// pager. Forking copies no memory; the pager reads each page of the source
// at most once however many forks touch it (one shared cache key), so its
// reads stay within one copy of the memory file; every fork's memory is
// exactly its own.
#include <sys/wait.h>

#include <set>
#include <thread>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleFanOutTest : public LifecycleTest {};

TEST_F(LifecycleFanOutTest, EightForksRestoreAtOnceThroughOnePager) {
  constexpr int kForks = 8;
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(400));
  Ok({"standby", "src"});
  KeptSnapshot s1 = Keep("src", "s1");
  const std::set<std::string> blobs = Blobs();

  std::vector<std::string> forks;
  for (int i = 0; i < kForks; ++i) {
    forks.push_back("f" + std::to_string(i));
    Ok({"fork", "src", forks.back(), "--state", "standby"});
  }
  EXPECT_EQ(Blobs(), blobs) << "forks copy no memory";

  // All restores at once: eight snapctl processes started together.
  std::vector<ChildProcess> restores;
  for (const auto& f : forks) {
    auto p = ChildProcess::Spawn({SNAPCTL_BIN, "--data-dir", data_, "restore", f}, dir_ + "/snapctl.log");
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    restores.push_back(std::move(*p));
  }
  for (auto& p : restores) {
    int status = -1;
    ASSERT_TRUE(p.WaitForExit(120s, &status));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a restore failed; see snapctl.log";
  }
  for (const auto& f : forks) WaitForSteps(f, s1.step + Steps(300));
  for (const auto& f : forks) EXPECT_EQ(Show(f).state, InstanceState::kRunning) << f;

  // The pager's reads first, then what the forks were served: a fork that
  // faults on in between only makes `served` larger.
  auto stats = Pager().Stats();
  ASSERT_TRUE(stats.ok());
  uint64_t read = stats->value("backing_bytes_read", uint64_t{0});
  auto sessions = Pager().ListSessions();
  ASSERT_TRUE(sessions.ok()) << sessions.status().ToString();
  uint64_t served = 0;
  int serving = 0;
  for (const auto& s : *sessions) {
    if (s.value("state", "") != "serving") continue;
    ++serving;
    uint64_t copied = s["counters"].value("bytes_copied", uint64_t{0});
    EXPECT_GT(copied, 0u) << "every fork faulted its pages: " << s.dump();
    served += copied;
  }
  EXPECT_EQ(serving, kForks) << sessions->dump();
  EXPECT_GT(read, 0u) << stats->dump();
  // One cache key for all forks (they share the source's blob), a cache
  // larger than the memory file and single-flight loads: each page of the
  // file is read at most once, however far each fork ran and in whatever
  // order they faulted. Eight private copies would read up to eight times
  // the file. A few pages of slack, far below a second copy, so that the
  // claim is about copies and not about the accounting of single pages.
  const uint64_t file_bytes = fs::file_size(s1.mem);
  EXPECT_LE(read, file_bytes + 16 * 4096) << "backing reads beyond one copy of the memory file (" << file_bytes
                                          << " bytes); served " << served << "; " << stats->dump();
  std::cout << "fan-out: pager read " << read << " bytes of a " << file_bytes << "-byte memory file; served " << served
            << " bytes to " << kForks << " forks\n";

  // Each fork's memory at standby (its own layer over the shared source) is
  // exactly its own guest.
  for (int i = 0; i < kForks; ++i) {
    if (i % 2 == 1) WaitForSteps(forks[i], s1.step + Steps(500));  // apart from their siblings
    Ok({"standby", forks[i]});
  }
  std::set<std::string> owned;
  for (const auto& f : forks) {
    ExpectExact(s1, Keep(f, f));
    owned.insert(BlobOf(f));
  }
  EXPECT_EQ(owned.size(), static_cast<size_t>(kForks)) << "each fork owns its own top layer now";
  ExpectConsistentDataDir();
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
