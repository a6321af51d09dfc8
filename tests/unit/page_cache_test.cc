#include "pager/storage/page_cache.h"

#include "pager/storage/page_allocator.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace uffdpager {
namespace {

PageFiller FillWith(uint8_t value, std::atomic<int>* loads) {
  return [value, loads](CachedPage& page) {
    loads->fetch_add(1);
    std::memset(page.mutable_data(), value, 4096);
    return Status::Ok();
  };
}

TEST(PageCacheTest, ConcurrentMissesOnOnePageLoadItOnce) {
  PageCache cache(1 << 20, 1);
  std::atomic<int> loads{0};
  std::atomic<int> wrong{0};
  PageFiller slow = [&](CachedPage& page) {
    loads.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::memset(page.mutable_data(), 7, 4096);
    return Status::Ok();
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto page = cache.GetOrLoad({1, 0, 4096}, slow);
      if (!page.ok() || (*page)->data()[4095] != 7) wrong.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(cache.Counters().misses, 1u);
  EXPECT_EQ(cache.Counters().hits, 7u);
}

TEST(PageCacheTest, StaysWithinItsBoundAndKeepsPagesThatManyRestoresHit) {
  // Room for 8 pages. Pages 0-3 are hit by "other restores"; then a stream of
  // pages read once passes through. The hot pages must survive the stream.
  PageCache cache(8 * 4096, 1);
  std::atomic<int> loads{0};
  for (uint64_t p = 0; p < 4; ++p) {
    for (int hit = 0; hit < 3; ++hit) ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, FillWith(1, &loads)).ok());
  }
  for (uint64_t p = 100; p < 140; ++p) ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, FillWith(2, &loads)).ok());
  auto c = cache.Counters();
  EXPECT_LE(c.bytes, 8u * 4096);
  EXPECT_GT(c.evictions, 0u);
  int before = loads.load();
  for (uint64_t p = 0; p < 4; ++p) ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, FillWith(1, &loads)).ok());
  EXPECT_EQ(loads.load(), before) << "a hot page was evicted by pages read once";
}

TEST(PageCacheTest, APageInUseIsNeverFreedUnderItsReader) {
  PageCache cache(2 * 4096, 1);
  std::atomic<int> loads{0};
  auto held = cache.GetOrLoad({1, 0, 4096}, FillWith(9, &loads));
  ASSERT_TRUE(held.ok());
  for (uint64_t p = 1; p < 20; ++p) ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, FillWith(3, &loads)).ok());
  // Still readable and intact although the cache churned.
  EXPECT_EQ((*held)->data()[0], 9);
  EXPECT_EQ((*held)->data()[4095], 9);
  EXPECT_LE(cache.Counters().bytes, 2u * 4096);
}

TEST(PageCacheTest, NamespacesKeepFilesApart) {
  PageCache cache(1 << 20, 4);
  uint64_t a = cache.InternNamespace(CacheKey("key", "file-a"));
  uint64_t b = cache.InternNamespace(CacheKey("key", "file-b"));
  EXPECT_NE(a, b);
  EXPECT_EQ(a, cache.InternNamespace(CacheKey("key", "file-a")));
  std::atomic<int> loads{0};
  auto pa = cache.GetOrLoad({a, 0, 4096}, FillWith(0xa, &loads));
  auto pb = cache.GetOrLoad({b, 0, 4096}, FillWith(0xb, &loads));
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_EQ((*pa)->data()[0], 0xa);
  EXPECT_EQ((*pb)->data()[0], 0xb);
}

TEST(PageCacheTest, AFailedLoadIsReportedToEveryWaiterAndNotCached) {
  PageCache cache(1 << 20, 1);
  auto failing = [](CachedPage&) { return Status::FromErrno(EIO, "read"); };
  auto r = cache.GetOrLoad({1, 0, 4096}, failing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().error_number(), EIO);
  EXPECT_EQ(cache.Counters().items, 0u);
  std::atomic<int> loads{0};
  EXPECT_TRUE(cache.GetOrLoad({1, 0, 4096}, FillWith(1, &loads)).ok());
  EXPECT_EQ(loads.load(), 1);
}

TEST(PageAllocatorTest, RecyclesSmallPagesInsteadOfGrowing) {
  PageAllocator allocator;
  std::vector<uint8_t*> pages;
  for (int i = 0; i < 600; ++i) {  // more than one 2 MiB chunk's worth
    uint8_t* p = allocator.Allocate(4096);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 4096, 0u);
    std::memset(p, i & 0xff, 4096);
    pages.push_back(p);
  }
  EXPECT_EQ(allocator.chunk_count(), 2u);
  for (int round = 0; round < 10; ++round) {
    for (uint8_t* p : pages) allocator.Free(p, 4096);
    for (auto& p : pages) p = allocator.Allocate(4096);
  }
  EXPECT_EQ(allocator.chunk_count(), 2u) << "freed pages were not reused";
  uint8_t* huge = allocator.Allocate(2 << 20);
  ASSERT_NE(huge, nullptr);
  huge[(2 << 20) - 1] = 1;
  allocator.Free(huge, 2 << 20);
  for (uint8_t* p : pages) allocator.Free(p, 4096);
}

TEST(PageCacheTest, ZeroPagesKeepNoBufferYetStayBounded) {
  PageCache cache(64 * 1024, 1);
  std::atomic<int> loads{0};
  auto zero = cache.GetOrLoad({1, 0, 4096}, [&](CachedPage& p) {
    loads.fetch_add(1);
    std::memset(p.mutable_data(), 0, 4096);
    return Status::Ok();
  });
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE((*zero)->is_zero());
  EXPECT_EQ((*zero)->data(), nullptr);
  auto hole = cache.GetOrLoad({1, 4096, 4096}, [](CachedPage&) { return Status::Ok(); });  // never touched
  ASSERT_TRUE(hole.ok());
  EXPECT_TRUE((*hole)->is_zero());
  EXPECT_EQ(cache.Counters().zero_items, 2u);
  EXPECT_LT(cache.Counters().bytes, 4096u) << "zero pages must not cost a page of memory";
  // Thousands of zero pages still respect the bound (their entries cost something).
  for (uint64_t p = 2; p < 5000; ++p)
    ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, [](CachedPage&) { return Status::Ok(); }).ok());
  EXPECT_LE(cache.Counters().bytes, 64u * 1024);
  EXPECT_EQ(loads.load(), 1);
}

}  // namespace
}  // namespace uffdpager
