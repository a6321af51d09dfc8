// Crash safety: snapctl is killed (UFFDPAGER_LIFECYCLE_CRASH_AT makes it
// _exit at a named step) in the middle of a fork, a restore or a standby.
// The next command must find a consistent data directory — no journal
// record, staging folder or unnamed blob left, no stray VMM or pager
// session, nothing half-written trusted — and nothing lost: the interrupted
// operation was either undone (the instance as before, still usable) or
// completed, and the guests are still exactly right.
#include <set>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleCrashTest : public LifecycleTest {
 protected:
  // Live VMM processes started for instance `name` of this data directory.
  int LiveVmms(const std::string& name) {
    int count = 0;
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::string pid = e.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(e.path() / "cmdline", std::ios::binary);
      std::string cmd((std::istreambuf_iterator<char>(in)), {});
      if (cmd.find(ApiSocket(name) + std::string(1, '\0')) == std::string::npos) continue;
      auto id = IdentifyProcess(std::stoi(pid));
      if (id.ok() && id->IsAlive()) ++count;
    }
    return count;
  }

  std::string SessionState(const std::string& name) {
    auto s = Pager().GetSession(name);
    return s.ok() ? s->value("state", "") : "none";
  }

  void Crash(std::vector<std::string> args, const std::string& point) {
    ASSERT_EQ(Snapctl(args, point), kCrashExitCode) << "snapctl did not stop at " << point;
    ASSERT_EQ(Snapctl({"recover"}), 0) << "recovery after " << point;
    ExpectConsistentDataDir();
  }

  // Forks src to Running once per crash point of a standby, crashes the
  // fork's standby there, and checks the outcome; a committed standby leaves
  // a chain of `depth`.
  void StandbyOfAForkInterrupted(size_t depth) {
    KeptSnapshot s1 = MakeStandbySource("src", "s1");
    const std::string source_digest = Digest(BlobPath(BlobOf("src")));
    const std::vector<std::string> points = {"standby.after_pause", "standby.after_copy", "standby.after_snapshot",
                                             "standby.after_commit"};
    for (size_t i = 0; i < points.size(); ++i) {
      SCOPED_TRACE(points[i]);
      std::string name = "c" + std::to_string(i);
      Ok({"fork", "src", name, "--state", "running"});
      WaitForSteps(name, s1.step + Steps(150));
      Crash({"standby", name}, points[i]);
      if (points[i] == "standby.after_commit") {
        EXPECT_EQ(Show(name).state, InstanceState::kStandby);
        EXPECT_EQ(LiveVmms(name), 0) << "the VMM of a committed standby is stopped by recovery";
        EXPECT_NE(SessionState(name), "serving");
      } else {
        // Undone: the VM is alive and running again, still on the pager.
        InstanceStatus s = Show(name);
        EXPECT_EQ(s.state, InstanceState::kRunning) << s.reason;
        EXPECT_EQ(SessionState(name), "serving");
        json g = Guest(name);
        uint32_t before = g["vcpus"][0]["step"].get<uint32_t>();
        WaitForSteps(name, before + Steps(50));
        Ok({"standby", name});
      }
      // After an undone attempt the dirty log was cleared: a Full snapshot.
      EXPECT_EQ(Chain(name).size(), points[i] == "standby.after_commit" ? depth : 1u);
      EXPECT_EQ(Digest(BlobPath(BlobOf("src"))), source_digest) << "the source's bytes never change";
      ExpectExact(s1, Keep(name, name));
      Ok({"delete", name});
    }
    ExpectConsistentDataDir();
  }
};

TEST_F(LifecycleCrashTest, ForkAndOneShotRestoreInterruptedAtEveryStep) {
  KeptSnapshot s1 = MakeStandbySource("src", "s1");
  const std::vector<std::string> points = {"fork.after_copy_dir",   "fork.before_commit",   "fork.after_commit",
                                           "restore.after_session", "restore.after_launch", "restore.after_load",
                                           "restore.after_commit"};
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE(points[i]);
    std::string name = "c" + std::to_string(i);
    Crash({"fork", "src", name, "--state", "running"}, points[i]);
    bool committed_fork = points[i].rfind("fork.", 0) != 0 || points[i] == "fork.after_commit";
    EXPECT_EQ(HasInstance(name), committed_fork);
    if (!HasInstance(name)) {
      EXPECT_FALSE(fs::exists(data_ + "/instances/.staging-" + name));
      Ok({"fork", "src", name, "--state", "running"});
    } else if (points[i] != "restore.after_commit") {
      // The restore was undone: the fork is as it was, flag armed, no VMM
      // and no session left behind.
      json m = Metadata(name);
      EXPECT_EQ(m["state"], "Standby");
      EXPECT_EQ(m["one_shot_uffd"], true);
      EXPECT_EQ(LiveVmms(name), 0);
      EXPECT_NE(SessionState(name), "serving");
      Ok({"restore", name});
    }
    EXPECT_EQ(LiveVmms(name), 1);
    EXPECT_EQ(Show(name).state, InstanceState::kRunning) << Show(name).reason;
    WaitForSteps(name, s1.step + Steps(150));
    Ok({"standby", name});
    ExpectExact(s1, Keep(name, name));
    Ok({"delete", name});
  }
  ExpectConsistentDataDir();
}

// The standby of a pager-restored fork writes a new layer over its source's
// blob (with --max-layers 1, a merged copy of it): interrupted at any step,
// it is undone or finished, and the source's bytes never change.
TEST_F(LifecycleCrashTest, StandbyOfAUffdForkInterruptedAtEveryStep) { StandbyOfAForkInterrupted(2); }

TEST_F(LifecycleCrashTest, MergingStandbyOfAUffdForkInterruptedAtEveryStep) {
  Ok({"init", "--max-layers", "1"});
  StandbyOfAForkInterrupted(1);
}

TEST_F(LifecycleCrashTest, InPlaceStandbyInterruptedIsNotTrusted) {
  KeptSnapshot s1 = MakeStandbySource("src", "s1");
  Ok({"restore", "src"});
  WaitForSteps("src", s1.step + Steps(200));
  const std::string own = BlobOf("src");
  Crash({"standby", "src"}, "standby.after_snapshot");
  // The blob took a Diff that was never committed: the snapshot is dropped,
  // the VM (which holds everything) keeps running, and the next standby is
  // a Full one into a new blob.
  json m = Metadata("src");
  EXPECT_FALSE(m.contains("snapshot"));
  EXPECT_EQ(m["needs_full_snapshot"], true);
  EXPECT_EQ(Show("src").state, InstanceState::kRunning);
  WaitForSteps("src", s1.step + Steps(300));
  Ok({"standby", "src"});
  EXPECT_NE(BlobOf("src"), own);
  ExpectExact(s1, Keep("src", "s2"));
  ExpectConsistentDataDir();
}

// A fork of a running instance writes a Diff layer of what it changed and
// rebases the source onto the fork's chain. Interrupted before the commit,
// the fork is gone (its layer collected) and the source runs on, its next
// standby a Full one (the Diff cleared its dirty log); interrupted after,
// recovery finishes the rebase. Either way every snapshot stays exact.
TEST_F(LifecycleCrashTest, ForkOfARunningInstanceInterruptedAtEveryStep) {
  KeptSnapshot s1 = MakeStandbySource("src", "s1");
  Ok({"restore", "src"});
  const std::vector<std::string> points = {"fork.after_pause_source", "fork.before_resume_source",
                                           "fork.after_snapshot",     "fork.before_commit",
                                           "fork.after_commit",       "fork.after_rebase_source"};
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE(points[i]);
    const std::string name = "f" + std::to_string(i);
    const std::vector<std::string> base = Metadata("src")["vmm"]["backing_layers"].get<std::vector<std::string>>();
    Crash({"fork", "src", name, "--state", "standby"}, points[i]);
    // The source, paused for the snapshot, runs again.
    EXPECT_EQ(Show("src").state, InstanceState::kRunning) << Show("src").reason;
    json src = Metadata("src");
    if (points[i] == "fork.after_commit" || points[i] == "fork.after_rebase_source") {
      ASSERT_TRUE(HasInstance(name));
      EXPECT_EQ(Chain(name).size(), base.size() + 1);
      EXPECT_EQ(src["vmm"]["backing_layers"].get<std::vector<std::string>>(), Chain(name))
          << "recovery finished the rebase";
      EXPECT_EQ(src["needs_full_snapshot"], false);
      ExpectExact(s1, Keep(name, name));
    } else {
      EXPECT_FALSE(HasInstance(name));
      EXPECT_EQ(src["vmm"]["backing_layers"].get<std::vector<std::string>>(), base);
      EXPECT_EQ(src["needs_full_snapshot"], true) << "the Diff read and cleared the dirty log";
    }
    uint32_t before = Guest("src")["vcpus"][0]["step"].get<uint32_t>();
    WaitForSteps("src", before + Steps(50));
    // The source's next snapshot is exact whichever way it went (a Full
    // blob, or a layer over the fork's chain).
    Ok({"standby", "src"});
    ExpectExact(s1, Keep("src", "r" + std::to_string(i)));
    Ok({"restore", "src"});
    ExpectConsistentDataDir();
  }
  // A committed fork restores and runs from its layers.
  Ok({"restore", "f5"});
  WaitForSteps("f5", s1.step + Steps(100));
  Ok({"standby", "f5"});
  ExpectExact(s1, Keep("f5", "f5b"));
  ExpectConsistentDataDir();
}

// At the layer bound (here --max-layers 1) a fork of a running instance
// writes its Diff over a merged copy of the source's chain, made before the
// pause. Interrupted after the merge, the copy is collected; completed, the
// fork and the rebased source both stay exact.
TEST_F(LifecycleCrashTest, MergingForkOfARunningInstanceInterrupted) {
  Ok({"init", "--max-layers", "1"});
  KeptSnapshot s1 = MakeStandbySource("src", "s1");
  Ok({"restore", "src"});
  const std::set<std::string> before = Blobs();
  Crash({"fork", "src", "f", "--state", "standby"}, "fork.after_merge");
  EXPECT_FALSE(HasInstance("f"));
  EXPECT_EQ(Blobs(), before) << "the merged copy is collected";
  EXPECT_EQ(Show("src").state, InstanceState::kRunning);
  Ok({"fork", "src", "f", "--state", "standby"});
  ASSERT_EQ(Chain("f").size(), 1u);
  EXPECT_EQ(Metadata("src")["vmm"]["backing_layers"].get<std::vector<std::string>>(), Chain("f"));
  EXPECT_EQ(Metadata("f")["snapshot"]["owns_memory"], false) << "the source is based on it too";
  ExpectExact(s1, Keep("f", "f"));
  WaitForSteps("src", Keep("f", "f0").step + Steps(100));
  Ok({"standby", "src"});
  EXPECT_EQ(Chain("src").size(), 1u);
  EXPECT_NE(BlobOf("src"), BlobOf("f")) << "never written into the fork's blob";
  ExpectExact(s1, Keep("src", "s2"));
  ExpectConsistentDataDir();
}

TEST_F(LifecycleCrashTest, EagerForkInterruptedLeavesNoCopy) {
  Init("file");
  KeptSnapshot s1 = MakeStandbySource("src", "s1");
  std::set<std::string> before = Blobs();
  Crash({"fork", "src", "f", "--state", "running"}, "fork.after_copy_memory");
  EXPECT_FALSE(HasInstance("f"));
  EXPECT_EQ(Blobs(), before) << "the half-made copy is removed";
  Ok({"fork", "src", "f", "--state", "running"});
  WaitForSteps("f", s1.step + Steps(100));
  Ok({"standby", "f"});
  ExpectExact(s1, Keep("f", "f"));
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
