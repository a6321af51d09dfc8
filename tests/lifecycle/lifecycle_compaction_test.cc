// Compaction of snapshot chains end to end: snapctl, real tinyvmm guests,
// the real pager. A chain deeper than the data directory's compact depth is
// merged into a new base by a `snapctl compact` that a standby starts in
// the background; `snapctl compact NAME` does the same in the foreground.
// Other commands run while a compaction merges (a hold point stops the
// compactor there), an instance whose chain changed meanwhile is left as it
// is, the blobs a live compaction reads and writes survive every other
// command's collection, and a compactor killed at any step leaves a data
// directory the next command makes consistent. Every snapshot is checked
// byte for byte against the guest model.
#include <set>

#include <fmt/format.h>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleCompactionTest : public LifecycleTest {
 protected:
  // Restores `name`, lets its guest run `steps` more steps, puts it to
  // standby, and keeps that snapshot as `label`.
  KeptSnapshot RunAWhile(const std::string& name, const KeptSnapshot& from, const std::string& label,
                         uint32_t steps = 100) {
    Ok({"restore", name});
    WaitForSteps(name, from.step + Steps(steps));
    Ok({"standby", name});
    return Keep(name, label);
  }

  // A fork of `source` run once and put to standby: a chain one deeper.
  KeptSnapshot ForkAndRun(const std::string& source, const std::string& name, const KeptSnapshot& from) {
    Ok({"fork", source, name, "--state", "running"});
    WaitForSteps(name, from.step + Steps(100));
    Ok({"standby", name});
    return Keep(name, name);
  }

  // Waits until the background compactor has merged the `layers` layers of
  // `name`'s chain into one new base and said so in its log (its last step).
  bool WaitForBackgroundCompaction(const std::string& name, size_t layers) {
    return WaitFor(
        [&] {
          return Chain(name).size() == 1 && CompactionRecords().empty() &&
                 ReadText(data_ + "/compactions/compact.log")
                         .find(fmt::format("compacted {} layers into {}", layers, BlobOf(name))) != std::string::npos;
        },
        300s, 50ms);
  }

  std::string ReadText(const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }
};

// A standby that leaves a chain deeper than --compact-depth starts a
// compactor in the background and returns: the chain becomes one new base
// holding exactly the same bytes, the layer no other chain names goes, and
// a fork that shares the lower layers keeps them and stays exact.
TEST_F(LifecycleCompactionTest, ADeepChainIsCompactedInTheBackground) {
  Ok({"init", "--compact-depth", "2"});
  KeptSnapshot s = MakeStandbySource("src");
  KeptSnapshot f2 = ForkAndRun("src", "f", s);
  const std::vector<std::string> shared = Chain("f");
  ASSERT_EQ(shared.size(), 2u);
  Ok({"fork", "f", "g", "--state", "standby"});  // g reads f's two layers
  EXPECT_TRUE(CompactionRecords().empty()) << "a chain of 2 is not deeper than the compact depth";

  Ok({"restore", "f"});
  WaitForSteps("f", f2.step + Steps(100));
  Ok({"standby", "f"});  // a third layer: the compactor starts
  ASSERT_TRUE(WaitForBackgroundCompaction("f", 3))
      << "f's chain is " << Chain("f").size() << " deep; see " << data_ << "/compactions/compact.log";
  const std::string base = BlobOf("f");
  EXPECT_EQ(std::count(shared.begin(), shared.end(), base), 0) << "the new base is a new blob";

  KeptSnapshot f3 = Keep("f", "f3");
  ExpectExact(f2, f3);
  // The layers g names stay; f's third layer, named by nothing, went.
  EXPECT_EQ(Chain("g"), shared);
  EXPECT_EQ(Blobs(), (std::set<std::string>{shared[0], shared[1], base}));
  ExpectConsistentDataDir();

  // f, now one blob it owns, restores from its file and stays exact.
  KeptSnapshot f4 = RunAWhile("f", f3, "f4");
  ExpectExact(f3, f4);
  // g's first restore is served from the shared layers; its standby makes
  // a chain of 3 again, compacted in the background too.
  Ok({"restore", "g"});
  WaitForSteps("g", f2.step + Steps(100));
  Ok({"standby", "g"});
  ASSERT_TRUE(WaitForBackgroundCompaction("g", 3));
  ExpectExact(f2, Keep("g", "g1"));
  EXPECT_EQ(Blobs(), (std::set<std::string>{shared[0], BlobOf("f"), BlobOf("g")}))
      << "src still names the base; the rest only g's chain named";
  ExpectConsistentDataDir();
}

// `snapctl compact NAME` in the foreground, held between its merge and its
// commit: restores, standbys and listings of the same instances run
// meanwhile (nothing waits for the compaction), their collections keep the
// new blob, and the commit moves only the instances still on the merged
// chain: h is moved, f, put to standby on top of it meanwhile, is not.
TEST_F(LifecycleCompactionTest, AnInstanceThatMovedOnDuringTheMergeIsLeftAlone) {
  KeptSnapshot s = MakeStandbySource("src");
  KeptSnapshot f2 = ForkAndRun("src", "f", s);
  KeptSnapshot f3 = RunAWhile("f", f2, "f3");
  const std::vector<std::string> merged = Chain("f");
  ASSERT_EQ(merged.size(), 3u);
  Ok({"fork", "f", "h", "--state", "standby"});

  const std::string release = dir_ + "/release";
  auto compactor = StartSnapctl({"compact", "f"}, {"UFFDPAGER_LIFECYCLE_HOLD_AT=compact.after_merge",
                                                   "UFFDPAGER_LIFECYCLE_HOLD_FILE=" + release});
  ASSERT_TRUE(compactor.ok()) << compactor.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return fs::exists(release + ".held"); }, 300s, 20ms))
      << "the compactor never reached its merge's end";
  const std::vector<std::string> records = CompactionRecords();
  ASSERT_EQ(records.size(), 1u);
  const std::string base = records[0];
  ASSERT_TRUE(fs::exists(BlobPath(base)));
  EXPECT_EQ(Show("h").details["compaction"]["blob"], base) << "show reports the compaction in flight";
  EXPECT_EQ(Show("h").details["compaction"]["merged"], true);

  // Other commands run, each collecting unreferenced blobs after it.
  Ok({"list"});
  KeptSnapshot f4 = RunAWhile("f", f3, "f4");
  EXPECT_EQ(Prefix(Chain("f"), 3), merged);
  EXPECT_EQ(Chain("f").size(), 4u) << "f's standby layered over the chain being merged";
  EXPECT_TRUE(fs::exists(BlobPath(base))) << "the blob of a live compaction was collected";
  EXPECT_EQ(Chain("h"), merged);

  std::ofstream(release).put('\n');
  int status = 0;
  ASSERT_TRUE(compactor->WaitForExit(300s, &status));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << dir_ << "/snapctl.log";
  EXPECT_EQ(Chain("h"), std::vector<std::string>{base}) << "h was still on the merged chain";
  EXPECT_FALSE(Show("h").details.contains("compaction"));
  EXPECT_EQ(Prefix(Chain("f"), 3), merged) << "f had moved on: left as it is";
  EXPECT_EQ(Chain("f").size(), 4u);
  ExpectConsistentDataDir();

  ExpectExact(f3, RunAWhile("h", f3, "h1"));
  ExpectExact(f4, RunAWhile("f", f4, "f5"));
  ExpectConsistentDataDir();
}

// A compactor killed after its record, after its merge, and after its
// commit: the next command finds the data directory consistent (an
// unmerged blob dropped, a merged one committed), and every instance
// restores exactly.
TEST_F(LifecycleCompactionTest, ACompactorKilledAtAnyStepLeavesAConsistentDataDir) {
  KeptSnapshot s = MakeStandbySource("src");
  const std::vector<std::pair<std::string, bool>> points = {
      {"compact.after_record", false}, {"compact.after_merge", true}, {"compact.after_commit", true}};
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& [point, compacted] = points[i];
    SCOPED_TRACE(point);
    const std::string name = "c" + std::to_string(i);
    KeptSnapshot before = ForkAndRun("src", name, s);
    const std::vector<std::string> chain = Chain(name);
    ASSERT_EQ(chain.size(), 2u);
    ASSERT_EQ(Snapctl({"compact", name}, point), kCrashExitCode) << "snapctl did not stop at " << point;
    EXPECT_EQ(CompactionRecords().size(), 1u) << "the record outlives the compactor";
    ASSERT_EQ(Snapctl({"recover"}), 0) << "recovery after " << point;
    ExpectConsistentDataDir();
    if (compacted) {
      ASSERT_EQ(Chain(name).size(), 1u) << "a merged compaction is committed by the recovery";
      EXPECT_EQ(std::count(chain.begin(), chain.end(), BlobOf(name)), 0);
      EXPECT_FALSE(fs::exists(BlobPath(chain[1]))) << "the merged top layer, named by nothing, went";
    } else {
      EXPECT_EQ(Chain(name), chain) << "an unmerged compaction is dropped";
    }
    EXPECT_EQ(Digest(Keep(name, name + "-after").mem), Digest(before.mem)) << "the same bytes, byte for byte";
    ExpectExact(before, RunAWhile(name, before, name + "-restored"));
    ExpectConsistentDataDir();
  }
  ExpectExact(s, RunAWhile("src", s, "src-restored"));
}

// A background compactor that dies after its merge (it inherits the
// standby's crash point) leaves its record; the next command, any command,
// sees that the compactor is gone and finishes the commit.
TEST_F(LifecycleCompactionTest, TheNextCommandFinishesWhatADeadBackgroundCompactorMerged) {
  Ok({"init", "--compact-depth", "1"});
  KeptSnapshot s = MakeStandbySource("src");
  Ok({"fork", "src", "f", "--state", "running"});
  WaitForSteps("f", s.step + Steps(100));
  ASSERT_EQ(Snapctl({"standby", "f"}, "compact.after_merge"), 0) << "the standby itself has no such step";
  const std::vector<std::string> chain = Chain("f");
  ASSERT_EQ(chain.size(), 2u);
  KeptSnapshot before = Keep("f", "f");  // the record keeps the layers until a commit
  std::string record;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto records = CompactionRecords();
        if (records.size() != 1) return false;
        json r = json::parse(ReadText(data_ + "/compactions/" + records[0] + ".json"), nullptr, false);
        if (!r.is_object() || !r.value("merged", false)) return false;
        auto compactor = IdentifyProcess(r["compactor"]["pid"].get<pid_t>());
        record = records[0];
        return !compactor.ok() || !compactor->IsAlive() ||
               compactor->start_time != r["compactor"]["start_time"].get<uint64_t>();
      },
      300s, 50ms))
      << "no merged record of a dead compactor; see " << data_ << "/compactions/compact.log";
  EXPECT_EQ(Chain("f"), chain) << "nothing is committed until a command runs";

  Ok({"list"});
  EXPECT_EQ(Chain("f"), std::vector<std::string>{record});
  EXPECT_FALSE(fs::exists(BlobPath(chain[1]))) << "f's layer, named by nothing now, went";
  EXPECT_EQ(Digest(Keep("f", "f-compacted").mem), Digest(before.mem)) << "the same bytes, byte for byte";
  ExpectConsistentDataDir();
  ExpectExact(before, RunAWhile("f", before, "f-restored"));
}

// --compact-depth above --max-layers could never take effect: refused,
// saying why, and config.json stays as it was; lowering --max-layers below
// the compact depth brings the depth down with it.
TEST_F(LifecycleCompactionTest, ACompactDepthAboveMaxLayersIsRefused) {
  const std::string before = ReadText(data_ + "/config.json");
  EXPECT_EQ(Snapctl({"init", "--compact-depth", "9"}), 1) << "(max layers is 8)";
  EXPECT_NE(ReadText(dir_ + "/snapctl.log").find("compact depth 9 is above max layers 8"), std::string::npos)
      << ReadText(dir_ + "/snapctl.log");
  EXPECT_NE(Snapctl({"init", "--compact-depth", "17"}), 0) << "above any chain the pager serves";
  EXPECT_NE(Snapctl({"init", "--max-layers", "2", "--compact-depth", "3"}), 0);
  EXPECT_EQ(ReadText(data_ + "/config.json"), before);

  Ok({"init", "--compact-depth", "5"});
  Ok({"init", "--max-layers", "3"});
  json config = json::parse(ReadText(data_ + "/config.json"));
  EXPECT_EQ(config["max_layers"], 3);
  EXPECT_EQ(config["compact_depth"], 3) << "follows max layers down";
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
