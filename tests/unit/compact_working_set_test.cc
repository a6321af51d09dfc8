// CompactWorkingSet: the binding that lets a file made on one host serve
// another (the identity of the bytes, not the host's name for them) and
// what still refuses it; PublishedWorkingSetUrl: which chains share theirs.
#include "pager/storage/compact_working_set.h"

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pager/storage/backing_chain.h"
#include "pager/storage/backing_file.h"
#include "pager/storage/published_working_set.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace compact_working_set_test {
namespace {

constexpr uint64_t kPage = 4096;

class CompactWorkingSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = dir_.path() + "/mem";
    std::string bytes(64 * kPage, '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 / kPage + i);
    std::ofstream(memory_, std::ios::binary) << bytes;
    auto file = BackingFile::Open(memory_);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    chain_ = BackingChain::Single(*file);
    key_ = CacheKey("a host's name", chain_->IdentityText());
  }

  testing::TempDir dir_;
  std::string memory_;
  std::shared_ptr<const BackingChain> chain_;
  CacheKey key_;
  // First touch: out of order, with a repeat.
  const std::vector<uint64_t> record_ = {5 * kPage, 1 * kPage, 9 * kPage, 1 * kPage, 2 * kPage};
};

TEST_F(CompactWorkingSetTest, AFileServesAnyNameForTheSameBytesAndNoOtherBytes) {
  const std::string path = dir_.path() + "/ws.pages";
  uint64_t bytes = 0;
  ASSERT_TRUE(
      CompactWorkingSet::Write(path, key_, kPage, ReplayOrder(record_, kReplayWindowPages), *chain_, &bytes).ok());
  const uint64_t hash = CompactWorkingSet::RecordHash(kPage, record_);

  auto other_name = CompactWorkingSet::Open(path, CacheKey("another host's name", key_.identity()), hash);
  ASSERT_TRUE(other_name.ok()) << other_name.status().ToString();
  EXPECT_EQ(other_name->offsets(), (std::vector<uint64_t>{1 * kPage, 2 * kPage, 5 * kPage, 9 * kPage}));

  auto other_bytes = CompactWorkingSet::Open(path, CacheKey(key_.name(), key_.identity() + " v2"), hash);
  ASSERT_FALSE(other_bytes.ok());
  EXPECT_EQ(other_bytes.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(other_bytes.status().message().find("other bytes"), std::string::npos) << other_bytes.status().ToString();

  auto other_record = CompactWorkingSet::Open(path, key_, CompactWorkingSet::RecordHash(kPage, {kPage}));
  ASSERT_FALSE(other_record.ok());
  EXPECT_EQ(other_record.status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(CompactWorkingSetTest, ItsOwnPageListSavedAsTheRecordMatchesIt) {
  // What a fetched published file becomes: its page list is this host's
  // record, and that record must select the same file again.
  const std::string path = dir_.path() + "/ws.pages";
  uint64_t bytes = 0;
  ASSERT_TRUE(
      CompactWorkingSet::Write(path, key_, kPage, ReplayOrder(record_, kReplayWindowPages), *chain_, &bytes).ok());
  auto any = CompactWorkingSet::Open(path, key_, std::nullopt, CompactWorkingSet::Reads::kBuffered);
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  EXPECT_EQ(CompactWorkingSet::RecordHash(kPage, any->offsets()), CompactWorkingSet::RecordHash(kPage, record_));
  EXPECT_TRUE(CompactWorkingSet::Open(path, key_, CompactWorkingSet::RecordHash(kPage, any->offsets())).ok());
}

TEST_F(CompactWorkingSetTest, ReplayOrderKeepsTheFirstTouchOfEachPageAndSortsEachWindow) {
  // Page 0 repeated too: the order's set keeps it apart from its empty slots.
  const std::vector<uint64_t> first_touch = {3 * kPage, 0, 1 * kPage, 0, 3 * kPage, 2 * kPage, 7 * kPage};
  EXPECT_EQ(ReplayOrder(first_touch, 2), (std::vector<uint64_t>{0, 3 * kPage, 1 * kPage, 2 * kPage, 7 * kPage}));
  EXPECT_EQ(ReplayOrder(first_touch, kReplayWindowPages),
            (std::vector<uint64_t>{0, 1 * kPage, 2 * kPage, 3 * kPage, 7 * kPage}));
  // Many pages, with a repeat of each: every page once.
  std::vector<uint64_t> many;
  for (uint64_t i = 0; i < 3 * kReplayWindowPages; ++i) many.push_back((i * 7919 % 100003) * kPage);
  many.insert(many.end(), many.begin(), many.end());
  EXPECT_EQ(ReplayOrder(many, kReplayWindowPages).size(), 3 * kReplayWindowPages);
}

TEST_F(CompactWorkingSetTest, AFileWhosePageListIsNotAReplayOrderIsRefused) {
  // Made elsewhere (its header and hashes are consistent), but its list
  // repeats a page or leaves a window unsorted: a replay would install a page
  // twice, or the list is no record's.
  for (const std::vector<uint64_t>& list :
       {std::vector<uint64_t>{2 * kPage, 1 * kPage}, std::vector<uint64_t>{1 * kPage, 1 * kPage}}) {
    const std::string path = dir_.path() + "/hostile.pages";
    uint64_t bytes = 0;
    ASSERT_TRUE(CompactWorkingSet::Write(path, key_, kPage, list, *chain_, &bytes).ok());
    auto opened = CompactWorkingSet::Open(path, key_, std::nullopt, CompactWorkingSet::Reads::kBuffered);
    ASSERT_FALSE(opened.ok()) << "list of " << list.size() << " pages starting at " << list[0];
    EXPECT_EQ(opened.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(opened.status().message().find("not a replay order"), std::string::npos) << opened.status().ToString();
  }
}

TEST_F(CompactWorkingSetTest, OnlyAChainOfObjectsHasAPublishedWorkingSet) {
  EXPECT_FALSE(PublishedWorkingSetUrl(*chain_).has_value()) << "a local file's identity is this host's alone";
}

}  // namespace
}  // namespace compact_working_set_test
}  // namespace uffdpager
