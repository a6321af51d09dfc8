// Sessions over a chain of layers (backing_layers), through a real pager:
// every page comes from the topmost layer that holds it, byte for byte, at
// every depth the pager takes; a layer that chains share is read from disk
// once for all of them; a balloon's removal reads as zeros whichever layer
// held the range; the chain survives in the session's description.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "support/pager_fixture.h"
#include "support/test_layers.h"

namespace uffdpager::testing::layers_test {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
const std::vector<uint64_t> kRegions = {8 * kMiB, 4 * kMiB};
constexpr uint64_t kGuestBytes = 12 * kMiB;
constexpr uint64_t kPages = kGuestBytes / kLayerPage;

class PagerLayersTest : public PagerFixture {
 protected:
  void SetUp() override {
    PagerFixture::SetUp();
    if (IsSkipped()) return;
    if (!FileSystemReportsHoles(dir_.path())) GTEST_SKIP() << dir_.path() << " does not report holes (SEEK_DATA)";
    StartPager();
  }

  // A base snapshot; image_ becomes what it reads as.
  std::string Base(const std::string& name, uint64_t seed) {
    std::string path = MakeSnapshot(name, kGuestBytes, seed);
    image_ = ReadFileBytes(path);
    return path;
  }

  // A layer holding `count` pages picked at random (from `seed`), some in
  // runs and some alone, written on top of image_.
  std::string Layer(const std::string& name, uint64_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint64_t> offsets;
    while (offsets.size() < count) {
      uint64_t first = rng() % kPages;
      uint64_t run = 1 + rng() % 16;
      for (uint64_t p = first; p < std::min(first + run, kPages) && offsets.size() < count; ++p) {
        offsets.push_back(p * kLayerPage);
      }
    }
    std::sort(offsets.begin(), offsets.end());
    offsets.erase(std::unique(offsets.begin(), offsets.end()), offsets.end());
    std::string path = dir_ / name;
    EXPECT_TRUE(WriteTestLayer(path, kGuestBytes, offsets, seed, &image_));
    layer_offsets_[path] = std::set<uint64_t>(offsets.begin(), offsets.end());
    return path;
  }

  // image_ as a file, for MatchesSnapshotFile.
  std::string Expected(const std::string& name) {
    std::string path = dir_ / name;
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(image_.data()), static_cast<std::streamsize>(image_.size()));
    return path;
  }

  Result<CreatedSession> CreateChain(const std::string& id, const std::vector<std::string>& layers) {
    CreateSessionRequest req = SessionRequest(id);
    req.backing_layers = layers;
    return pager_->client().CreateSession(req);
  }

  std::vector<uint8_t> image_;
  std::map<std::string, std::set<uint64_t>> layer_offsets_;  // the pages each layer holds
};

class PagerChainDepthTest : public PagerLayersTest, public ::testing::WithParamInterface<int> {};

TEST_P(PagerChainDepthTest, EveryPageComesFromTheTopmostLayerThatHoldsIt) {
  const int depth = GetParam();
  std::vector<std::string> layers = {Base("base.mem", 40)};
  for (int i = 1; i < depth; ++i) layers.push_back(Layer("layer" + std::to_string(i), 300, 40 + i));
  const std::string expected = Expected("expected.mem");
  auto created = CreateChain("c", layers);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  TouchAllPages((*vm)->memory, 3);
  EXPECT_TRUE(MatchesSnapshotFile((*vm)->memory, expected));

  nlohmann::json s = Session("c");
  EXPECT_EQ(s["state"], "serving");
  EXPECT_EQ(s["backing_layers"], nlohmann::json(layers));
  EXPECT_EQ(s["cache_key"], layers.back()) << "a chain's default cache key is its top layer";
  const auto& c = s["counters"];
  EXPECT_EQ(c["unservable_faults"], 0);
  EXPECT_EQ(c["pages_copied"].get<uint64_t>() + c["zero_pages"].get<uint64_t>(), kPages);
  EXPECT_EQ(c["backing_bytes_read"].get<uint64_t>(), kGuestBytes) << "each page is read once, from one layer";
}

INSTANTIATE_TEST_SUITE_P(Depths, PagerChainDepthTest, ::testing::Range(1, 9),
                         [](const auto& info) { return "depth_" + std::to_string(info.param); });

TEST_F(PagerLayersTest, TheLayerTwoChainsShareIsReadFromDiskOnce) {
  const std::string base = Base("base.mem", 50);
  const std::vector<uint8_t> base_image = image_;
  const std::string one = Layer("one", 400, 51);
  const std::vector<uint8_t> one_image = image_;
  image_ = base_image;
  const std::string two = Layer("two", 400, 52);
  const std::string expected_two = Expected("expected-two.mem");
  image_ = one_image;
  const std::string expected_one = Expected("expected-one.mem");

  // One chain after the other: the second finds the base's pages the first
  // read in the cache, under the base's own key.
  auto first = CreateChain("one", {base, one});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto vm1 = VmmStandIn::Restore(first->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm1.ok()) << vm1.status().ToString();
  TouchAllPages((*vm1)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm1)->memory, expected_one));
  auto second = CreateChain("two", {base, two});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto vm2 = VmmStandIn::Restore(second->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm2.ok()) << vm2.status().ToString();
  TouchAllPages((*vm2)->memory, 2);
  EXPECT_TRUE(MatchesSnapshotFile((*vm2)->memory, expected_two));

  // What disk gave: each layer's pages once, and the base's pages once,
  // except those both upper layers hold (no chain reads them).
  uint64_t shadowed_by_both = 0;
  for (uint64_t off : layer_offsets_[one]) shadowed_by_both += layer_offsets_[two].count(off);
  EXPECT_EQ(Stat("backing_bytes_read"),
            (kPages - shadowed_by_both + layer_offsets_[one].size() + layer_offsets_[two].size()) * kLayerPage);
  EXPECT_GE(Session("two")["counters"]["cache_hits"].get<uint64_t>(),
            kPages - layer_offsets_[one].size() - layer_offsets_[two].size())
      << "the base's pages the first chain read came from the cache";
}

TEST_F(PagerLayersTest, ABalloonRemovalReadsAsZerosWhicheverLayerHeldTheRange) {
  std::vector<std::string> layers = {Base("base.mem", 60)};
  for (int i = 1; i < 4; ++i) layers.push_back(Layer("layer" + std::to_string(i), 600, 60 + i));
  const std::string expected = Expected("expected.mem");
  auto created = CreateChain("b", layers);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto vm = VmmStandIn::Restore(created->uffd_socket_path, kRegions);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const GuestMemory& mem = (*vm)->memory;
  // Ranges over pages of every layer, some touched before the removal and
  // some not, at both ends of both regions.
  const std::vector<std::pair<uint64_t, uint64_t>> removed = {{0, 256 * kLayerPage},
                                                              {3 * kMiB, 5 * kMiB},
                                                              {8 * kMiB - 128 * kLayerPage, 8 * kMiB},
                                                              {8 * kMiB, 8 * kMiB + 128 * kLayerPage},
                                                              {kGuestBytes - 256 * kLayerPage, kGuestBytes}};
  for (uint64_t off = 0; off < kGuestBytes; off += 3 * kLayerPage) {
    (void)*reinterpret_cast<volatile const uint8_t*>(mem.AtFileOffset(off));
  }
  for (const auto& [s, e] : removed) {
    ASSERT_EQ(::madvise(mem.AtFileOffset(s), e - s, MADV_DONTNEED), 0) << std::strerror(errno);
  }
  // The ranges held pages of more than one layer each.
  for (const auto& [s, e] : removed) {
    std::set<size_t> holders;
    for (uint64_t off = s; off < e; off += kLayerPage) {
      size_t holder = 0;
      for (size_t l = 1; l < layers.size(); ++l) {
        if (layer_offsets_[layers[l]].count(off)) holder = l;
      }
      holders.insert(holder);
    }
    EXPECT_GE(holders.size(), 2u) << "range [" << s << ", " << e << ") should cross layers";
  }
  EXPECT_TRUE(MatchesSnapshotFile(mem, expected, removed));
  auto c = Session("b")["counters"];
  EXPECT_EQ(c["remove_events"].get<uint64_t>(), removed.size());
  EXPECT_EQ(c["unservable_faults"], 0);
}

}  // namespace
}  // namespace uffdpager::testing::layers_test
