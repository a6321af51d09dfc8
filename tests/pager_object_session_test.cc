// Sessions whose snapshot memory is an S3 object (backing_memory_url),
// through a real uffd-pager and a real Ceph RGW (the ctest fixture
// object_store_rgw_setup). The pager takes its store from the AWS_*
// environment it is started with; the VMM side is the tests' Firecracker.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/http_client.h"
#include "common/layer_page_map.h"
#include "common/object_store_client.h"
#include "pager/storage/object_chunk_store.h"
#include "support/child_vmm.h"
#include "support/pager_fixture.h"
#include "support/prometheus_text.h"
#include "support/scoped_tmpfs.h"
#include "support/tcp_relay.h"
#include "support/test_layers.h"
#include "support/test_rgw.h"

namespace uffdpager::testing::object_session_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

// Sets environment variables for the pager this test starts (a child
// inherits them), and puts back what was there.
class ScopedEnvironment {
 public:
  ~ScopedEnvironment() {
    for (const auto& [name, old] : saved_) {
      if (old) {
        ::setenv(name.c_str(), old->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }
  void Set(const std::string& name, const std::optional<std::string>& value) {
    if (saved_.count(name) == 0) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value) {
      ::setenv(name.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// The objects of the outage tests, and a page in them that the first
// restore steps leave unfetched: past the chunks read ahead with chunk 0.
constexpr uint64_t kRelayedObjectBytes = 16 * kMiB;
constexpr uint64_t kUnfetchedOffset = 12 * kMiB;
static_assert(kUnfetchedOffset >= (1 + ObjectChunkStore::kDefaultReadaheadChunks) * ObjectChunkStore::kChunkBytes);

class PagerObjectSessionTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    rgw_ = TestRgw::Load(UFFDPAGER_TEST_RGW_DIR);
    if (!rgw_.skip_reason.empty()) GTEST_SKIP() << "no Ceph RGW: " << rgw_.skip_reason;
    auto bucket = CreateTestBucket(rgw_);
    ASSERT_TRUE(bucket.ok()) << bucket.status().ToString();
    store_ = std::move(bucket->store);
    bucket_ = bucket->name;
  }

  // A pager with the fixture's store in its environment; `changes` replace
  // (or, nullopt, remove) some of those variables. On `data_dir` (another
  // host's, as it were) if given, else the fixture's.
  std::unique_ptr<TestPager> StartPagerProcess(const PagerProcessOptions& options,
                                               const std::map<std::string, std::optional<std::string>>& changes = {},
                                               const std::string& data_dir = "") {
    ScopedEnvironment env;
    for (const auto& [name, value] : rgw_.env) env.Set(name, value);
    for (const auto& [name, value] : changes) env.Set(name, value);
    auto pager = TestPager::Start(data_dir.empty() ? dir_.path() : data_dir, options);
    EXPECT_TRUE(pager.ok()) << pager.status().ToString();
    return pager.ok() ? std::move(*pager) : nullptr;
  }
  // The fixture's pager, so.
  void StartPagerWithStore(const std::map<std::string, std::optional<std::string>>& changes = {}) {
    pager_ = StartPagerProcess({}, changes);
    ASSERT_TRUE(pager_);
  }

  // A generated snapshot of `size` bytes, written locally (for comparisons)
  // and stored as `key`.
  std::string PutSnapshot(const std::string& key, uint64_t size, uint64_t seed) {
    std::string local = key;
    std::replace(local.begin(), local.end(), '/', '_');
    std::string path = MakeSnapshot(local, size, seed);
    auto bytes = ReadFileBytes(path);
    auto put = store_->Put(ObjectUrl{bucket_, key},
                           std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    EXPECT_TRUE(put.ok()) << put.status().ToString();
    return path;
  }
  std::string Url(const std::string& key) const { return "s3://" + bucket_ + "/" + key; }

  Result<CreatedSession> CreateUrlSession(const std::string& id, const std::string& url,
                                          bool kill_client_on_failure = false, TestPager* pager = nullptr) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_memory_url = url;
    req.kill_client_on_failure = kill_client_on_failure;
    return (pager != nullptr ? pager : pager_.get())->client().CreateSession(req);
  }

  // One host (a pager on `data_dir`) restores the object `key` and touches
  // `pages`, and publishes the working set it records: returns when the
  // published object is in the store.
  void RecordAndPublish(const std::string& data_dir, const std::string& key, const std::vector<uint64_t>& pages,
                        uint64_t size) {
    auto host = StartPagerProcess({.extra_args = {"--prefetch-record-ms", "300"}}, {}, data_dir);
    ASSERT_TRUE(host);
    auto created = CreateUrlSession("recorder", Url(key), false, host.get());
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, {size});
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchPages((*vm)->memory, pages);
    ASSERT_TRUE(WaitFor(
        [&] {
          auto s = host->client().Stats();
          return s.ok() && s->value("working_sets_published", uint64_t{0}) == 1;
        },
        std::chrono::seconds(30)))
        << host->Log();
    ASSERT_TRUE(host->client().CloseSession("recorder").ok());
  }

  // Session "s" on a 16 MiB object (kill_client_on_failure) through a pager
  // that reaches the store through relay_ and retries `retries` times, and
  // vmm_ restoring it, its first chunk already served.
  void StartRestoreBehindRelay(int retries, uint64_t seed) {
    snapshot_ = PutSnapshot("mem", kRelayedObjectBytes, seed);
    auto relay = TcpRelay::Start(rgw_.Port());
    ASSERT_TRUE(relay.ok()) << relay.status().ToString();
    relay_ = std::move(*relay);
    pager_ = StartPagerProcess({.extra_args = {"--object-store-retries", std::to_string(retries)}},
                               {{"AWS_ENDPOINT_URL", relay_->endpoint()}});
    ASSERT_TRUE(pager_);
    auto created = CreateUrlSession("s", Url("mem"), /*kill_client_on_failure=*/true);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vmm =
        ChildVmm::Start(created->uffd_socket_path, {.regions = {kRelayedObjectBytes}, .snapshot_path = snapshot_});
    ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
    vmm_ = std::move(*vmm);
    ASSERT_TRUE(vmm_->Verify(0).ok());
  }

  // The touch of the page at `offset` that session "s" cannot serve: it
  // fails, and its VMM (which asked for kill_client_on_failure) is killed
  // rather than left waiting. The session's failure reason.
  std::string TouchFailsAndKillsTheVmm(ChildVmm* vmm, uint64_t offset) {
    EXPECT_FALSE(vmm->Verify(offset, std::chrono::seconds(60)).ok());
    int wait_status = 0;
    EXPECT_TRUE(vmm->WaitForExit(std::chrono::seconds(30), &wait_status));
    EXPECT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL) << wait_status;
    auto s = Session("s");
    EXPECT_EQ(s["state"], "failed");
    return s.value("reason", "");
  }

  // Uploads `bytes` as `key`; its ETag.
  std::string PutBytes(const std::string& key, const std::vector<uint8_t>& bytes) {
    auto put = store_->Put(ObjectUrl{bucket_, key},
                           std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    EXPECT_TRUE(put.ok()) << put.status().ToString();
    return put.ok() ? put->etag : "";
  }

  // A Diff layer of `size` bytes holding the pages at `offsets` (the rest
  // zeros), written over *image, uploaded whole as `key` (object storage
  // keeps no holes) with a page map naming those pages beside it unless
  // `map_etag` says to bind the map to another version ("" binds it to the
  // upload).
  void PutObjectLayer(const std::string& key, uint64_t size, const std::vector<uint64_t>& offsets, uint64_t seed,
                      std::vector<uint8_t>* image, const std::string& map_etag = "") {
    std::string local = key + ".local";
    std::replace(local.begin(), local.end(), '/', '_');
    local = dir_.path() + "/" + local;
    ASSERT_TRUE(WriteTestLayer(local, size, offsets, seed, image));
    const std::string etag = PutBytes(key, ReadFileBytes(local));
    LayerPageMap map;
    map.layer_etag = map_etag.empty() ? etag : map_etag;
    map.layer_size = size;
    for (uint64_t offset : offsets) {
      if (!map.extents.empty() && map.extents.back().second == offset) {
        map.extents.back().second += kLayerPage;
      } else {
        map.extents.emplace_back(offset, offset + kLayerPage);
      }
    }
    const std::string text = map.Encode();
    PutBytes(key + ".pagemap", std::vector<uint8_t>(text.begin(), text.end()));
  }

  // `image` as a local file, for MatchesSnapshotFile.
  std::string WriteImage(const std::string& name, const std::vector<uint8_t>& image) {
    const std::string path = dir_.path() + "/" + name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(image.data()), static_cast<std::streamsize>(image.size()));
    return path;
  }

  Result<CreatedSession> CreateChainSession(const std::string& id, const std::vector<std::string>& layers) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_layers = layers;
    return pager_->client().CreateSession(req);
  }

  TestRgw rgw_;
  std::unique_ptr<ObjectStoreClient> store_;
  std::string bucket_;
  std::string snapshot_;
  std::unique_ptr<TcpRelay> relay_;
  std::unique_ptr<ChildVmm> vmm_;
};

TEST_F(PagerObjectSessionTest, ServesAFirecrackerClientByteExact) {
  const std::vector<uint64_t> regions = {8 * kMiB, 4 * kMiB};
  std::string snap = PutSnapshot("snap/memory", 12 * kMiB, 1);
  StartPagerWithStore();
  auto created = CreateUrlSession("s1", Url("snap/memory"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, regions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 4);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));

  auto s = Session("s1");
  EXPECT_EQ(s["state"], "serving");
  EXPECT_EQ(s["backing_memory_url"], Url("snap/memory"));
  EXPECT_FALSE(s.value("backing_etag", "").empty()) << s.dump();
  EXPECT_EQ(s["cache_key"], Url("snap/memory"));
  EXPECT_EQ(Stat("object_store_bytes"), 12 * kMiB);
  EXPECT_EQ(Stat("object_chunk_misses"), 12u);
  EXPECT_EQ(Stat("object_store_errors"), 0u);
  // The answers never hold a credential.
  const std::string secret = rgw_.env["AWS_SECRET_ACCESS_KEY"];
  EXPECT_EQ(s.dump().find(secret), std::string::npos);
  EXPECT_EQ(pager_->Log().find(secret), std::string::npos);
}

TEST_F(PagerObjectSessionTest, PathAndUrlTogetherOrNeitherAreRefused) {
  std::string snap = PutSnapshot("m", 4 * kMiB, 2);
  StartPagerWithStore();
  CreateSessionRequest req;
  req.instance_id = "both";
  req.backing_memory_path = snap;
  req.backing_memory_url = Url("m");
  auto both = pager_->client().CreateSession(req);
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("HTTP 400"), std::string::npos) << both.status().ToString();
  EXPECT_NE(both.status().message().find("not more: a session serves one memory"), std::string::npos)
      << both.status().ToString();
  req.backing_memory_path.clear();
  req.backing_memory_url.clear();
  auto neither = pager_->client().CreateSession(req);
  ASSERT_FALSE(neither.ok());
  EXPECT_NE(neither.status().message().find("HTTP 400"), std::string::npos) << neither.status().ToString();
  EXPECT_NE(neither.status().message().find("backing_memory_url"), std::string::npos) << neither.status().ToString();
}

TEST_F(PagerObjectSessionTest, APagerWithoutAStoreRefusesUrlsSayingSo) {
  StartPagerWithStore({{"AWS_ENDPOINT_URL", std::nullopt}});
  auto created = CreateUrlSession("s", Url("m"));
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("HTTP 400"), std::string::npos) << created.status().ToString();
  EXPECT_NE(created.status().message().find("AWS_ENDPOINT_URL"), std::string::npos) << created.status().ToString();
}

TEST_F(PagerObjectSessionTest, AMissingObjectIs404NamingItAndLeavesOtherSessionsAlone) {
  std::string snap = PutSnapshot("present", 4 * kMiB, 3);
  StartPagerWithStore();
  auto live = CreateUrlSession("live", Url("present"));
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  auto vm = VmmStandIn::Restore(live->uffd_socket_path, {4 * kMiB});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  auto missing = CreateUrlSession("gone", Url("no/such/key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("HTTP 404"), std::string::npos) << missing.status().ToString();
  EXPECT_NE(missing.status().message().find("no/such/key"), std::string::npos) << missing.status().ToString();
  auto no_bucket = CreateUrlSession("gone", "s3://no-such-bucket-here/k");
  ASSERT_FALSE(no_bucket.ok());
  EXPECT_NE(no_bucket.status().message().find("HTTP 404"), std::string::npos) << no_bucket.status().ToString();
  EXPECT_NE(no_bucket.status().message().find("no-such-bucket-here"), std::string::npos)
      << no_bucket.status().ToString();

  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(SessionState("live"), "serving");
}

TEST_F(PagerObjectSessionTest, WrongCredentialsAre403WithoutTheSecretAndLeaveOtherSessionsAlone) {
  const std::string wrong = "not-the-secret-" + std::to_string(::getpid());
  StartPagerWithStore({{"AWS_SECRET_ACCESS_KEY", wrong}});
  std::string file = MakeSnapshot("local-mem", 4 * kMiB, 4);
  std::string sock = CreateSession("file", file);
  auto vm = VmmStandIn::Restore(sock, {4 * kMiB});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  auto denied = CreateUrlSession("denied", Url("anything"));
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.status().message().find("HTTP 403"), std::string::npos) << denied.status().ToString();
  EXPECT_EQ(denied.status().message().find(wrong), std::string::npos) << denied.status().ToString();
  EXPECT_EQ(pager_->Log().find(wrong), std::string::npos);

  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, file));
  EXPECT_EQ(SessionState("file"), "serving");
}

TEST_F(PagerObjectSessionTest, AnUnreachableStoreIsABadGateway) {
  // Nothing listens on port 1 of the loopback: every attempt is refused.
  StartPagerWithStore({{"AWS_ENDPOINT_URL", "http://127.0.0.1:1"}});
  auto created = CreateUrlSession("s", Url("m"));
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("HTTP 502"), std::string::npos) << created.status().ToString();
  EXPECT_GE(Stat("object_store_errors"), 1u);
}

TEST_F(PagerObjectSessionTest, AnObjectOverwrittenMidSessionFailsItAndNeverServesTheNewBytes) {
  std::string snap = PutSnapshot("mem", 16 * kMiB, 5);
  StartPagerWithStore();
  auto created = CreateUrlSession("s", Url("mem"), /*kill_client_on_failure=*/true);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vmm = ChildVmm::Start(created->uffd_socket_path, {.regions = {16 * kMiB}, .snapshot_path = snap});
  ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
  // Pages of the first chunk are served from the version the session pinned.
  ASSERT_TRUE((*vmm)->Verify(0).ok());
  ASSERT_TRUE((*vmm)->Verify(64 * 1024).ok());

  // Same key, same size, other bytes.
  std::string other = MakeSnapshot("other", 16 * kMiB, 6);
  auto bytes = ReadFileBytes(other);
  ASSERT_TRUE(
      store_
          ->Put(ObjectUrl{bucket_, "mem"}, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()))
          .ok());

  // A page of a chunk not fetched yet: the store refuses the pinned ETag.
  // Verify would report a page that differs from the first version; the
  // session fails instead and the VMM is killed.
  const std::string reason = TouchFailsAndKillsTheVmm(vmm->get(), kUnfetchedOffset);
  EXPECT_NE(reason.find(Url("mem")), std::string::npos) << reason;
  EXPECT_NE(reason.find("changed"), std::string::npos) << reason;
  EXPECT_EQ(Stat("failed_sessions"), 1u);
  // Only the first chunk's bytes, and those read ahead with it, ever came
  // from the store.
  EXPECT_EQ(Stat("object_store_bytes"), (1 + ObjectChunkStore::kDefaultReadaheadChunks) * kMiB);
}

// The store goes away mid-restore and comes back within the retry budget:
// the vCPU that needs a chunk waits, then gets exactly the pinned bytes, and
// the session serves on. The relay comes back only once the pager has seen
// the outage (a retry counted), and the budget (30 retries, backoff up to
// 2 s) is far longer than that takes on any machine.
TEST_F(PagerObjectSessionTest, AStoreBackWithinTheRetryBudgetOnlyDelaysTheRestore) {
  ASSERT_NO_FATAL_FAILURE(StartRestoreBehindRelay(/*retries=*/30, /*seed=*/11));
  TcpRelay* relay = relay_.get();
  ChildVmm* vmm = vmm_.get();

  relay->Cut();
  const uint64_t retries_before = Stat("object_store_retries");
  // A page of a chunk not fetched yet: its fault waits on the store.
  ASSERT_TRUE(vmm->StartVerify(kUnfetchedOffset).ok());
  ASSERT_TRUE(WaitFor([&] { return Stat("object_store_retries") > retries_before; }, std::chrono::seconds(30)))
      << "the pager never retried while the store was away";
  Status mended = relay->Mend();
  ASSERT_TRUE(mended.ok()) << mended.ToString();

  // The waiting touch is answered (byte-exact), then the rest of the memory.
  Status touched = vmm->AwaitVerify(kUnfetchedOffset, std::chrono::seconds(60));
  EXPECT_TRUE(touched.ok()) << touched.ToString();
  for (uint64_t offset = 0; offset < kRelayedObjectBytes; offset += 256 * 1024) {
    Status page = vmm->Verify(offset);
    ASSERT_TRUE(page.ok()) << offset << ": " << page.ToString();
  }
  EXPECT_EQ(Session("s")["state"], "serving");
  EXPECT_EQ(Stat("failed_sessions"), 0u);
  EXPECT_TRUE(vmm->Running());
}

// Past the retry budget the session fails loudly: state failed with a reason
// naming the object and the store's error, the failure counted, and the VMM
// (which asked for it) killed rather than left hanging on its fault.
TEST_F(PagerObjectSessionTest, AStoreGonePastTheRetryBudgetFailsTheSessionLoudly) {
  ASSERT_NO_FATAL_FAILURE(StartRestoreBehindRelay(/*retries=*/1, /*seed=*/12));
  TcpRelay* relay = relay_.get();
  ChildVmm* vmm = vmm_.get();

  relay->Cut();
  const std::string reason = TouchFailsAndKillsTheVmm(vmm, kUnfetchedOffset);
  EXPECT_NE(reason.find(Url("mem")), std::string::npos) << reason;
  EXPECT_EQ(Stat("failed_sessions"), 1u);
  EXPECT_GE(Stat("object_store_retries"), 1u);
}

TEST_F(PagerObjectSessionTest, AFullDiskTierFailsTheSessionLoudlyAndNoVmHangs) {
  constexpr uint64_t kSize = 16 * kMiB;
  snapshot_ = PutSnapshot("big", kSize, 31);
  // The disk tier alone on a 4 MiB file system: the first fetch (a chunk and
  // its readahead) fills it.
  ScopedTmpfs tier(dir_.path() + "/uffd/test/object-cache", "4m");
  if (!tier.mounted()) GTEST_SKIP() << tier.error();
  StartPagerWithStore();
  auto created = CreateUrlSession("s", Url("big"), /*kill_client_on_failure=*/true);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vmm = ChildVmm::Start(created->uffd_socket_path, {.regions = {kSize}, .snapshot_path = snapshot_});
  ASSERT_TRUE(vmm.ok()) << vmm.status().ToString();
  // Readahead that does not fit is not the caller's loss.
  ASSERT_TRUE((*vmm)->Verify(0).ok()) << pager_->Log();
  // A chunk the guest needs and the disk cannot hold: the session fails,
  // saying why, and its VM is killed rather than left waiting or served
  // anything but the object's bytes.
  const std::string reason = TouchFailsAndKillsTheVmm(vmm->get(), kUnfetchedOffset);
  EXPECT_NE(reason.find("No space left on device"), std::string::npos) << reason;
  EXPECT_NE(reason.find(Url("big")), std::string::npos) << reason;
  // The pager itself goes on: another session is created and served.
  auto again = CreateUrlSession("t", Url("big"));
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST_F(PagerObjectSessionTest, EightSessionsOfOneObjectFetchItAboutOnce) {
  constexpr uint64_t kSize = 16 * kMiB;
  std::string snap = PutSnapshot("shared", kSize, 7);
  StartPagerWithStore();
  std::vector<std::string> sockets;
  for (int i = 0; i < 8; ++i) {
    auto created = CreateUrlSession("s" + std::to_string(i), Url("shared"));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    sockets.push_back(created->uffd_socket_path);
  }
  std::vector<std::unique_ptr<VmmStandIn>> vms(sockets.size());
  std::vector<std::thread> threads;
  std::vector<Status> outcomes(sockets.size());
  for (size_t i = 0; i < sockets.size(); ++i) {
    threads.emplace_back([&, i] {
      auto vm = VmmStandIn::Restore(sockets[i], {kSize});
      if (!vm.ok()) {
        outcomes[i] = vm.status();
        return;
      }
      TouchAllPages((*vm)->memory, 2);
      vms[i] = std::move(*vm);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < vms.size(); ++i) {
    ASSERT_TRUE(outcomes[i].ok()) << outcomes[i].ToString();
    EXPECT_TRUE(MatchesSnapshotFile(vms[i]->memory, snap)) << "session " << i;
  }
  const uint64_t from_store = Stat("object_store_bytes");
  std::cout << "8 sessions of a " << kSize << "-byte object: " << from_store << " bytes from the store, "
            << Stat("object_store_requests") << " requests, " << Stat("object_chunk_hits") << " chunk hits\n";
  EXPECT_GE(from_store, kSize);
  EXPECT_LE(from_store, kSize * 12 / 10);
}

TEST_F(PagerObjectSessionTest, ARestartedPagerReusesTheDiskTier) {
  constexpr uint64_t kSize = 8 * kMiB;
  std::string snap = PutSnapshot("kept", kSize, 8);
  // Without published working sets: the second restore would replay the
  // first one's from the store instead of reading the disk tier.
  const PagerProcessOptions options{.extra_args = {"--no-published-working-sets"}};
  pager_ = StartPagerProcess(options);
  ASSERT_TRUE(pager_);
  {
    auto created = CreateUrlSession("first", Url("kept"));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
    EXPECT_EQ(Stat("object_store_bytes"), kSize);
    ASSERT_TRUE(pager_->client().CloseSession("first").ok());
  }
  pager_.reset();  // stops the process

  pager_ = StartPagerProcess(options);
  ASSERT_TRUE(pager_);
  // Another cache key: no recorded working set of the first session is
  // replayed (it would serve the pages from its compact file); every page
  // comes through the object's chunks.
  CreateSessionRequest req = SessionRequest("second");
  req.backing_memory_url = Url("kept");
  req.cache_key = "kept-again";
  auto created = pager_->client().CreateSession(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(Stat("object_store_bytes"), 0u);
  EXPECT_EQ(Stat("object_chunks_reused"), kSize / kMiB);
  EXPECT_EQ(Stat("object_chunk_misses"), 0u);
}

TEST_F(PagerObjectSessionTest, TheDiskTierStaysWithinItsBoundByRemovingVersionsNoSessionUses) {
  constexpr uint64_t kSize = 4 * kMiB;
  std::string snap_a = PutSnapshot("a", kSize, 10);
  std::string snap_b = PutSnapshot("b", kSize, 11);
  // No working sets: nothing but the sessions holds an object version.
  pager_ = StartPagerProcess({.extra_args = {"--object-cache-max-bytes", std::to_string(6 * kMiB), "--no-prefetch"}});
  ASSERT_TRUE(pager_);
  auto mem_files = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(pager_->root_dir() + "/object-cache")) {
      n += e.path().extension() == ".mem" ? 1 : 0;
    }
    return n;
  };
  auto serve = [&](const std::string& id, const std::string& key, const std::string& snap) {
    auto created = CreateUrlSession(id, Url(key));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  };
  serve("a", "a", snap_a);
  ASSERT_TRUE(pager_->client().CloseSession("a").ok());
  // b's chunks push the tier past 6 MiB: a, which no session uses, goes.
  serve("b", "b", snap_b);
  EXPECT_EQ(Stat("object_cache_evictions"), 1u);
  EXPECT_EQ(mem_files(), 1u);
  // b is in use: over the bound or not, it is never removed under its session.
  serve("b2", "b", snap_b);
  EXPECT_EQ(Stat("object_cache_evictions"), 1u);
  EXPECT_EQ(Stat("object_store_bytes"), 2 * kSize);
  EXPECT_EQ(SessionState("b"), "serving");
}

TEST_F(PagerObjectSessionTest, AHandOverKeepsServingThePinnedVersion) {
  constexpr uint64_t kSize = 8 * kMiB;
  std::string snap = PutSnapshot("handed", kSize, 9);
  auto old_pager = StartPagerProcess({.version_key = "v1"});
  ASSERT_TRUE(old_pager);
  CreateSessionRequest req = SessionRequest("a");
  req.backing_memory_url = Url("handed");
  auto created = old_pager->client().CreateSession(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchPages((*vm)->memory, {0, 1, 2, 300, 301});
  const std::string etag = Session(*old_pager, "a").value("backing_etag", "");
  ASSERT_FALSE(etag.empty());

  auto new_pager = StartPagerProcess({.version_key = "v2", .extra_args = {"--take-over", "v1"}});
  ASSERT_TRUE(new_pager);
  EXPECT_TRUE(old_pager->WaitForExit(std::chrono::seconds(20))) << old_pager->Log();
  auto s = Session(*new_pager, "a");
  EXPECT_EQ(s["origin"], "taken over from version v1") << s.dump();
  EXPECT_EQ(s["backing_memory_url"], Url("handed"));
  EXPECT_EQ(s["backing_etag"], etag);
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap)) << new_pager->Log();
  EXPECT_EQ(SessionState(*new_pager, "a"), "serving");
  EXPECT_TRUE(new_pager->client().CloseSession("a").ok());
}

// A chain whose base and top are objects and whose middle is a local file:
// each page from the topmost layer holding it, the top's page map deciding
// which of its uploaded bytes (zeros elsewhere) are data. The store is asked
// only for the top's chunks its map names.
TEST_F(PagerObjectSessionTest, AChainOfObjectAndFileLayersIsServedByteExactAsItsPageMapsSay) {
  constexpr uint64_t kSize = 8 * kMiB;
  std::string base = PutSnapshot("chain/base", kSize, 11);
  std::vector<uint8_t> image = ReadFileBytes(base);
  // The middle: a local sparse Diff layer over the whole range.
  const std::string middle = dir_.path() + "/middle.mem";
  std::vector<uint64_t> middle_pages;
  for (uint64_t off = 3 * kLayerPage; off < kSize; off += 37 * kLayerPage) middle_pages.push_back(off);
  ASSERT_TRUE(WriteTestLayer(middle, kSize, middle_pages, 12, &image));
  // The top: pages in the first two 1 MiB chunks only, a run and single
  // pages, some of them zeros (a dirtied page of zeros is data).
  std::vector<uint64_t> top_pages;
  for (uint64_t p = 0; p < 16; ++p) top_pages.push_back(p * kLayerPage);
  for (uint64_t p = 20; p < 512; p += 9) top_pages.push_back(p * kLayerPage);
  PutObjectLayer("chain/top", kSize, top_pages, 13, &image);
  const std::string expected = WriteImage("expected.mem", image);
  StartPagerWithStore();

  auto created = CreateChainSession("c", {Url("chain/base"), middle, Url("chain/top")});
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 4);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, expected)) << pager_->Log();

  auto s = Session("c");
  EXPECT_EQ(s["state"], "serving");
  ASSERT_EQ(s["backing_layer_etags"].size(), 3u) << s.dump();
  EXPECT_FALSE(s["backing_layer_etags"][0].get<std::string>().empty());
  EXPECT_EQ(s["backing_layer_etags"][1], "") << "a file has no ETag";
  EXPECT_FALSE(s["backing_layer_etags"][2].get<std::string>().empty());
  // The base whole (every chunk holds pages no layer above covers), and of
  // the top only the two chunks its map names.
  EXPECT_EQ(Stat("object_store_bytes"), kSize + 2 * kMiB);
  EXPECT_EQ(Stat("object_store_errors"), 0u);
}

// The same top without its page map would serve its zeros over every page
// below; a map bound to another version of the layer is refused before
// anything is served, naming the map, and so is one that is not a page map.
// A live session of the same id keeps serving.
TEST_F(PagerObjectSessionTest, APageMapThatDoesNotDescribeItsLayerIsRefusedNamingIt) {
  constexpr uint64_t kSize = 4 * kMiB;
  std::string base = PutSnapshot("base", kSize, 14);
  std::vector<uint8_t> image = ReadFileBytes(base);
  PutObjectLayer("good", kSize, {0, 5 * kLayerPage}, 15, &image);
  std::vector<uint8_t> ignored = image;
  PutObjectLayer("stale", kSize, {kLayerPage}, 16, &ignored, "\"0000000000000000\"");
  PutBytes("garbled", std::vector<uint8_t>(kSize, 0));
  const std::string garbage = "{\"format\": \"something else\"}";
  PutBytes("garbled.pagemap", std::vector<uint8_t>(garbage.begin(), garbage.end()));
  const std::string expected = WriteImage("expected.mem", image);
  StartPagerWithStore();
  auto live = CreateChainSession("s", {Url("base"), Url("good")});
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  auto vm = VmmStandIn::Restore(live->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  for (const std::string& top : {std::string("stale"), std::string("garbled")}) {
    SCOPED_TRACE(top);
    for (const std::string& id : {std::string("s"), std::string("other")}) {
      auto refused = CreateChainSession(id, {Url("base"), Url(top)});
      ASSERT_FALSE(refused.ok());
      if (id == "other") {
        EXPECT_NE(refused.status().message().find("HTTP 400"), std::string::npos) << refused.status().ToString();
        EXPECT_NE(refused.status().message().find("page map " + Url(top) + ".pagemap"), std::string::npos)
            << refused.status().ToString();
        EXPECT_NE(refused.status().message().find("layer 1"), std::string::npos) << refused.status().ToString();
      }
    }
    EXPECT_NE(pager_->Log().find(top == "stale" ? "write the page map again" : "\"format\" is \"something else\""),
              std::string::npos);
  }
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, expected)) << pager_->Log();
  EXPECT_EQ(SessionState("s"), "serving");
}

TEST_F(PagerObjectSessionTest, AnObjectLayerOnAPagerWithoutAStoreIsRefusedNamingTheLayer) {
  std::string base = MakeSnapshot("base.mem", 4 * kMiB, 17);
  StartPagerWithStore({{"AWS_ENDPOINT_URL", std::nullopt}});
  auto refused = CreateChainSession("s", {base, Url("top")});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("HTTP 400"), std::string::npos) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("\"backing_layers[1]\" cannot be served here"), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("AWS_ENDPOINT_URL"), std::string::npos) << refused.status().ToString();
  auto bad_url = CreateChainSession("s", {base, "s3://No_Such_Bucket/top"});
  ASSERT_FALSE(bad_url.ok());
  EXPECT_NE(bad_url.status().message().find("HTTP 400"), std::string::npos) << bad_url.status().ToString();
  EXPECT_NE(bad_url.status().message().find("backing_layers[1]"), std::string::npos) << bad_url.status().ToString();
}

// A hand-over reopens each object layer at the version it was serving.
TEST_F(PagerObjectSessionTest, AHandOverKeepsEveryObjectLayerAtItsPinnedVersion) {
  constexpr uint64_t kSize = 4 * kMiB;
  std::string base = PutSnapshot("hbase", kSize, 18);
  std::vector<uint8_t> image = ReadFileBytes(base);
  PutObjectLayer("htop", kSize, {0, 2 * kLayerPage, 700 * kLayerPage}, 19, &image);
  const std::string expected = WriteImage("expected.mem", image);
  auto old_pager = StartPagerProcess({.version_key = "v1"});
  ASSERT_TRUE(old_pager);
  CreateSessionRequest req = SessionRequest("a");
  req.backing_layers = {Url("hbase"), Url("htop")};
  auto created = old_pager->client().CreateSession(req);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchPages((*vm)->memory, {0, 1, 2, 3});
  const nlohmann::json etags = Session(*old_pager, "a")["backing_layer_etags"];
  ASSERT_EQ(etags.size(), 2u);

  auto new_pager = StartPagerProcess({.version_key = "v2", .extra_args = {"--take-over", "v1"}});
  ASSERT_TRUE(new_pager);
  EXPECT_TRUE(old_pager->WaitForExit(std::chrono::seconds(20))) << old_pager->Log();
  auto s = Session(*new_pager, "a");
  EXPECT_EQ(s["origin"], "taken over from version v1") << s.dump();
  EXPECT_EQ(s["backing_layer_etags"], etags);
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, expected)) << new_pager->Log();
  EXPECT_EQ(SessionState(*new_pager, "a"), "serving");
}

TEST_F(PagerObjectSessionTest, AWorkingSetRecordedOnOneHostIsReplayedFromTheStoreOnAnother) {
  constexpr uint64_t kSize = 16 * kMiB;
  const std::vector<uint64_t> working_set = SpreadPages(kSize / 4096, 21);
  std::string snap = PutSnapshot("fleet", kSize, 21);
  TempDir host_a;
  RecordAndPublish(host_a.path(), "fleet", working_set, kSize);
  auto published = store_->Head(ObjectUrl{bucket_, "fleet.workingset"});
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_GE(published->size, working_set.size() * 4096);

  // Another host, which never saw the snapshot: the fixture's pager on its
  // own, empty, data directory.
  StartPagerWithStore();
  auto created = CreateUrlSession("b", Url("fleet"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // Nothing is touched until the replay has installed the working set: then
  // every byte from the store so far is the published working set's.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto c = Session("b")["counters"];
        return c.value("published_working_set_replays", 0) == 1 &&
               c.value("prefetch_pages", uint64_t{0}) >= working_set.size();
      },
      std::chrono::seconds(30)))
      << Session("b").dump() << pager_->Log();
  auto c = Session("b")["counters"];
  EXPECT_EQ(c["compact_replays"], 1) << c.dump();
  EXPECT_EQ(c["faults"], 0) << c.dump();
  EXPECT_EQ(Stat("object_store_bytes"), published->size);
  const std::vector<uint8_t> file = ReadFileBytes(snap);
  for (uint64_t p : working_set) {
    ASSERT_EQ(std::memcmp((*vm)->memory.AtFileOffset(p * 4096), file.data() + p * 4096, 4096), 0) << "page " << p;
  }
  EXPECT_EQ(Session("b")["counters"]["faults"], 0);
  // The pages outside it come from the object's chunks, as ever.
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
  EXPECT_EQ(Stat("working_sets_published"), 0u) << "a replayed working set is not published again";

  // What an operator sees of it.
  HttpClient http(ControlSocket());
  auto scraped = http.Send("GET", "/metrics");
  ASSERT_TRUE(scraped.ok()) << scraped.status().ToString();
  auto page = ParsePrometheusText(scraped->body);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(page->Get("uffdpager_published_working_set_replays_total"), 1);
  EXPECT_EQ(page->Get("uffdpager_object_store_bytes_total"), static_cast<double>(Stat("object_store_bytes")));
  EXPECT_EQ(page->types["uffdpager_object_fetch_seconds"], "histogram");
  EXPECT_GE(page->Get("uffdpager_object_fetch_seconds_count"), 2) << "the working set's GET and a chunk's at least";
}

TEST_F(PagerObjectSessionTest, APublishedWorkingSetOfOtherBytesIsNeverReplayed) {
  constexpr uint64_t kSize = 16 * kMiB;
  const std::vector<uint64_t> working_set = SpreadPages(kSize / 4096, 22);
  // Garbage where the working set would be: refused, and the restore reads
  // the object itself, byte-exact.
  std::string snap = PutSnapshot("other", kSize, 22);
  std::vector<uint8_t> garbage(2 * kMiB);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 131 + 7);
  PutBytes("other.workingset", garbage);
  {
    TempDir host;
    auto pager = StartPagerProcess({}, {}, host.path());
    ASSERT_TRUE(pager);
    auto created = CreateUrlSession("g", Url("other"), false, pager.get());
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    ASSERT_TRUE(WaitFor([&] {
      auto s = pager->client().Stats();
      return s.ok() && s->value("published_working_set_refusals", uint64_t{0}) == 1;
    })) << pager->Log();
    TouchAllPages((*vm)->memory, 2);
    EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, snap));
    EXPECT_EQ(Session(*pager, "g")["state"], "serving");
    EXPECT_EQ(Session(*pager, "g")["counters"]["published_working_set_replays"], 0);
  }

  // A good working set of the object's earlier bytes: the object is
  // overwritten (a new ETag), so the working set is another snapshot's.
  ASSERT_TRUE(store_->Delete(ObjectUrl{bucket_, "other.workingset"}).ok());
  TempDir host_a;
  RecordAndPublish(host_a.path(), "other", working_set, kSize);
  std::string newer = PutSnapshot("other", kSize, 23);
  StartPagerWithStore();
  auto created = CreateUrlSession("n", Url("other"));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, {kSize});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return Stat("published_working_set_refusals") == 1; })) << pager_->Log();
  TouchAllPages((*vm)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, newer));
  EXPECT_EQ(Session("n")["counters"]["published_working_set_replays"], 0);
  EXPECT_NE(pager_->Log().find("copies other bytes"), std::string::npos) << pager_->Log();
}

}  // namespace
}  // namespace uffdpager::testing::object_session_test
