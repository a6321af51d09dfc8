#include "common/object_url.h"

#include <gtest/gtest.h>

namespace uffdpager {
namespace {

TEST(ObjectUrlTest, ParsesBucketAndKey) {
  Result<ObjectUrl> u = ParseObjectUrl("s3://snapshots-1/vm/a b/memory.bin");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->bucket, "snapshots-1");
  EXPECT_EQ(u->key, "vm/a b/memory.bin");
  EXPECT_EQ(u->ToString(), "s3://snapshots-1/vm/a b/memory.bin");
}

TEST(ObjectUrlTest, RequestPathEncodesTheKeyButItsSlashes) {
  ObjectUrl u{"bkt", "a b/c+d%/é~x"};
  EXPECT_EQ(u.RequestPath(), "/bkt/a%20b/c%2Bd%25/%C3%A9~x");
}

TEST(ObjectUrlTest, RefusesOtherSchemesAndMissingKeys) {
  for (const char* bad : {"http://bkt/key", "S3://bkt/key", "s3:/bkt/key", "bkt/key", "s3://bkt", "s3://bkt/", ""}) {
    Result<ObjectUrl> u = ParseObjectUrl(bad);
    EXPECT_EQ(u.status().code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseObjectUrl("s3://bkt").status().message().find("names no key"), std::string::npos);
  EXPECT_NE(ParseObjectUrl("gs://bkt/k").status().message().find("must start with s3://"), std::string::npos);
}

TEST(ObjectUrlTest, RefusesBadBucketNamesSayingWhy) {
  struct Case {
    const char* url;
    const char* why;
  } cases[] = {
      {"s3://ab/k", "3 to 63"},
      {"s3://Upper/k", "lowercase"},
      {"s3://under_score/k", "lowercase"},
      {"s3://-dash/k", "start and end"},
      {"s3://dash-/k", "start and end"},
      {"s3://a..b/k", "two '.'"},
      {"s3://192.168.1.1/k", "IP address"},
  };
  for (const Case& c : cases) {
    Result<ObjectUrl> u = ParseObjectUrl(c.url);
    ASSERT_EQ(u.status().code(), ErrorCode::kInvalidArgument) << c.url;
    EXPECT_NE(u.status().message().find(c.why), std::string::npos) << c.url << ": " << u.status().ToString();
  }
  EXPECT_TRUE(ParseObjectUrl("s3://" + std::string(63, 'a') + "/k").ok());
  EXPECT_FALSE(ParseObjectUrl("s3://" + std::string(64, 'a') + "/k").ok());
}

TEST(ObjectUrlTest, RefusesControlCharactersAndOverlongKeys) {
  EXPECT_EQ(ParseObjectUrl(std::string("s3://bkt/a\nb")).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ParseObjectUrl(std::string("s3://bkt/a\x7f")).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(ParseObjectUrl("s3://bkt/" + std::string(1024, 'k')).ok());
  EXPECT_EQ(ParseObjectUrl("s3://bkt/" + std::string(1025, 'k')).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace uffdpager
