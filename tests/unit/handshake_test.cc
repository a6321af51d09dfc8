// The handshake payload: Firecracker's exact bytes for each generation, and
// the parser's acceptance of all of them and refusal of bad ones.
#include "common/uffd_handshake.h"

#include <gtest/gtest.h>

namespace uffdpager {
namespace {

const std::vector<GuestRegionMapping> kTwoRegions = {
    {0x7f0000000000, 0x200000, 0, 4096},
    {0x7f1000000000, 0x400000, 0x200000, 4096},
};

TEST(HandshakeTest, SerializesFirecrackerBytesForEachGeneration) {
  EXPECT_EQ(
      SerializeHandshake({kTwoRegions[0]}, HandshakeDialect::kV1_12),
      R"([{"base_host_virt_addr":139637976727552,"size":2097152,"offset":0,"page_size":4096,"page_size_kib":4096}])");
  EXPECT_EQ(SerializeHandshake({kTwoRegions[0]}, HandshakeDialect::kV1_7),
            R"([{"base_host_virt_addr":139637976727552,"size":2097152,"offset":0,"page_size_kib":4096}])");
  EXPECT_EQ(SerializeHandshake({kTwoRegions[0]}, HandshakeDialect::kV1_1),
            R"([{"base_host_virt_addr":139637976727552,"size":2097152,"offset":0}])");
}

TEST(HandshakeTest, ParsesEveryGenerationBack) {
  for (auto dialect : {HandshakeDialect::kV1_1, HandshakeDialect::kV1_7, HandshakeDialect::kV1_12}) {
    auto parsed = ParseHandshake(SerializeHandshake(kTwoRegions, dialect), {});
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(*parsed, kTwoRegions);
  }
}

TEST(HandshakeTest, HugePageSizeFromPageSizeKibWhichHoldsBytes) {
  auto parsed =
      ParseHandshake(R"([{"base_host_virt_addr":1073741824,"size":4194304,"offset":0,"page_size_kib":2097152}])", {});
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ((*parsed)[0].page_size, 2097152u);
}

TEST(HandshakeTest, AcceptsMappingsObjectAndIgnoresUnknownFields) {
  auto parsed = ParseHandshake(
      R"({"mappings":[{"future":"x","base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"extra":[1]}],"v":2})",
      {});
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ((*parsed)[0].size, 8192u);
}

struct BadCase {
  const char* name;
  std::string payload;
  const char* expected_error;
};

class HandshakeRejectsTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(HandshakeRejectsTest, WithAClearReason) {
  HandshakeLimits limits;
  limits.max_regions = 4;
  limits.max_message_bytes = 4096;
  auto parsed = ParseHandshake(GetParam().payload, limits);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find(GetParam().expected_error), std::string::npos) << parsed.status().message();
}

std::string Regions(int n) {
  std::vector<GuestRegionMapping> r;
  for (int i = 0; i < n; ++i) r.push_back({uint64_t(i + 1) << 30, 4096, uint64_t(i) * 4096, 4096});
  return SerializeHandshake(r, HandshakeDialect::kV1_12);
}

INSTANTIATE_TEST_SUITE_P(
    BadPayloads, HandshakeRejectsTest,
    ::testing::Values(
        BadCase{"NotJson", "[{\"base_host_virt_addr\":", "not valid JSON"},
        BadCase{"NotArray", "42", "must be a JSON array"}, BadCase{"Empty", "[]", "no regions"},
        BadCase{"TooMany", Regions(5), "more than 4"},
        BadCase{"TooLarge", std::string(5000, ' ') + "[]", "exceeds 4096 bytes"},
        BadCase{"PageSize3", R"([{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":3}])", "power of two"},
        BadCase{"MissingSize", R"([{"base_host_virt_addr":4096,"offset":0}])", "missing field \"size\""},
        BadCase{"NegativeOffset", R"([{"base_host_virt_addr":4096,"size":4096,"offset":-1}])", "non-negative"},
        BadCase{"ZeroSize", R"([{"base_host_virt_addr":4096,"size":0,"offset":0}])", "size is zero"},
        BadCase{"Unaligned", R"([{"base_host_virt_addr":4097,"size":4096,"offset":0}])", "multiples of the page size"},
        BadCase{"Overflow", R"([{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0}])", "overflows"},
        BadCase{
            "AddressOverlap",
            R"([{"base_host_virt_addr":4096,"size":8192,"offset":0},{"base_host_virt_addr":8192,"size":4096,"offset":8192}])",
            "overlap in guest addresses"},
        BadCase{
            "FileOverlap",
            R"([{"base_host_virt_addr":4096,"size":8192,"offset":0},{"base_host_virt_addr":65536,"size":4096,"offset":4096}])",
            "overlap in memory file offsets"},
        BadCase{"NoMappingsKey", R"({"regions":[]})", "no \"mappings\""}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace uffdpager
