// ObjectChunkStore in process, with a fetch of its own instead of a store:
// single flight across callers, reuse of recorded chunks after their XXH3 is
// checked, and a changed object failing every later read.
#include "pager/storage/object_chunk_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace {

constexpr uint64_t kChunk = ObjectChunkStore::kChunkBytes;

// The object's byte at `offset`.
std::byte ByteAt(uint64_t offset) { return static_cast<std::byte>((offset * 131 + offset / 4096) & 0xff); }

// Fills each request as the store would, counting chunks fetched; slow
// enough that concurrent callers overlap.
struct FakeStore {
  std::atomic<int> fetched{0};
  std::atomic<int> calls{0};  // rounds of parallel fetches
  std::atomic<bool> changed{false};
  std::atomic<int64_t> failing_offset{-1};  // a chunk whose fetch fails (a 503)

  ChunkFetch Fetch() {
    return [this](std::span<const RangeRequest> requests) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      calls.fetch_add(1);
      std::vector<Status> out;
      for (const auto& r : requests) {
        if (changed.load()) {
          out.push_back(Status::Conflict("HTTP 412 PreconditionFailed"));
          continue;
        }
        if (static_cast<int64_t>(r.offset) == failing_offset.load()) {
          out.push_back(Status::Unavailable("HTTP 503 SlowDown"));
          continue;
        }
        fetched.fetch_add(1);
        for (size_t i = 0; i < r.length; ++i) r.buffer[i] = ByteAt(r.offset + i);
        out.push_back(Status::Ok());
      }
      return out;
    };
  }
};

class ObjectChunkStoreTest : public ::testing::Test {
 protected:
  std::shared_ptr<ObjectChunkStore> Open(FakeStore* store) {
    auto opened = ObjectChunkStore::Open(object_, dir_ / "obj", store->Fetch(), &counters_);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? *opened : nullptr;
  }
  bool FileMatches(uint64_t offset, uint64_t length) {
    UniqueFd fd(::open((dir_ / "obj.mem").c_str(), O_RDONLY | O_CLOEXEC));
    std::vector<std::byte> bytes(length);
    if (::pread(fd.get(), bytes.data(), length, static_cast<off_t>(offset)) != static_cast<ssize_t>(length)) {
      return false;
    }
    for (uint64_t i = 0; i < length; ++i) {
      if (bytes[i] != ByteAt(offset + i)) return false;
    }
    return true;
  }

  testing::TempDir dir_;
  ObjectVersion object_{ObjectUrl{"bucket", "key"}, "\"etag-1\"", 5 * kChunk + 1234};
  ObjectTierCounters counters_;
};

TEST_F(ObjectChunkStoreTest, ConcurrentCallersFetchEachChunkOnce) {
  FakeStore store;
  auto chunks = Open(&store);
  ASSERT_NE(chunks, nullptr);
  std::vector<std::thread> threads;
  std::vector<Status> outcomes(8);
  for (int t = 0; t < 8; ++t) {
    // Overlapping ranges, starting in different chunks.
    threads.emplace_back([&, t] { outcomes[t] = chunks->EnsureRange((t % 3) * kChunk + 100, 3 * kChunk - 200); });
  }
  for (auto& th : threads) th.join();
  for (const auto& st : outcomes) EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(store.fetched.load(), 5);  // chunks 0..4, each once
  EXPECT_EQ(counters_.chunk_misses.load(), 5u);
  EXPECT_TRUE(FileMatches(0, 5 * kChunk));
  // The short last chunk.
  ASSERT_TRUE(chunks->EnsureRange(object_.size - 10, 10).ok());
  EXPECT_EQ(store.fetched.load(), 6);
  EXPECT_TRUE(FileMatches(5 * kChunk, 1234));
}

TEST_F(ObjectChunkStoreTest, RecordedChunksAreReusedAndDamagedOnesFetchedAgain) {
  {
    FakeStore store;
    auto chunks = Open(&store);
    ASSERT_TRUE(chunks->EnsureRange(0, 3 * kChunk).ok());
  }
  // Damage chunk 1 on disk.
  {
    UniqueFd fd(::open((dir_ / "obj.mem").c_str(), O_WRONLY | O_CLOEXEC));
    const char junk[4] = {1, 2, 3, 4};
    ASSERT_EQ(::pwrite(fd.get(), junk, sizeof(junk), kChunk + 7), 4);
  }
  FakeStore store;
  auto chunks = Open(&store);
  ASSERT_TRUE(chunks->EnsureRange(0, 3 * kChunk).ok());
  EXPECT_EQ(store.fetched.load(), 1);  // only the damaged one
  EXPECT_EQ(counters_.chunks_reused.load(), 2u);
  EXPECT_EQ(counters_.chunks_damaged.load(), 1u);
  EXPECT_TRUE(FileMatches(0, 3 * kChunk));
}

TEST_F(ObjectChunkStoreTest, AnotherVersionStartsAfresh) {
  {
    FakeStore store;
    ASSERT_TRUE(Open(&store)->EnsureRange(0, kChunk).ok());
  }
  object_.etag = "\"etag-2\"";
  FakeStore store;
  ASSERT_TRUE(Open(&store)->EnsureRange(0, kChunk).ok());
  EXPECT_EQ(store.fetched.load(), 1);
  EXPECT_EQ(counters_.chunks_reused.load(), 0u);
}

TEST_F(ObjectChunkStoreTest, AChangedObjectFailsEveryLaterRead) {
  FakeStore store;
  auto chunks = Open(&store);
  ASSERT_TRUE(chunks->EnsureRange(0, kChunk).ok());
  store.changed = true;
  Status failed = chunks->EnsureRange(2 * kChunk, 10);
  EXPECT_EQ(failed.code(), ErrorCode::kConflict);
  EXPECT_NE(failed.message().find("s3://bucket/key"), std::string::npos) << failed.ToString();
  // Even a chunk that is present: the session must not go on.
  EXPECT_EQ(chunks->EnsureRange(0, 10).code(), ErrorCode::kConflict);
}

// A fetch brings the chunks after the demanded one along, in the same round,
// up to the caller's readahead end and its readahead; never a chunk that
// is present, and a failed one only leaves that chunk for later.
TEST_F(ObjectChunkStoreTest, AFetchReadsAheadWithinTheCallersBound) {
  static_assert(ObjectChunkStore::kDefaultReadaheadChunks >= 3, "the test reads 3 chunks ahead");
  FakeStore store;
  auto chunks = Open(&store);
  ASSERT_NE(chunks, nullptr);
  // No readahead end: the demanded chunk alone.
  ASSERT_TRUE(chunks->EnsureRange(kChunk + 10, 10).ok());
  EXPECT_EQ(store.fetched.load(), 1);
  // Up to the end of chunk 4: chunk 0 demanded, 2..4 ahead (1 is present).
  store.failing_offset = 3 * kChunk;
  ASSERT_TRUE(chunks->EnsureRange(100, 10, 5 * kChunk).ok()) << "a failed readahead is not the caller's error";
  EXPECT_EQ(store.calls.load(), 2);
  EXPECT_EQ(store.fetched.load(), 1 + 3);  // 0, 2 and 4; 3 failed
  EXPECT_TRUE(FileMatches(0, kChunk));
  EXPECT_TRUE(FileMatches(2 * kChunk, kChunk));
  EXPECT_TRUE(FileMatches(4 * kChunk, kChunk));
  // Present chunks need no trip, and nothing is read ahead without one.
  ASSERT_TRUE(chunks->EnsureRange(4 * kChunk, 10, object_.size).ok());
  EXPECT_EQ(store.calls.load(), 2);
  // The chunk whose readahead failed is fetched when it is needed.
  store.failing_offset = -1;
  ASSERT_TRUE(chunks->EnsureRange(3 * kChunk, 10).ok());
  EXPECT_TRUE(FileMatches(3 * kChunk, kChunk));
  // A demanded chunk that fails is the caller's error.
  store.failing_offset = 5 * kChunk;
  Status failed = chunks->EnsureRange(5 * kChunk, 10, object_.size);
  EXPECT_EQ(failed.code(), ErrorCode::kUnavailable) << failed.ToString();
  EXPECT_NE(failed.message().find("fetch chunk 5"), std::string::npos) << failed.ToString();
}

TEST_F(ObjectChunkStoreTest, ReadaheadIsBoundedByTheStoresSetting) {
  FakeStore store;
  for (uint64_t readahead : {uint64_t{0}, uint64_t{2}}) {
    SCOPED_TRACE(readahead);
    testing::TempDir dir;
    auto chunks = ObjectChunkStore::Open(object_, dir / "obj", store.Fetch(), &counters_, {}, readahead);
    ASSERT_TRUE(chunks.ok()) << chunks.status().ToString();
    const int before = store.fetched.load();
    ASSERT_TRUE((*chunks)->EnsureRange(0, 10, object_.size).ok());
    EXPECT_EQ(store.fetched.load() - before, static_cast<int>(1 + readahead));
  }
}

}  // namespace
}  // namespace uffdpager
