// Layered snapshots end to end: snapctl, real tinyvmm guests, the real pager
// serving chains of layers (`backing_layers`). A standby of a pager-restored
// instance writes only what it changed, as a new sparse layer over the chain
// it was restored from; a fork of a running instance writes one layer of
// what its source changed and pulls no page through the pager; chains grow
// through fork/standby/restore cycles up to the data directory's
// max_layers, where a merged base starts a new chain. Every snapshot is
// checked byte for byte against the guest model, and layer sizes are
// checked by the blocks the files really occupy (st_blocks).
#include <set>

#include "lifecycle/instance_metadata.h"
#include "lifecycle_fixture.h"

namespace uffdpager::lifecycle::testing {
namespace {

constexpr uint64_t kGuestBytes = 32ull << 20;

class LifecycleLayersTest : public LifecycleTest {
 protected:
  // The pager's count of page-fault events of one session.
  uint64_t SessionFaults(const std::string& session) {
    auto s = Pager().GetSession(session);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? (*s)["counters"].value("faults", uint64_t{0}) : 0;
  }
};

// Hot-pool cycles: each generation is a fork of the previous one's standby,
// restored through the pager over its chain, run a little, and put to
// standby: one small layer more each time, until --max-layers 3 is reached;
// the standby after that writes a merged base (a chain of one, restored from
// its file again), and layering starts over it. Deleting the older
// generations keeps exactly the layers the newest still names.
TEST_F(LifecycleLayersTest, ForkStandbyCyclesGrowAChainUpToTheBound) {
  Ok({"init", "--max-layers", "3"});
  KeptSnapshot kept = MakeStandbySource("g0");
  EXPECT_EQ(Chain("g0").size(), 1u);
  EXPECT_EQ(Show("g0").details["depends_on_pager"], false);
  std::string prev = "g0";
  const std::vector<size_t> depths = {2, 3, 1, 2};
  for (size_t i = 0; i < depths.size(); ++i) {
    const std::string name = "g" + std::to_string(i + 1);
    SCOPED_TRACE(name);
    const std::vector<std::string> below = Chain(prev);
    Ok({"fork", prev, name, "--state", "running"});
    json m = Metadata(name);
    EXPECT_EQ(m["vmm"]["memory_source"], "uffd") << "a fork's first restore, and any chain, is the pager's";
    EXPECT_EQ(m["vmm"]["backing_layers"].get<std::vector<std::string>>(), below);
    EXPECT_EQ(Show(name).state, InstanceState::kRunning) << Show(name).reason;
    WaitForSteps(name, kept.step + Steps(150));
    Ok({"standby", name});

    const std::vector<std::string> chain = Chain(name);
    ASSERT_EQ(chain.size(), depths[i]);
    InstanceStatus shown = Show(name);
    EXPECT_EQ(shown.details["chain_depth"], depths[i]);
    EXPECT_EQ(shown.details["depends_on_pager"], depths[i] > 1);
    KeptSnapshot now = Keep(name, name);
    if (depths[i] > 1) {
      EXPECT_EQ(Prefix(chain, chain.size() - 1), below) << "the new layer goes over the chain it ran from";
      ExpectLayerHoldsOnlyTouchedPages(chain.back(), kept, now);
    } else {
      EXPECT_EQ(std::count(below.begin(), below.end(), chain.back()), 0) << "a merged base is a new blob";
      EXPECT_EQ(fs::file_size(BlobPath(chain.back())), kGuestBytes);
    }
    ExpectExact(kept, now);
    EXPECT_EQ(GenerationIn(now.mem), GenerationIn(kept.mem) + 1);
    kept = now;
    prev = name;
    ExpectConsistentDataDir();
  }

  // The merged base is a plain file again: restored from it, not the pager.
  Ok({"restore", "g3"});
  EXPECT_EQ(Metadata("g3")["vmm"]["memory_source"], "file");
  Ok({"stop", "g3"});

  // Only g4's layers outlive the others.
  for (const std::string name : {"g0", "g1", "g2", "g3"}) Ok({"delete", name});
  const std::vector<std::string> last = Chain("g4");
  EXPECT_EQ(Blobs(), std::set<std::string>(last.begin(), last.end()));
  Ok({"restore", "g4"});
  EXPECT_EQ(Metadata("g4")["vmm"]["memory_source"], "uffd");
  WaitForSteps("g4", kept.step + Steps(150));
  Ok({"standby", "g4"});
  EXPECT_EQ(Chain("g4").size(), 3u);
  ExpectExact(kept, Keep("g4", "g4b"));
  ExpectConsistentDataDir();
}

// A fork of a running (here paused) pager-restored instance writes a Diff
// layer of what the source changed: no page is pulled through the source's
// pager session for it, the layer is small, the source is rebased onto the
// fork's chain (its next standby goes on top of it), and both stay exact.
TEST_F(LifecycleLayersTest, ForkOfARunningInstanceWritesOnlyWhatChanged) {
  KeptSnapshot s1 = MakeStandbySource("src");
  const std::string base = BlobOf("src");
  Ok({"fork", "src", "f", "--state", "running"});
  WaitForSteps("f", s1.step + Steps(200));
  Ok({"pause", "f"});
  const uint64_t faults = SessionFaults("f");
  EXPECT_GT(faults, 0u);

  Ok({"fork", "f", "g", "--state", "standby"});
  EXPECT_EQ(SessionFaults("f"), faults) << "the fork pulled pages through the pager";
  const std::vector<std::string> chain = Chain("g");
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0], base);
  json f = Metadata("f");
  EXPECT_EQ(f["vmm"]["backing_layers"].get<std::vector<std::string>>(), chain);
  EXPECT_EQ(f["needs_full_snapshot"], false);
  EXPECT_EQ(Show("f").state, InstanceState::kPaused) << "a paused source stays paused";
  KeptSnapshot g1 = Keep("g", "g1");
  ExpectExact(s1, g1);
  ExpectLayerHoldsOnlyTouchedPages(chain[1], s1, g1);

  // The source goes on from the fork's chain.
  Ok({"resume", "f"});
  WaitForSteps("f", g1.step + Steps(200));
  Ok({"standby", "f"});
  ASSERT_EQ(Chain("f").size(), 3u);
  EXPECT_EQ(Prefix(Chain("f"), 2), chain);
  ExpectExact(g1, Keep("f", "f2"));

  // The fork runs from the shared chain, apart from its source.
  Ok({"restore", "g"});
  EXPECT_EQ(Metadata("g")["vmm"]["memory_source"], "uffd");
  WaitForSteps("g", g1.step + Steps(300));
  Ok({"standby", "g"});
  ASSERT_EQ(Chain("g").size(), 3u);
  EXPECT_NE(Chain("g")[2], Chain("f")[2]);
  ExpectExact(g1, Keep("g", "g2"));

  // Delete the source of it all: every layer someone names stays.
  Ok({"delete", "src"});
  ExpectConsistentDataDir();
  EXPECT_TRUE(fs::exists(BlobPath(base)));
  Ok({"delete", "f"});
  ExpectConsistentDataDir();
  Ok({"restore", "g"});
  WaitForSteps("g", Keep("g", "g3").step + Steps(100));
  Ok({"standby", "g"});
  ExpectExact(g1, Keep("g", "g4"));
  ExpectConsistentDataDir();
}

// The standby of a fork that changed almost nothing (restored paused, its
// guest never ran) writes almost nothing: a full-size sparse layer holding
// the page the VMM wrote at the load, against 32 MiB of memory. Restored
// over that chain, run and put to standby again, it is exact.
TEST_F(LifecycleLayersTest, AStandbyOfAForkThatChangedLittleWritesLittle) {
  KeptSnapshot s1 = MakeStandbySource("src");
  Ok({"fork", "src", "f", "--state", "running", "--paused"});
  Ok({"standby", "f"});
  const std::vector<std::string> chain = Chain("f");
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(fs::file_size(BlobPath(chain[1])), kGuestBytes);
  EXPECT_LE(AllocatedBytes(BlobPath(chain[1])), 16u * 4096) << "a guest that never ran changed (almost) nothing";
  KeptSnapshot f0 = Keep("f", "f0");
  EXPECT_EQ(f0.step, s1.step);
  EXPECT_EQ(GenerationIn(f0.mem), GenerationIn(s1.mem) + 1) << "the VMM's own write at the load is in the layer";

  Ok({"restore", "f"});
  WaitForSteps("f", s1.step + Steps(150));
  Ok({"standby", "f"});
  ASSERT_EQ(Chain("f").size(), 3u);
  KeptSnapshot f1 = Keep("f", "f1");
  ExpectLayerHoldsOnlyTouchedPages(Chain("f")[2], f0, f1);
  ExpectExact(s1, f1);
  ExpectConsistentDataDir();
}

// A fork of a running instance restored from its own file (a chain of one)
// layers over that file too, and the source's next standby then goes on
// top, never in place into the file the fork reads.
TEST_F(LifecycleLayersTest, ForkOfAFileRestoredInstanceLayersOverItsFile) {
  KeptSnapshot s1 = MakeStandbySource("src");
  const std::string own = BlobOf("src");
  const std::string digest = Digest(BlobPath(own));
  Ok({"restore", "src"});
  EXPECT_EQ(Metadata("src")["vmm"]["memory_source"], "file");
  WaitForSteps("src", s1.step + Steps(200));
  Ok({"fork", "src", "f", "--state", "running"});
  ASSERT_EQ(Chain("f").size(), 2u);
  EXPECT_EQ(Chain("f")[0], own);
  EXPECT_EQ(Metadata("f")["vmm"]["memory_source"], "uffd");
  WaitForSteps("src", s1.step + Steps(400));
  Ok({"standby", "src"});
  EXPECT_EQ(Chain("src").size(), 3u);
  EXPECT_EQ(Prefix(Chain("src"), 2), Chain("f"));
  EXPECT_EQ(Digest(BlobPath(own)), digest) << "a file a fork reads is never written";
  ExpectExact(s1, Keep("src", "s2"));
  Ok({"standby", "f"});
  ExpectExact(s1, Keep("f", "f1"));
  ExpectConsistentDataDir();
}

// Schema 1 metadata (one `memory_blob`, one `backing_blob`) reads as a
// chain of one, and anything that is not a plain blob name is refused.
TEST(LifecycleMetadataTest, SchemaOneReadsAsAChainOfOne) {
  json v1 = {{"schema_version", 1},
             {"name", "old"},
             {"state", "Running"},
             {"vcpu_count", 1},
             {"mem_size_mib", 32},
             {"forked_from", ""},
             {"one_shot_uffd", false},
             {"needs_full_snapshot", false},
             {"snapshot", {{"state_file", "vmstate-1"}, {"memory_blob", "mem-1"}, {"owns_memory", true}}},
             {"vmm",
              {{"pid", 10},
               {"start_time", 20},
               {"api_socket", "/x/api.sock"},
               {"memory_source", "file"},
               {"pager_session", ""},
               {"backing_blob", "mem-1"}}}};
  auto m = InstanceMetadata::FromJson(v1);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->snapshot->memory_layers, LayerChain{"mem-1"});
  EXPECT_EQ(m->vmm->backing_layers, LayerChain{"mem-1"});
  EXPECT_EQ(m->ChainDepth(), 1u);
  EXPECT_FALSE(m->RestoreNeedsPager());

  // Written back as schema 2, it reads the same.
  json v2 = m->ToJson();
  EXPECT_EQ(v2["schema_version"], 2);
  EXPECT_EQ(v2["snapshot"]["memory_layers"], json::array({"mem-1"}));
  EXPECT_FALSE(v2["snapshot"].contains("memory_blob"));
  auto again = InstanceMetadata::FromJson(v2);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ToJson(), v2);

  v2["snapshot"]["memory_layers"] = json::array({"mem-1", "mem-2"});
  auto layered = InstanceMetadata::FromJson(v2);
  ASSERT_TRUE(layered.ok()) << layered.status().ToString();
  EXPECT_TRUE(layered->RestoreNeedsPager()) << "a chain is restored through the pager";

  for (const json& bad : {json::array({"../x"}), json::array({""}), json::array(), json::array({"a/b"})}) {
    json broken = v2;
    broken["snapshot"]["memory_layers"] = bad;
    auto refused = InstanceMetadata::FromJson(broken);
    EXPECT_FALSE(refused.ok()) << bad.dump();
  }
  json future = v2;
  future["schema_version"] = 3;
  auto newer = InstanceMetadata::FromJson(future);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().message().find("schema 3"), std::string::npos) << newer.status().ToString();
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
