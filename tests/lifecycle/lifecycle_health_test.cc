// Health: a live instance is Running only while its VMM and (for a
// UFFD-restored VM) its pager session really are; otherwise Unknown with the
// reason. A failed one-shot restore leaves the fork exactly as it was.
#include <sys/wait.h>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleHealthTest : public LifecycleTest {};

TEST_F(LifecycleHealthTest, DeadPagerOrVmmMakesInstancesUnknown) {
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(200));
  Ok({"standby", "src"});
  Ok({"fork", "src", "f1", "--state", "running"});
  Ok({"fork", "src", "f2", "--state", "running"});
  EXPECT_EQ(Show("f1").state, InstanceState::kRunning);

  // The pager dies: the UFFD-restored forks cannot be trusted.
  StopPager();
  InstanceStatus s = Show("f1");
  EXPECT_EQ(s.state, InstanceState::kUnknown);
  EXPECT_NE(s.reason.find("pager"), std::string::npos) << s.reason;

  // A VMM that died is not Running either.
  ProcessIdentity vmm{Metadata("f2")["vmm"]["pid"].get<pid_t>(), Metadata("f2")["vmm"]["start_time"].get<uint64_t>()};
  ASSERT_TRUE(vmm.Terminate().ok());
  s = Show("f2");
  EXPECT_EQ(s.state, InstanceState::kUnknown);
  EXPECT_NE(s.reason.find("VMM process"), std::string::npos) << s.reason;

  // Stop puts both to rest; their snapshots are still the source's.
  Ok({"stop", "f1"});
  Ok({"stop", "f2"});
  EXPECT_EQ(Show("f1").state, InstanceState::kStopped);
  ExpectConsistentDataDir();
}

TEST_F(LifecycleHealthTest, FailedOneShotRestoreKeepsTheForkRestorable) {
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(200));
  Ok({"standby", "src"});
  KeptSnapshot s1 = Keep("src", "s1");
  Ok({"fork", "src", "f1", "--state", "standby"});
  // A VMM that cannot start: the session opened for it is closed again.
  EXPECT_NE(Snapctl({"restore", "f1"}, "", "--vmm=/bin/false"), 0);
  json m = Metadata("f1");
  EXPECT_EQ(m["state"], "Standby");
  EXPECT_EQ(m["one_shot_uffd"], true) << "the flag stays armed after a failed restore";
  EXPECT_FALSE(m.contains("vmm"));
  auto session = Pager().GetSession("f1");
  EXPECT_TRUE(!session.ok() || session->value("state", "") == "closed") << session->dump();
  ExpectConsistentDataDir();

  // And it restores fine afterwards, through the pager.
  Ok({"restore", "f1"});
  EXPECT_EQ(Metadata("f1")["vmm"]["memory_source"], "uffd");
  EXPECT_EQ(Metadata("f1")["one_shot_uffd"], false);
  WaitForSteps("f1", s1.step + Steps(200));
  Ok({"standby", "f1"});
  ExpectExact(s1, Keep("f1", "f1"));
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
