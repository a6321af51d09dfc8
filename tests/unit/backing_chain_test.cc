// BackingChain in process: which layer each page comes from, what the chain
// reads as, and which chains are refused.
#include "pager/storage/backing_chain.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"
#include "support/test_layers.h"

namespace uffdpager::testing {
namespace {

constexpr uint64_t kSize = 64 * kLayerPage;

class BackingChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FileSystemReportsHoles(dir_.path())) GTEST_SKIP() << dir_.path() << " does not report holes (SEEK_DATA)";
    image_.assign(kSize, 0);
  }

  // Writes layer `name` holding `pages` (page indexes) on top of image_.
  std::shared_ptr<BackingFile> Layer(const std::string& name, const std::vector<uint64_t>& pages, uint64_t seed,
                                     uint64_t size = kSize) {
    std::vector<uint64_t> offsets;
    for (uint64_t p : pages) offsets.push_back(p * kLayerPage);
    std::vector<uint8_t> scratch(size);
    EXPECT_TRUE(WriteTestLayer(dir_ / name, size, offsets, seed, size == kSize ? &image_ : &scratch));
    auto file = BackingFile::Open(dir_ / name);
    EXPECT_TRUE(file.ok()) << file.status().ToString();
    return file.ok() ? *file : nullptr;
  }

  TempDir dir_;
  std::vector<uint8_t> image_;  // what the chain written so far reads as
};

TEST_F(BackingChainTest, EachPageComesFromTheTopmostLayerThatHoldsIt) {
  // The base holds pages 0-39 (40-63 are holes: zeros); layer 1 pages 10-19
  // and 50; layer 2 pages 15-24.
  std::vector<uint64_t> base_pages;
  for (uint64_t p = 0; p < 40; ++p) base_pages.push_back(p);
  std::vector<uint64_t> one = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 50};
  std::vector<uint64_t> two = {15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
  auto base = Layer("base", base_pages, 1);
  auto l1 = Layer("l1", one, 2);
  auto l2 = Layer("l2", two, 3);
  auto chain = BackingChain::Create({base, l1, l2});
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  const BackingChain& c = **chain;
  EXPECT_EQ(c.depth(), 3u);
  EXPECT_EQ(c.size(), kSize);

  auto layer_of = [&](uint64_t page) { return c.PageLayer(page * kLayerPage, kLayerPage); };
  EXPECT_EQ(layer_of(0), 0u);
  EXPECT_EQ(layer_of(10), 1u);
  EXPECT_EQ(layer_of(14), 1u);
  EXPECT_EQ(layer_of(15), 2u);
  EXPECT_EQ(layer_of(24), 2u);
  EXPECT_EQ(layer_of(25), 0u);
  EXPECT_EQ(layer_of(45), 0u) << "a hole of every layer reads as the base's zeros";
  EXPECT_EQ(layer_of(50), 1u);
  // Wider than a page: one layer's data whole, or a mix.
  EXPECT_EQ(c.PageLayer(15 * kLayerPage, 10 * kLayerPage), 2u);
  EXPECT_EQ(c.PageLayer(14 * kLayerPage, 2 * kLayerPage), BackingChain::kMixedLayers);
  EXPECT_EQ(c.PageLayer(50 * kLayerPage, 2 * kLayerPage), BackingChain::kMixedLayers)
      << "an upper layer's data beside its hole is not that layer's alone";
  EXPECT_EQ(c.PageLayer(38 * kLayerPage, 4 * kLayerPage), 0u) << "the base's data beside its holes is the base's";

  // The whole chain reads as the image, in one range and page by page.
  std::vector<uint8_t> read(kSize, 0xee);
  uint64_t bytes = 0;
  ASSERT_TRUE(c.ReadRange(0, read.data(), kSize, &bytes).ok());
  EXPECT_TRUE(read == image_);
  EXPECT_EQ(bytes, (25 + 6 + 10) * kLayerPage) << "each piece is read once, from its layer; holes never";
  for (uint64_t p = 0; p < kSize / kLayerPage; ++p) {
    std::vector<uint8_t> page(kLayerPage, 0xee);
    ASSERT_TRUE(c.ReadRange(p * kLayerPage, page.data(), kLayerPage, &bytes).ok());
    ASSERT_EQ(0, std::memcmp(page.data(), &image_[p * kLayerPage], kLayerPage)) << "page " << p;
  }
}

TEST_F(BackingChainTest, AChainOfOneIsTheFileItself) {
  auto base = Layer("base", {0, 1, 2, 40}, 1);
  auto single = BackingChain::Single(base);
  EXPECT_EQ(single->IdentityText(), base->IdentityText());
  EXPECT_EQ(single->Name(), base->path());
  EXPECT_EQ(single->PageLayer(3 * kLayerPage, 2 * kLayerPage), 0u);
  auto two = BackingChain::Create({base, Layer("top", {5}, 2)});
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_NE((*two)->IdentityText(), base->IdentityText()) << "a chain's bytes are not its base's";
  EXPECT_NE((*two)->Name().find(dir_ / "top"), std::string::npos) << (*two)->Name();
}

TEST_F(BackingChainTest, LayersOfAnotherSizeOrTooManyAreRefusedNamingTheLayer) {
  auto base = Layer("base", {0}, 1);
  auto other = Layer("short", {0}, 2, kSize - kLayerPage);
  auto refused = BackingChain::Create({base, Layer("ok", {1}, 3), other});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("layer 2 (" + dir_ / "short" + ")"), std::string::npos)
      << refused.status().ToString();

  std::vector<std::shared_ptr<BackingFile>> deep(BackingChain::kMaxLayers + 1, base);
  auto too_deep = BackingChain::Create(deep);
  ASSERT_FALSE(too_deep.ok());
  EXPECT_EQ(too_deep.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(too_deep.status().message().find("deeper than the 16"), std::string::npos) << too_deep.status().ToString();
  deep.pop_back();
  EXPECT_TRUE(BackingChain::Create(deep).ok()) << "16 layers are allowed";
}

}  // namespace
}  // namespace uffdpager::testing
