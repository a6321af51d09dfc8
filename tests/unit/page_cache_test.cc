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

PageLoader FillWith(uint8_t value, std::atomic<int>* loads) {
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
  PageLoader slow = [&](CachedPage& page) {
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

namespace uffdpager {
namespace {

// A fake memory file for ReadRun: page p holds the byte (p % 251) + 1, except
// pages listed as zero; every read is logged as [first page, page count).
struct RunFile {
  std::vector<uint64_t> zero_pages;
  std::vector<std::pair<uint64_t, uint64_t>> reads;
  std::atomic<int> pages_read{0};
  uint64_t fail_from_page = UINT64_MAX;

  uint8_t ByteOf(uint64_t page) const {
    for (uint64_t z : zero_pages) {
      if (z == page) return 0;
    }
    return static_cast<uint8_t>(page % 251 + 1);
  }
  RangeReader Reader() {
    return [this](uint64_t offset, uint64_t length, uint8_t* out) {
      for (uint64_t p = offset / 4096; p < (offset + length) / 4096; ++p) {
        if (p >= fail_from_page) return Status::Error(ErrorCode::kIoError, "injected read error");
      }
      reads.emplace_back(offset / 4096, length / 4096);
      pages_read += static_cast<int>(length / 4096);
      for (uint64_t p = offset / 4096; p < (offset + length) / 4096; ++p) {
        std::memset(out + (p * 4096 - offset), ByteOf(p), 4096);
      }
      return Status::Ok();
    };
  }
};

::testing::AssertionResult RunHoldsFile(const RunFile& file, uint64_t first, uint64_t count,
                                        const std::vector<uint8_t>& buf, const std::vector<uint8_t>& zero) {
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t want = file.ByteOf(first + i);
    for (uint64_t b = 0; b < 4096; ++b) {
      if (buf[i * 4096 + b] != want) return ::testing::AssertionFailure() << "page " << first + i << " byte " << b;
    }
    if ((zero[i] != 0) != (want == 0)) return ::testing::AssertionFailure() << "zero flag of page " << first + i;
  }
  return ::testing::AssertionSuccess();
}

TEST(PageCacheRunTest, MissesAreReadOneRangeAtATimeAndHitsComeFromMemory) {
  PageCache cache(1 << 20, 4);
  RunFile file;
  file.zero_pages = {3, 40};
  std::atomic<int> loads{0};
  // Pages 10 and 11 are cached already (with the file's bytes).
  for (uint64_t p : {10, 11}) {
    ASSERT_TRUE(cache.GetOrLoad({1, p * 4096, 4096}, FillWith(file.ByteOf(p), &loads)).ok());
  }
  std::vector<uint8_t> buf(64 * 4096), zero;
  RunReadResult r;
  ASSERT_TRUE(cache.ReadRun({1, 0, 4096, 64}, RunKeep::kShare, file.Reader(), buf.data(), &zero, &r).ok());
  EXPECT_TRUE(RunHoldsFile(file, 0, 64, buf, zero));
  EXPECT_EQ(r.valid_pages, 64u);
  EXPECT_EQ(r.hits, 2u);
  EXPECT_EQ(r.misses, 62u);
  // Two reads: the pages around the two cached ones.
  ASSERT_EQ(file.reads.size(), 2u);
  EXPECT_EQ(file.reads[0], (std::pair<uint64_t, uint64_t>{0, 10}));
  EXPECT_EQ(file.reads[1], (std::pair<uint64_t, uint64_t>{12, 52}));
  // Shared: every page is now cached; a second run reads nothing.
  file.reads.clear();
  ASSERT_TRUE(cache.ReadRun({1, 0, 4096, 64}, RunKeep::kShare, file.Reader(), buf.data(), &zero, &r).ok());
  EXPECT_TRUE(file.reads.empty());
  EXPECT_EQ(r.hits, 64u);
  EXPECT_TRUE(RunHoldsFile(file, 0, 64, buf, zero));
  EXPECT_EQ(cache.Counters().zero_items, 2u);
}

TEST(PageCacheRunTest, WithZeroPagesCopiedZerosAreKeptAndFlaggedAsData) {
  PageCache cache(1 << 20, 4, ZeroPageMode::kCopy);
  RunFile file;
  file.zero_pages = {3, 40};
  std::atomic<int> loads{0};
  auto single = cache.GetOrLoad({1, 100 * 4096, 4096}, FillWith(0, &loads));
  ASSERT_TRUE(single.ok());
  EXPECT_FALSE((*single)->is_zero());
  EXPECT_EQ((*single)->memory_bytes(), 4096u);
  std::vector<uint8_t> buf(64 * 4096), zero;
  RunReadResult r;
  for (int pass = 0; pass < 2; ++pass) {  // read, then from memory
    ASSERT_TRUE(cache.ReadRun({1, 0, 4096, 64}, RunKeep::kShare, file.Reader(), buf.data(), &zero, &r).ok());
    for (uint64_t i = 0; i < 64; ++i) {
      EXPECT_EQ(zero[i], 0) << "page " << i << " flagged zero on pass " << pass;
      EXPECT_EQ(buf[i * 4096 + 4095], file.ByteOf(i)) << "page " << i;
    }
  }
  EXPECT_EQ(r.hits, 64u);
  EXPECT_EQ(file.reads.size(), 1u);
  EXPECT_EQ(cache.Counters().zero_items, 0u);
  EXPECT_GE(cache.Counters().bytes, 65u * 4096) << "zero pages are kept with their buffers";
}

TEST(PageCacheRunTest, CompletionRunsUseTheCacheButDoNotFillIt) {
  PageCache cache(1 << 20, 4);
  RunFile file;
  std::atomic<int> loads{0};
  ASSERT_TRUE(cache.GetOrLoad({1, 5 * 4096, 4096}, FillWith(file.ByteOf(5), &loads)).ok());
  std::vector<uint8_t> buf(32 * 4096), zero;
  RunReadResult r;
  ASSERT_TRUE(cache.ReadRun({1, 0, 4096, 32}, RunKeep::kNone, file.Reader(), buf.data(), &zero, &r).ok());
  EXPECT_TRUE(RunHoldsFile(file, 0, 32, buf, zero));
  EXPECT_EQ(r.hits, 1u);
  EXPECT_EQ(cache.Counters().items, 1u) << "a completion run filled the shared cache";
}

TEST(PageCacheRunTest, AFailedReadKeepsTheValidPrefixAndReleasesItsClaims) {
  PageCache cache(1 << 20, 4);
  RunFile file;
  file.fail_from_page = 20;
  std::vector<uint8_t> buf(32 * 4096), zero;
  RunReadResult r;
  // Page 8 cached, so the misses form two ranges: [0,8) reads, [9,32) fails.
  std::atomic<int> loads{0};
  ASSERT_TRUE(cache.GetOrLoad({1, 8 * 4096, 4096}, FillWith(file.ByteOf(8), &loads)).ok());
  Status st = cache.ReadRun({1, 0, 4096, 32}, RunKeep::kShare, file.Reader(), buf.data(), &zero, &r);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(r.valid_pages, 9u);
  EXPECT_TRUE(RunHoldsFile(file, 0, 9, buf, zero));
  // No claim is left behind: a page of the failed range loads normally.
  auto page = cache.GetOrLoad({1, 25 * 4096, 4096}, FillWith(file.ByteOf(25), &loads));
  ASSERT_TRUE(page.ok());
  EXPECT_EQ((*page)->data()[0], file.ByteOf(25));
}

TEST(PageCacheRunTest, ConcurrentRunsAndFaultsReadEachPageOnce) {
  PageCache cache(4 << 20, 16);
  RunFile file;
  std::atomic<int> single_loads{0};
  std::atomic<int> wrong{0};
  std::mutex reads_mu;  // RunFile::reads is not thread-safe; guard the reader
  RangeReader reader = [&, inner = file.Reader()](uint64_t o, uint64_t l, uint8_t* out) {
    std::lock_guard lock(reads_mu);
    return inner(o, l, out);
  };
  std::vector<std::thread> threads;
  // Four runs overlapping on pages [0, 94) in different places...
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf(64 * 4096), zero;
      RunReadResult r;
      uint64_t first = t * 10;
      if (!cache.ReadRun({1, first * 4096, 4096, 64}, RunKeep::kShare, reader, buf.data(), &zero, &r).ok() ||
          !RunHoldsFile(file, first, 64, buf, zero)) {
        wrong++;
      }
    });
  }
  // ...and single-page faults on the same pages.
  for (uint64_t t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (uint64_t p = 0; p < 96; ++p) {
        auto page = cache.GetOrLoad({1, p * 4096, 4096}, [&, p](CachedPage& out) {
          single_loads++;
          std::memset(out.mutable_data(), file.ByteOf(p), 4096);
          return Status::Ok();
        });
        if (!page.ok() || (*page)->data()[100] != file.ByteOf(p)) wrong++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(file.pages_read.load() + single_loads.load(), 96) << "a page was read twice (96 distinct pages)";
}

}  // namespace
}  // namespace uffdpager
