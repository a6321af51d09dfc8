// Fan-out: eight forks of one standby source, restored at once through one
// pager. Forking copies no memory; the pager reads each page of the source
// about once however many forks touch it (one shared cache key); every
// fork's memory is exactly its own.
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

  auto sessions = Pager().ListSessions();
  ASSERT_TRUE(sessions.ok()) << sessions.status().ToString();
  uint64_t largest_working_set = 0, served = 0;
  int serving = 0;
  for (const auto& s : *sessions) {
    if (s.value("state", "") != "serving") continue;
    ++serving;
    uint64_t copied = s["counters"].value("bytes_copied", uint64_t{0});
    largest_working_set = std::max(largest_working_set, copied);
    served += copied;
  }
  EXPECT_EQ(serving, kForks) << sessions->dump();
  auto stats = Pager().Stats();
  ASSERT_TRUE(stats.ok());
  uint64_t read = stats->value("backing_bytes_read", uint64_t{0});
  EXPECT_GT(largest_working_set, 0u);
  EXPECT_GE(served, static_cast<uint64_t>(kForks) * largest_working_set / 2) << "every fork faulted its pages";
  // Near one copy of the working set (a fork that ran further touched a few
  // more pages), far from eight.
  EXPECT_LE(read, largest_working_set * 3 / 2) << stats->dump();

  // Each fork's memory, materialized at standby, is exactly its own guest.
  for (int i = 0; i < kForks; ++i) {
    if (i % 2 == 1) WaitForSteps(forks[i], s1.step + Steps(500));  // apart from their siblings
    Ok({"standby", forks[i]});
  }
  std::set<std::string> owned;
  for (const auto& f : forks) {
    ExpectExact(s1, Keep(f, f));
    owned.insert(BlobOf(f));
  }
  EXPECT_EQ(owned.size(), static_cast<size_t>(kForks)) << "each fork owns its own memory now";
  ExpectConsistentDataDir();
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
