// Snapshots that move between hosts through a bucket: two data directories
// (two "hosts", each with the pager its snapctl starts) and the real Ceph
// RGW the ctest fixture runs. A snapshot published from A is imported on B,
// restored there through B's pager paging the layers from the store, forked,
// put to standby (a local Diff over the object layers) and restored again;
// every snapshot is checked exactly against the guest model. Publishing a
// fork that shares a published base uploads only its own layer, whose page
// map keeps its holes apart from the base's pages. Import refuses a
// manifest whose layer was replaced and a missing manifest, changing
// nothing; publish refuses a running instance. Skips without /dev/kvm,
// userfaultfd or the RGW.
#include <cstdlib>

#include "common/layer_page_map.h"
#include "common/object_store_client.h"
#include "common/object_store_config.h"
#include "lifecycle/snapshot_manifest.h"
#include "lifecycle_fixture.h"
#include "support/test_rgw.h"

#ifndef UFFDPAGER_TEST_RGW_DIR
#error "UFFDPAGER_TEST_RGW_DIR must name the RGW fixture's directory"
#endif

namespace uffdpager::lifecycle::testing {
namespace {

using uffdpager::testing::BucketForCurrentTest;
using uffdpager::testing::TestRgw;

class LifecyclePublishTest : public LifecycleTest {
 protected:
  void SetUp() override {
    LifecycleTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    rgw_ = TestRgw::Load(UFFDPAGER_TEST_RGW_DIR);
    if (!rgw_.skip_reason.empty()) GTEST_SKIP() << "no Ceph RGW: " << rgw_.skip_reason;
    auto bucket = CreateTestBucket(rgw_);
    ASSERT_TRUE(bucket.ok()) << bucket.status().ToString();
    store_ = std::move(bucket->store);
    bucket_ = bucket->name;
    // Every snapctl of this test, and every pager one of them starts, gets
    // the store's AWS_* environment from this process, as on a host.
    for (const auto& [name, value] : rgw_.env) ::setenv(name.c_str(), value.c_str(), 1);
    host_a_ = data_;
    host_b_ = dir_ + "/host-b";
    On(host_b_);
    Init("uffd");
    On(host_a_);
  }

  void TearDown() override {
    if (!host_b_.empty() && host_b_ != data_) {
      // Host B's instances and pager, then A's through the fixture.
      const std::string a = data_;
      On(host_b_);
      StopDataDir();
      On(a);
    }
    LifecycleTest::TearDown();
  }

  // The top layer of `name` on `host`.
  std::string BlobOfOn(const std::string& host, const std::string& name) {
    const std::string here = data_;
    On(host);
    std::string blob = BlobOf(name);
    On(here);
    return blob;
  }

  // The data directory the next commands work on.
  void On(const std::string& host) { data_ = host; }

  std::string Url(const std::string& key) const { return "s3://" + bucket_ + "/" + key; }

  Result<PublishedSnapshot> Publish(const std::string& name, const std::string& destination) {
    auto life = Lifecycle::Open({data_, "", std::nullopt});
    if (!life.ok()) return life.status();
    return (*life)->Publish(name, destination);
  }

  // The whole object, read as the test's own reading.
  std::string ReadObject(const std::string& url) {
    auto parsed = ParseObjectUrl(url);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    if (!parsed.ok()) return "";
    auto info = store_->Head(*parsed);
    EXPECT_TRUE(info.ok()) << url << ": " << info.status().ToString();
    if (!info.ok()) return "";
    std::string bytes(info->size, '\0');
    Status read = store_->GetRange(*parsed, 0, info->size, info->etag, reinterpret_cast<std::byte*>(bytes.data()));
    EXPECT_TRUE(read.ok()) << read.ToString();
    return bytes;
  }

  uint64_t ObjectLayerSize(const std::string& url) override {
    auto parsed = ParseObjectUrl(url);
    auto info = parsed.ok() ? store_->Head(*parsed) : Result<ObjectInfo>(parsed.status());
    EXPECT_TRUE(info.ok()) << url << ": " << info.status().ToString();
    return info.ok() ? info->size : 0;
  }

  // A base holds every byte; a layer above only its page map's extents.
  void OverlayObjectLayer(const std::string& url, bool is_base, std::string* bytes) override {
    const std::string layer = ReadObject(url);
    ASSERT_EQ(layer.size(), bytes->size()) << url;
    if (is_base) {
      *bytes = layer;
      return;
    }
    auto parsed = ParseObjectUrl(url);
    ASSERT_TRUE(parsed.ok());
    auto map = LayerPageMap::Parse(ReadObject(LayerPageMap::LocationOf(*parsed).ToString()));
    ASSERT_TRUE(map.ok()) << map.status().ToString();
    for (const auto& [start, end] : map->extents) bytes->replace(start, end - start, layer, start, end - start);
  }

  // The names under DATA, for "nothing changed" checks.
  std::set<std::string> Tree() {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(data_)) {
      std::string p = e.path().string().substr(data_.size());
      if (p.rfind("/uffd", 0) == 0) continue;  // the pager's own files
      out.insert(p);
    }
    return out;
  }

  // The end of snapctl's log: what the last command printed.
  std::string LogTail() {
    std::ifstream in(dir_ + "/snapctl.log");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
  }

  TestRgw rgw_;
  std::unique_ptr<ObjectStoreClient> store_;
  std::string bucket_;
  std::string host_a_, host_b_;
};

TEST_F(LifecyclePublishTest, SnapshotMovesToAnotherHostAndStaysExact) {
  // Host A: a running instance is not published.
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(300));
  EXPECT_EQ(Snapctl({"publish", "src", Url("pool")}), 5) << LogTail();
  EXPECT_NE(LogTail().find("only Standby or Stopped"), std::string::npos) << LogTail();
  EXPECT_EQ(store_->Head(ObjectUrl{bucket_, "pool/src.json"}).status().code(), ErrorCode::kNotFound)
      << "nothing is published from a running instance";

  Ok({"standby", "src"});
  KeptSnapshot a1 = Keep("src", "a1");
  const std::string base = BlobOf("src");
  EXPECT_EQ(Snapctl({"publish", "src", "s3://Not_A_Bucket/pool"}), 1) << LogTail();
  EXPECT_NE(LogTail().find("Not_A_Bucket"), std::string::npos) << LogTail();
  Ok({"publish", "src", Url("pool")});
  const std::string base_url = Url("pool/" + base);
  EXPECT_EQ(ReadObject(base_url), *ReadWholeFile(BlobPath(base))) << "the base is uploaded byte for byte";

  // Host B: import, and nothing of the memory is downloaded.
  On(host_b_);
  Ok({"import", "dst", Url("pool/src.json")});
  EXPECT_EQ(Show("dst").state, InstanceState::kStandby);
  EXPECT_EQ(Chain("dst"), std::vector<std::string>{base_url});
  EXPECT_TRUE(Blobs().empty()) << "no memory is downloaded by an import";
  EXPECT_EQ(Show("dst").details["snapshot"]["memory_layers"], json::array({base_url})) << "show names the URL";

  // A fork on B shares the object chain.
  Ok({"fork", "dst", "dst-fork", "--state", "standby"});
  EXPECT_EQ(Chain("dst-fork"), std::vector<std::string>{base_url});

  // Restore on B: B's pager pages the memory from the store; standby
  // writes a local Diff over the object layer.
  Ok({"restore", "dst"});
  auto session = Pager().GetSession("dst");
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ(session->value("state", ""), "serving") << session->dump();
  WaitForSteps("dst", a1.step + Steps(300));
  Ok({"standby", "dst"});
  auto chain = Chain("dst");
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0], base_url);
  EXPECT_FALSE(IsObjectUrl(chain[1])) << "the Diff is a local blob";
  EXPECT_EQ(Blobs(), std::set<std::string>{chain[1]});
  KeptSnapshot b1 = Keep("dst", "b1");
  ExpectExact(a1, b1);

  // The fork restores exactly from the store too.
  Ok({"restore", "dst-fork"});
  WaitForSteps("dst-fork", a1.step + Steps(200));
  Ok({"standby", "dst-fork"});
  KeptSnapshot f1 = Keep("dst-fork", "f1");
  ExpectExact(a1, f1);

  // And the imported instance again, over [object, local Diff].
  Ok({"restore", "dst"});
  WaitForSteps("dst", b1.step + Steps(200));
  Ok({"standby", "dst"});
  EXPECT_EQ(Chain("dst").size(), 3u);
  KeptSnapshot b2 = Keep("dst", "b2");
  ExpectExact(b1, b2);
  // Compaction leaves a chain with an object layer as it is.
  auto before = Chain("dst");
  Ok({"compact", "dst"});
  EXPECT_EQ(Chain("dst"), before);
  ExpectConsistentDataDir();

  // Host A: a fork that shares the published base gets a Diff layer;
  // publishing it uploads that layer alone, with its page map.
  On(host_a_);
  Ok({"fork", "src", "child", "--state", "running"});
  WaitForSteps("child", a1.step + Steps(200));
  Ok({"standby", "child"});
  auto child_chain = Chain("child");
  ASSERT_EQ(child_chain.size(), 2u);
  ASSERT_EQ(child_chain[0], base);
  KeptSnapshot c1 = Keep("child", "c1");
  auto published = Publish("child", Url("pool"));
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ(published->layers_uploaded, 1u);
  EXPECT_EQ(published->layers_reused, 1u) << "the base is in the bucket already";
  EXPECT_EQ(published->layer_bytes_uploaded, fs::file_size(BlobPath(child_chain[1])));
  EXPECT_LT(published->layer_bytes_uploaded, 2 * fs::file_size(BlobPath(base)))
      << "the chain's base is not uploaded again";
  EXPECT_EQ(published->manifest_url, Url("pool/child.json"));

  // ... and B restores that chain exactly: the page map keeps the Diff's
  // holes from covering the base's pages.
  On(host_b_);
  Ok({"import", "child-b", published->manifest_url});
  EXPECT_EQ(Chain("child-b"), published->layers);
  Ok({"restore", "child-b"});
  WaitForSteps("child-b", c1.step + Steps(200));
  Ok({"standby", "child-b"});
  ExpectExact(c1, Keep("child-b", "cb1"));

  // The base replaced in the bucket: import refuses, naming the layer, and
  // B's data directory is as it was.
  const auto tree = Tree();
  std::string other(fs::file_size(BlobPath(chain[1])), 'x');
  ASSERT_TRUE(store_->Put(ObjectUrl{bucket_, "pool/" + base}, other).ok());
  EXPECT_EQ(Snapctl({"import", "stale", Url("pool/src.json")}), 5) << LogTail();
  EXPECT_NE(LogTail().find(base_url + " changed since manifest"), std::string::npos) << LogTail();
  EXPECT_FALSE(HasInstance("stale"));
  EXPECT_EQ(Tree(), tree);

  // A missing manifest: refused, naming it, nothing changed.
  EXPECT_EQ(Snapctl({"import", "ghost", Url("pool/none.json")}), 1) << LogTail();
  EXPECT_NE(LogTail().find(Url("pool/none.json")), std::string::npos) << LogTail();
  EXPECT_FALSE(HasInstance("ghost"));
  EXPECT_EQ(Tree(), tree);
  ExpectConsistentDataDir();
}

TEST(SnapshotManifestTest, EncodesWhatItParsesAndRefusesWhatIsNotOne) {
  SnapshotManifest m;
  m.name = "vm1";
  m.vcpu_count = 2;
  m.mem_size_mib = 32;
  m.state_file = {"s3://b-1/p/vmstate-1", "\"e0\"", 4096};
  m.layers = {{"s3://b-1/p/base", "\"e1\"", 32 << 20}, {"s3://b-1/p/diff", "\"e2\"", 32 << 20}};
  auto parsed = SnapshotManifest::Parse(m.Encode());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->Encode(), m.Encode());
  EXPECT_EQ(parsed->layers[1].etag, "\"e2\"");

  auto refused = [](const std::string& text, const std::string& why) {
    auto r = SnapshotManifest::Parse(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().ToString();
  };
  json j = json::parse(m.Encode());
  refused("{not json", "must be JSON");
  json other = j;
  other["format"] = "uffdpager-layer-page-map";
  refused(other.dump(), "not a snapshot manifest");
  json no_layers = j;
  no_layers["layers"] = json::array();
  refused(no_layers.dump(), "non-empty");
  json bad_url = j;
  bad_url["layers"][1]["url"] = "/var/lib/blob";
  refused(bad_url.dump(), "layers[1].url");
  json no_etag = j;
  no_etag["state_file"].erase("etag");
  refused(no_etag.dump(), "etag");
}

// An import killed at each of its steps leaves, after recovery, either no
// instance or the whole one, and a data directory with nothing half done;
// the imported chain is never merged locally.
TEST_F(LifecyclePublishTest, InterruptedImportIsRolledBackOrComplete) {
  Ok({"create", "src", "--vcpus", "1", "--mem-mib", "32"});
  WaitForSteps("src", Steps(100));
  Ok({"standby", "src"});
  Ok({"publish", "src", Url("pool")});
  On(host_b_);
  const auto tree = Tree();
  for (const char* point : {"import.after_state_file", "import.before_commit"}) {
    EXPECT_EQ(Snapctl({"import", "dst", Url("pool/src.json")}, point), kCrashExitCode) << point;
    Ok({"recover"});
    EXPECT_FALSE(HasInstance("dst")) << point;
    EXPECT_EQ(Tree(), tree) << point;
    ExpectConsistentDataDir();
  }
  EXPECT_EQ(Snapctl({"import", "dst", Url("pool/src.json")}, "import.after_commit"), kCrashExitCode);
  Ok({"recover"});
  EXPECT_EQ(Show("dst").state, InstanceState::kStandby);
  ExpectConsistentDataDir();

  // A chain over an object layer is never merged here: with no room for a
  // layer, the standby is refused naming the limit, and the VM runs on.
  Ok({"init", "--max-layers", "1"});
  Ok({"restore", "dst"});
  EXPECT_EQ(Snapctl({"standby", "dst"}), 5) << LogTail();
  EXPECT_NE(LogTail().find("max_layers 1"), std::string::npos) << LogTail();
  EXPECT_EQ(Show("dst").state, InstanceState::kRunning);
  EXPECT_EQ(Chain("dst"), std::vector<std::string>{Url("pool/" + BlobOfOn(host_a_, "src"))});
}

}  // namespace
}  // namespace uffdpager::lifecycle::testing
