// The whole chain, through snapctl, real tinyvmm guests and the real pager:
// a source runs and writes its markers, goes to standby, is forked to
// Running without copying memory (the pager serves the restore), is deleted
// while the fork runs; the fork goes to standby (a layer of what it changed
// over the source's bytes, which stay), is restored through the pager over
// that chain, is forked while running (one more layer, shared by both), and
// both go through standby and restore again — each adding its own layer over
// the shared ones — before everything is deleted. Every snapshot is checked
// exactly against the guest model.
#include <set>

#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

class LifecycleChainTest : public LifecycleTest {};

TEST_F(LifecycleChainTest, ForkChainStaysExactAndIsolated) {
  // The source: boot, run (the guest writes its markers), standby.
  Ok({"create", "src", "--vcpus", "2", "--mem-mib", "32"});
  EXPECT_EQ(Show("src").state, InstanceState::kRunning);
  WaitForSteps("src", Steps(400));
  Ok({"standby", "src"});
  EXPECT_EQ(Show("src").state, InstanceState::kStandby);
  KeptSnapshot s1 = Keep("src", "s1");
  const std::string source_blob = BlobOf("src");
  const std::string source_digest = Digest(BlobPath(source_blob));

  // Fork to Running: no memory file copied, the restore is the pager's.
  Ok({"fork", "src", "f1", "--state", "running"});
  EXPECT_EQ(Blobs(), std::set<std::string>{source_blob}) << "a uffd fork must not copy memory";
  json f1 = Metadata("f1");
  EXPECT_EQ(Chain("f1"), std::vector<std::string>{source_blob});
  EXPECT_EQ(f1["snapshot"]["owns_memory"], false);
  EXPECT_EQ(f1["one_shot_uffd"], false) << "cleared by the successful restore";
  EXPECT_EQ(f1["vmm"]["memory_source"], "uffd");
  for (const auto& e : fs::directory_iterator(data_ + "/instances/f1")) {
    EXPECT_NE(e.path().filename().string().rfind("memory", 0), 0u);
  }
  for (const auto& e : fs::directory_iterator(data_ + "/instances/f1/snapshot")) {
    EXPECT_LT(fs::file_size(e.path()), 1u << 20) << "only the state file is copied: " << e.path();
  }
  EXPECT_EQ(Show("f1").state, InstanceState::kRunning);
  auto session = Pager().GetSession("f1");
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ(session->value("state", ""), "serving") << session->dump();
  WaitForSteps("f1", s1.step + Steps(300));
  session = Pager().GetSession("f1");
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_GT((*session)["counters"].value("pages_copied", uint64_t{0}), 0u) << "the pager served the fork's memory";

  // Delete the source while its fork runs: the bytes the fork reads stay.
  Ok({"delete", "src"});
  EXPECT_FALSE(HasInstance("src"));
  ASSERT_TRUE(fs::exists(BlobPath(source_blob))) << "the fork still reads the source's blob";
  EXPECT_EQ(Digest(BlobPath(source_blob)), source_digest);
  WaitForSteps("f1", s1.step + Steps(600));
  EXPECT_EQ(Show("f1").state, InstanceState::kRunning);

  // Fork standby: a layer of what it changed over the source's bytes, which
  // are untouched and stay, named by the fork's chain.
  Ok({"standby", "f1"});
  json f1s = Metadata("f1");
  const std::vector<std::string> f1_chain = Chain("f1");
  ASSERT_EQ(f1_chain.size(), 2u);
  EXPECT_EQ(f1_chain[0], source_blob);
  EXPECT_EQ(f1s["snapshot"]["owns_memory"], true);
  ASSERT_TRUE(fs::exists(BlobPath(source_blob)));
  EXPECT_EQ(Digest(BlobPath(source_blob)), source_digest);
  EXPECT_EQ(Show("f1").details["chain_depth"], 2);
  EXPECT_EQ(Show("f1").details["depends_on_pager"], true);
  KeptSnapshot f1a = Keep("f1", "f1a");
  ExpectLayerHoldsOnlyTouchedPages(f1_chain[1], s1, f1a);
  ExpectExact(s1, f1a);
  EXPECT_EQ(GenerationIn(f1a.mem), GenerationIn(s1.mem) + 1);
  auto closed = Pager().GetSession("f1");
  EXPECT_TRUE(!closed.ok() || closed->value("state", "") == "closed") << "the session ends with the standby";

  // Fork restore: a chain is served by the pager, over both layers.
  Ok({"restore", "f1"});
  EXPECT_EQ(Metadata("f1")["vmm"]["memory_source"], "uffd");
  EXPECT_EQ(Metadata("f1")["vmm"]["backing_layers"], f1_chain);
  WaitForSteps("f1", f1a.step + Steps(300));

  // A fork of the running fork: a Diff layer of what f1 changed since its
  // restore, shared by both; f1 now counts its changes from there.
  Ok({"fork", "f1", "f2", "--state", "running"});
  json f2 = Metadata("f2");
  const std::vector<std::string> f2_chain = Chain("f2");
  ASSERT_EQ(f2_chain.size(), 3u);
  EXPECT_EQ(Prefix(f2_chain, 2), f1_chain);
  EXPECT_EQ(f2["snapshot"]["owns_memory"], false) << "the layer is f1's base too";
  EXPECT_EQ(Metadata("f1")["needs_full_snapshot"], false) << "f1 is rebased onto the new layer";
  EXPECT_EQ(Metadata("f1")["vmm"]["backing_layers"], f2_chain);
  KeptSnapshot f2a = Keep("f2", "f2a");
  ExpectLayerHoldsOnlyTouchedPages(f2_chain[2], f1a, f2a);
  ExpectExact(f1a, f2a);
  EXPECT_EQ(Show("f1").state, InstanceState::kRunning) << "the source of a running fork is resumed";
  EXPECT_EQ(Show("f2").state, InstanceState::kRunning);

  // Both run apart: different distances, so a leak of one's writes into
  // the other's memory would break the other's model.
  WaitForSteps("f1", f2a.step + Steps(200));
  WaitForSteps("f2", f2a.step + Steps(700));
  Ok({"standby", "f1"});
  Ok({"standby", "f2"});
  // Each its own layer over the three they share.
  ASSERT_EQ(Chain("f1").size(), 4u);
  ASSERT_EQ(Chain("f2").size(), 4u);
  EXPECT_EQ(Prefix(Chain("f1"), 3), f2_chain);
  EXPECT_EQ(Prefix(Chain("f2"), 3), f2_chain);
  EXPECT_NE(Chain("f1")[3], Chain("f2")[3]);
  KeptSnapshot f1b = Keep("f1", "f1b"), f2b = Keep("f2", "f2b");
  ExpectExact(f2a, f1b);
  ExpectExact(f2a, f2b);
  EXPECT_NE(f1b.step, f2b.step);
  EXPECT_NE(Digest(f1b.mem), Digest(f2b.mem));

  // Restore both, run, standby again: still exact.
  Ok({"restore", "f1"});
  Ok({"restore", "f2"});
  WaitForSteps("f1", f1b.step + Steps(300));
  WaitForSteps("f2", f2b.step + Steps(300));
  Ok({"standby", "f1"});
  Ok({"standby", "f2"});
  ExpectExact(f1b, Keep("f1", "f1c"));
  ExpectExact(f2b, Keep("f2", "f2c"));
  EXPECT_EQ(Chain("f1").size(), 5u);
  ExpectConsistentDataDir();

  // Deleting one keeps every layer the other names.
  Ok({"delete", "f1"});
  ExpectConsistentDataDir();
  ExpectExact(f2b, Keep("f2", "f2d"));
  Ok({"delete", "f2"});
  EXPECT_TRUE(fs::is_empty(data_ + "/instances"));
  EXPECT_TRUE(Blobs().empty());
  ExpectConsistentDataDir();
}

// Restoring the source (file-backed) and taking its standby again while an
// unmaterialized fork names its blob never changes a byte of that blob: the
// source's new snapshot goes into a new blob — with --max-layers 1 a merged
// copy, so the next standby goes in place. The fork then restores through
// the pager from the original bytes, exactly.
TEST_F(LifecycleChainTest, ResnapshottingTheSourceNeverTouchesItsForks) {
  Ok({"init", "--max-layers", "1"});
  Ok({"create", "src", "--vcpus", "2", "--mem-mib", "32"});
  WaitForSteps("src", Steps(300));
  Ok({"standby", "src"});
  KeptSnapshot s1 = Keep("src", "s1");
  const std::string blob = BlobOf("src");
  const std::string digest = Digest(BlobPath(blob));
  Ok({"fork", "src", "f1", "--state", "standby"});
  Ok({"fork", "f1", "f1x", "--state", "stopped"});  // a chain: resolves to the owner
  EXPECT_EQ(BlobOf("f1x"), blob);
  EXPECT_EQ(Metadata("f1x")["one_shot_uffd"], true);

  Ok({"restore", "src"});
  EXPECT_EQ(Metadata("src")["vmm"]["memory_source"], "file");
  WaitForSteps("src", s1.step + Steps(400));
  Ok({"standby", "src"});
  EXPECT_NE(BlobOf("src"), blob) << "a blob forks read is never written";
  EXPECT_EQ(Chain("src").size(), 1u) << "with --max-layers 1 a merged copy";
  EXPECT_EQ(Digest(BlobPath(blob)), digest);
  ExpectExact(s1, Keep("src", "s2"));
  // Once more, in place this time (src's new blob is its own alone).
  Ok({"restore", "src"});
  std::string own = BlobOf("src");
  WaitForSteps("src", s1.step + Steps(600));
  Ok({"standby", "src"});
  EXPECT_EQ(BlobOf("src"), own) << "a Diff goes into memory the instance alone owns";
  EXPECT_EQ(Digest(BlobPath(blob)), digest);

  Ok({"delete", "src"});
  EXPECT_EQ(Digest(BlobPath(blob)), digest);
  Ok({"restore", "f1x"});
  EXPECT_EQ(Metadata("f1x")["vmm"]["memory_source"], "uffd");
  WaitForSteps("f1x", s1.step + Steps(250));
  Ok({"restore", "f1"});
  WaitForSteps("f1", s1.step + Steps(500));
  Ok({"standby", "f1x"});
  Ok({"standby", "f1"});
  ExpectExact(s1, Keep("f1x", "f1x"));
  ExpectExact(s1, Keep("f1", "f1"));
  EXPECT_FALSE(fs::exists(BlobPath(blob))) << "no one names the original bytes any more";
  ExpectConsistentDataDir();
}

// The file backend: forks copy memory eagerly (a reflink where possible),
// and every restore is file-backed.
TEST_F(LifecycleChainTest, FileBackendForksOwnACopy) {
  Init("file");
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(300));
  Ok({"standby", "src"});
  KeptSnapshot s1 = Keep("src", "s1");
  Ok({"fork", "src", "f1", "--state", "running"});
  json f1 = Metadata("f1");
  ASSERT_EQ(Chain("f1").size(), 1u) << "the file backend never layers";
  EXPECT_NE(BlobOf("f1"), BlobOf("src"));
  EXPECT_EQ(f1["snapshot"]["owns_memory"], true);
  EXPECT_EQ(f1["vmm"]["memory_source"], "file");
  EXPECT_EQ(Digest(BlobPath(BlobOf("f1"))), Digest(s1.mem));
  WaitForSteps("f1", s1.step + Steps(300));
  Ok({"standby", "f1"});
  EXPECT_EQ(Chain("f1").size(), 1u);
  ExpectExact(s1, Keep("f1", "f1a"));
  ExpectConsistentDataDir();
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
