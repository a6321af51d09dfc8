// URL path segments: whatever bytes a client puts in one segment arrive as
// that one segment; nothing is decoded twice, nothing becomes a separator.
#include "common/url_path.h"

#include <vector>

#include <gtest/gtest.h>

namespace uffdpager {
namespace url_path_test {
namespace {

TEST(UrlPathTest, EveryByteSurvivesEscapingAsOneSegment) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  auto escaped = EscapePathSegment(all);
  ASSERT_TRUE(escaped.ok()) << escaped.status().ToString();
  for (char c : *escaped) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || std::string("-._~%").find(c) != std::string::npos)
        << "byte " << static_cast<int>(static_cast<unsigned char>(c)) << " left unescaped";
  }
  auto segments = DecodePathSegments("/sessions/" + *escaped + "/close");
  ASSERT_TRUE(segments.ok()) << segments.status().ToString();
  ASSERT_EQ(segments->size(), 3u);
  EXPECT_EQ((*segments)[1], all);
}

TEST(UrlPathTest, SeparatorsAndEscapesInAnIdStayInIt) {
  for (const std::string& id :
       std::vector<std::string>{"../drain?", "a/b", "x?y#z", "100%", "%2F", "good\n", std::string("nul\0byte", 8)}) {
    auto escaped = EscapePathSegment(id);
    ASSERT_TRUE(escaped.ok()) << id;
    EXPECT_EQ(escaped->find('/'), std::string::npos) << id;
    EXPECT_EQ(escaped->find('?'), std::string::npos) << id;
    auto segments = DecodePathSegments("/sessions/" + *escaped);
    ASSERT_TRUE(segments.ok()) << id;
    ASSERT_EQ(segments->size(), 2u) << id;
    EXPECT_EQ((*segments)[1], id);
  }
  EXPECT_EQ(*EscapePathSegment("../drain?"), "..%2Fdrain%3F");
}

TEST(UrlPathTest, SegmentsThatNoEscapingKeepAreRefused) {
  for (const char* id : {"", ".", ".."}) {
    auto escaped = EscapePathSegment(id);
    EXPECT_FALSE(escaped.ok()) << '"' << id << '"';
    EXPECT_EQ(escaped.status().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_TRUE(EscapePathSegment("...").ok());
}

TEST(UrlPathTest, DecodingSplitsFirstAndDropsEmptySegments) {
  auto segments = DecodePathSegments("//sessions//a%2Fb/%63lose/");
  ASSERT_TRUE(segments.ok());
  EXPECT_EQ(*segments, (std::vector<std::string>{"sessions", "a/b", "close"}));
  // Decoded once: "%252F" is the three characters "%2F", not a '/'.
  EXPECT_EQ((*DecodePathSegments("/x%252Fy"))[0], "x%2Fy");
  EXPECT_TRUE(DecodePathSegments("")->empty());
}

TEST(UrlPathTest, MalformedEscapesAreRefused) {
  for (const char* path : {"/a%", "/a%2", "/a%zz", "/a%2/b", "/%G0"}) {
    auto segments = DecodePathSegments(path);
    EXPECT_FALSE(segments.ok()) << path;
    EXPECT_NE(segments.status().message().find("two hex digits"), std::string::npos) << path;
  }
}

}  // namespace
}  // namespace url_path_test
}  // namespace uffdpager
