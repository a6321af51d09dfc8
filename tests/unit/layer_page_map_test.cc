// LayerPageMap: the page map beside an object layer, encoded and read back,
// and every malformed one refused naming what is wrong.
#include "common/layer_page_map.h"

#include <gtest/gtest.h>

#include <string>

namespace uffdpager {
namespace {

LayerPageMap Sample() {
  LayerPageMap map;
  map.layer_etag = "\"0123abcd\"";
  map.layer_size = 1 << 20;
  map.extents = {{0, 4096}, {8192, 16384}, {(1 << 20) - 4096, 1 << 20}};
  return map;
}

TEST(LayerPageMapTest, SurvivesTheRoundTrip) {
  auto back = LayerPageMap::Parse(Sample().Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->layer_etag, Sample().layer_etag);
  EXPECT_EQ(back->layer_size, Sample().layer_size);
  EXPECT_EQ(back->extents, Sample().extents);
  // A layer with no data at all is a valid (empty) map.
  LayerPageMap empty = Sample();
  empty.extents.clear();
  auto none = LayerPageMap::Parse(empty.Encode());
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->extents.empty());
}

TEST(LayerPageMapTest, LivesBesideItsLayer) {
  EXPECT_EQ(LayerPageMap::LocationOf(ObjectUrl{"snaps", "vm/1/memory"}).ToString(), "s3://snaps/vm/1/memory.pagemap");
}

TEST(LayerPageMapTest, MalformedMapsAreRefusedSayingWhy) {
  auto refused = [](const std::string& text, const std::string& why) {
    auto r = LayerPageMap::Parse(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().ToString();
  };
  refused("{not json", "not JSON");
  refused(R"({"format":"other","version":1,"layer_etag":"e","layer_size":8192,"extents":[]})",
          "\"format\" is \"other\"");
  refused(R"({"format":"uffdpager-layer-page-map","version":2,"layer_etag":"e","layer_size":8192,"extents":[]})",
          "version 2");
  refused(R"({"format":"uffdpager-layer-page-map","version":1,"layer_size":8192,"extents":[]})", "layer_etag");
  refused(R"({"format":"uffdpager-layer-page-map","version":1,"layer_etag":"","layer_size":8192,"extents":[]})",
          "\"layer_etag\" is empty");
  const std::string head = R"({"format":"uffdpager-layer-page-map","version":1,"layer_etag":"e","layer_size":8192,)";
  refused(head + R"("extents":[[0]]})", "extent 0 is not a [start, end] pair");
  refused(head + R"("extents":[[4096,4096]]})", "extent 0 [4096, 4096)");        // empty
  refused(head + R"("extents":[[0,12288]]})", "past the layer's 8192 bytes");    // past the end
  refused(head + R"("extents":[[4096,8192],[0,4096]]})", "extent 1 [0, 4096)");  // unsorted
  refused(head + R"("extents":[[0,8192],[4096,8192]]})", "overlaps");            // overlapping
  refused(head + R"("extents":[[0,-1]]})", "extents[0][1]");                     // not a byte offset
}

}  // namespace
}  // namespace uffdpager
