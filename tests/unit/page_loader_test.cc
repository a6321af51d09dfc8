// PageLoader in process: runs of pages loaded from a real file through a
// real io_uring, with the shared cache's single flight between loaders.
#include "pager/serving/page_loader.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "pager/metrics/counter_sink.h"
#include "support/temp_dir.h"

namespace uffdpager {
namespace page_loader_test {
namespace {

constexpr uint64_t kPage = 4096;
constexpr auto kDeadline = std::chrono::seconds(30);

// A memory file: page p holds the byte (p % 251) + 1, except pages listed as
// zero.
struct RunFile {
  std::string path;
  std::vector<uint64_t> zero_pages;

  uint8_t ByteOf(uint64_t page) const {
    for (uint64_t z : zero_pages) {
      if (z == page) return 0;
    }
    return static_cast<uint8_t>(page % 251 + 1);
  }
  void Write(uint64_t pages) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (uint64_t p = 0; p < pages; ++p) out << std::string(kPage, static_cast<char>(ByteOf(p)));
  }
};

// One session's loader with its counters; Load() drives it as the session's
// thread would, until the run's load ends.
struct TestLoader {
  FaultCounters session, pager;
  FaultLatencies latencies;
  UniqueFd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  std::unique_ptr<PageLoader> loader;

  TestLoader(std::shared_ptr<BackingFile> backing, PageCache* cache) {
    const CacheKey key("test-key", backing->IdentityText());
    auto made = PageLoader::Create(BackingChain::Single(std::move(backing)), cache, key,
                                   CounterSink(&session, &pager, nullptr, &latencies), wake.get());
    EXPECT_TRUE(made.ok()) << made.status().ToString();
    if (made.ok()) loader = std::move(*made);
  }

  // Starts `request` and polls until it is ready; the run (or an empty one
  // with a status if the deadline passed).
  LoadedRun Load(const RunRequest& request) { return Wait(loader->Start(request)); }

  // Polls until run `id` is ready.
  LoadedRun Wait(uint64_t id) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    for (;;) {
      for (const LoadedRun& run : loader->ready()) {
        if (run.id == id) return run;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        LoadedRun none;
        none.status = Status::Timeout("the run's load did not end");
        return none;
      }
      pollfd pfds[2] = {{loader->poll_fd(), POLLIN, 0}, {wake.get(), POLLIN, 0}};
      (void)::poll(pfds, 2, 10);
      uint64_t drained;
      (void)!::read(wake.get(), &drained, sizeof(drained));
      loader->Poll();
    }
  }

  uint64_t Get(const std::atomic<uint64_t>& c) const { return c.load(); }
  // Reads of the file so far (one latency sample each).
  uint64_t reads() const { return latencies.backing_read.Read().count; }
};

::testing::AssertionResult RunHoldsFile(const RunFile& file, uint64_t first, const LoadedRun& run, uint64_t count) {
  if (run.valid_pages < count) return ::testing::AssertionFailure() << "only " << run.valid_pages << " pages valid";
  for (uint64_t i = 0; i < count; ++i) {
    uint8_t want = file.ByteOf(first + i);
    for (uint64_t b = 0; b < kPage; b += 97) {
      if (run.bytes[i * kPage + b] != want)
        return ::testing::AssertionFailure() << "page " << first + i << " byte " << b;
    }
    if ((run.zero[i] != 0) != (want == 0)) return ::testing::AssertionFailure() << "zero flag of page " << first + i;
  }
  return ::testing::AssertionSuccess();
}

class PageLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    file_.path = dir_ / "mem";
    file_.zero_pages = {3, 40};
    file_.Write(96);
    auto backing = BackingFile::Open(file_.path);
    ASSERT_TRUE(backing.ok()) << backing.status().ToString();
    backing_ = *backing;
  }

  RunRequest Run(uint64_t first, uint64_t count, LoadPurpose purpose = LoadPurpose::kDemand) const {
    return RunRequest{purpose, first * kPage, kPage, count};
  }

  // A prefetch run of a compact block: `count` pages kept in another file
  // (`source_fd`; here the memory file itself, from page `first`, so the
  // bytes are known), shared under the memory file's offsets, which
  // *offsets holds.
  RunRequest CompactBlock(int source_fd, uint64_t first, uint64_t count, std::vector<uint64_t>* offsets) const {
    offsets->clear();
    for (uint64_t p = first; p < first + count; ++p) offsets->push_back(p * kPage);
    RunRequest block = Run(0, count, LoadPurpose::kPrefetch);
    block.source_fd = source_fd;
    block.source_offset = first * kPage;
    block.page_offsets = offsets->data();
    return block;
  }

  void Cache(PageCache& cache, uint64_t page) {
    auto loaded = cache.GetOrLoad({1, page * kPage, kPage}, [&](CachedPage& out) {
      std::memset(out.mutable_data(), file_.ByteOf(page), kPage);
      return Status::Ok();
    });
    ASSERT_TRUE(loaded.ok());
  }

  testing::TempDir dir_;
  RunFile file_;
  std::shared_ptr<BackingFile> backing_;
};

TEST_F(PageLoaderTest, MissesAreReadOneRangeAtATimeAndHitsComeFromMemory) {
  PageCache cache(1 << 20, 4);
  Cache(cache, 10);
  Cache(cache, 11);
  TestLoader t(backing_, &cache);
  LoadedRun run = t.Load(Run(0, 64));
  ASSERT_TRUE(run.status.ok()) << run.status.ToString();
  EXPECT_TRUE(RunHoldsFile(file_, 0, run, 64));
  EXPECT_EQ(t.Get(t.session.cache_hits), 2u);
  EXPECT_EQ(t.Get(t.session.cache_misses), 62u);
  EXPECT_EQ(t.reads(), 2u) << "the pages around the two cached ones, one read each";
  EXPECT_EQ(t.Get(t.session.backing_bytes_read), 62 * kPage);
  t.loader->Release(run.id);
  // Kept: every page is now cached; a second run reads nothing.
  run = t.Load(Run(0, 64));
  EXPECT_EQ(t.reads(), 2u);
  EXPECT_EQ(t.Get(t.session.cache_hits), 2u + 64u);
  EXPECT_TRUE(RunHoldsFile(file_, 0, run, 64));
  EXPECT_EQ(cache.Counters().zero_items, 2u);
}

TEST_F(PageLoaderTest, AOnePageRunTheCacheHasIsItsPageWithoutACopy) {
  PageCache cache(1 << 20, 4);
  Cache(cache, 7);
  TestLoader t(backing_, &cache);
  LoadedRun run = t.Load(Run(7, 1));
  EXPECT_TRUE(RunHoldsFile(file_, 7, run, 1));
  EXPECT_EQ(t.reads(), 0u);
  EXPECT_EQ(t.loader->runs(), 1u);
  t.loader->Release(run.id);
  EXPECT_EQ(t.loader->runs(), 0u);
}

TEST_F(PageLoaderTest, ACachedPrefixIsTheLeadingCachedPagesWithoutARunOrARead) {
  PageCache cache(1 << 20, 4);
  for (uint64_t p : {2, 3, 4, 6}) Cache(cache, p);
  TestLoader t(backing_, &cache);
  std::vector<PageRef> pages;
  EXPECT_EQ(t.loader->CachedPrefix(2 * kPage, kPage, 5, &pages), 3u) << "page 5 is not cached: the prefix ends there";
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(pages[0]->data()[kPage - 1], file_.ByteOf(2));
  EXPECT_TRUE(pages[1]->is_zero()) << "page 3 is all zeros and kept as such";
  EXPECT_EQ(pages[2]->data()[0], file_.ByteOf(4));
  EXPECT_EQ(t.Get(t.session.cache_hits), 3u);
  EXPECT_EQ(t.Get(t.session.cache_misses), 0u) << "a miss is counted by the load that reads it";
  EXPECT_EQ(t.loader->CachedPrefix(5 * kPage, kPage, 2, &pages), 0u);
  EXPECT_TRUE(pages.empty()) << "what an earlier call found is replaced, not appended to";
  EXPECT_EQ(t.loader->runs(), 0u);
  EXPECT_EQ(t.reads(), 0u);
}

TEST_F(PageLoaderTest, OfTwoSessionsThatReachOneCompactBlockAtOnceOnlyTheOneThatClaimsItReadsIt) {
  PageCache cache(1 << 20, 4);
  TestLoader first(backing_, &cache), second(backing_, &cache), later(backing_, &cache);
  UniqueFd source(::open(file_.path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(source.valid());
  std::vector<uint64_t> offsets;
  const RunRequest block = CompactBlock(source.get(), 8, 8, &offsets);

  const uint64_t id = first.loader->Start(block);
  ASSERT_NE(id, 0u);
  EXPECT_EQ(second.loader->Start(block), 0u)
      << "the block's first and last pages are claimed: the second session leaves it";
  EXPECT_EQ(second.loader->runs(), 0u);
  EXPECT_EQ(second.loader->background_runs(), 0u) << "a run not started takes no room";

  LoadedRun run = first.Wait(id);
  ASSERT_TRUE(RunHoldsFile(file_, 8, run, offsets.size()));
  first.loader->Release(id, /*vouched=*/true);
  std::vector<PageRef> pages;
  ASSERT_EQ(second.loader->CachedPrefix(8 * kPage, kPage, offsets.size(), &pages), offsets.size())
      << "the second session finds the block's pages in the cache";
  for (uint64_t i = 0; i < pages.size(); ++i) EXPECT_EQ(pages[i]->data()[kPage / 2], file_.ByteOf(8 + i));
  EXPECT_EQ(second.reads(), 0u);
  EXPECT_EQ(first.reads(), 1u) << "the block is one read";

  // Pages that are cached (not being loaded) do not stand for another read:
  // the run starts and reads the block, as a block not all cached must be.
  const uint64_t again = later.loader->Start(block);
  ASSERT_NE(again, 0u);
  EXPECT_TRUE(RunHoldsFile(file_, 8, later.Wait(again), offsets.size()));
  later.loader->Release(again, /*vouched=*/true);
}

TEST_F(PageLoaderTest, ABlockWhoseFirstPageADemandRunLoadsIsStillRead) {
  PageCache cache(1 << 20, 4);
  TestLoader faulting(backing_, &cache), replaying(backing_, &cache);
  UniqueFd source(::open(file_.path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(source.valid());
  std::vector<uint64_t> offsets;
  const RunRequest block = CompactBlock(source.get(), 20, 8, &offsets);

  // A fault's run covers the block's first page (and the two before it),
  // not its last: the block is not being read by anyone.
  const uint64_t demand = faulting.loader->Start(Run(18, 3));
  ASSERT_TRUE(faulting.loader->Loading(demand));
  const uint64_t id = replaying.loader->Start(block);
  ASSERT_NE(id, 0u) << "a run that only covers the first page does not stand for the block's read";
  EXPECT_TRUE(RunHoldsFile(file_, 20, replaying.Wait(id), offsets.size()));
  replaying.loader->Release(id, /*vouched=*/true);
  EXPECT_TRUE(RunHoldsFile(file_, 18, faulting.Wait(demand), 3));
  faulting.loader->Release(demand);
}

TEST_F(PageLoaderTest, WithZeroPagesCopiedZerosAreKeptAndFlaggedAsData) {
  PageCache cache(1 << 20, 4, ZeroPageMode::kCopy);
  TestLoader t(backing_, &cache);
  for (int pass = 0; pass < 2; ++pass) {  // read, then from memory
    LoadedRun run = t.Load(Run(0, 64));
    ASSERT_EQ(run.valid_pages, 64u);
    for (uint64_t i = 0; i < 64; ++i) {
      EXPECT_EQ(run.zero[i], 0) << "page " << i << " flagged zero on pass " << pass;
      EXPECT_EQ(run.bytes[i * kPage + 4095], file_.ByteOf(i)) << "page " << i;
    }
    t.loader->Release(run.id);
  }
  EXPECT_EQ(t.reads(), 1u);
  EXPECT_EQ(cache.Counters().zero_items, 0u);
  EXPECT_GE(cache.Counters().bytes, 64u * kPage) << "zero pages are kept with their buffers";
}

TEST_F(PageLoaderTest, CompletionRunsUseTheCacheButDoNotFillIt) {
  PageCache cache(1 << 20, 4);
  Cache(cache, 5);
  TestLoader t(backing_, &cache);
  LoadedRun run = t.Load(Run(0, 32, LoadPurpose::kCompletion));
  EXPECT_TRUE(RunHoldsFile(file_, 0, run, 32));
  EXPECT_EQ(t.Get(t.session.cache_hits), 1u);
  EXPECT_EQ(cache.Counters().items, 1u) << "a completion run filled the shared cache";
}

TEST_F(PageLoaderTest, BackgroundRunsCountAgainstTheBoundUntilReleasedEvenWhenTheyEndAtOnce) {
  // Every page cached: each prefetch run ends the moment it starts. Were
  // runs counted only while they read, a prefetch step would start its whole
  // plan, staging thousands of runs before installing any.
  PageCache cache(1 << 20, 4);
  for (uint64_t p = 0; p < 64; ++p) Cache(cache, p);
  TestLoader t(backing_, &cache);
  std::vector<uint64_t> ids;
  while (t.loader->CanStart(LoadPurpose::kPrefetch, kPage) && ids.size() < 64) {
    ids.push_back(t.loader->Start(Run(ids.size(), 1, LoadPurpose::kPrefetch)));
  }
  EXPECT_EQ(ids.size(), PageLoader::kMaxBackgroundRuns);
  EXPECT_EQ(t.loader->ready().size(), ids.size());
  // Demand runs are never held back by them.
  EXPECT_TRUE(t.loader->CanStart(LoadPurpose::kDemand, kPage));
  t.loader->Release(ids.front());
  EXPECT_TRUE(t.loader->CanStart(LoadPurpose::kPrefetch, kPage));
}

TEST_F(PageLoaderTest, AFailedReadKeepsTheValidPrefixAndGivesUpItsClaims) {
  PageCache cache(1 << 20, 4);
  // Page 8 cached, so the misses form two reads: [0,8) and [9,32), and the
  // file is cut at page 20 after it was opened: the second read fails.
  Cache(cache, 8);
  ASSERT_EQ(::truncate(file_.path.c_str(), 20 * kPage), 0);
  TestLoader t(backing_, &cache);
  LoadedRun run = t.Load(Run(0, 32));
  EXPECT_FALSE(run.status.ok());
  EXPECT_NE(run.status.message().find("truncated"), std::string::npos) << run.status.ToString();
  EXPECT_EQ(run.valid_pages, 9u);
  EXPECT_TRUE(RunHoldsFile(file_, 0, run, 9));
  // No claim is left behind: a page of the failed range loads normally.
  std::atomic<int> loads{0};
  auto page = cache.GetOrLoad({1, 25 * kPage, kPage}, [&](CachedPage& out) {
    loads++;
    std::memset(out.mutable_data(), file_.ByteOf(25), kPage);
    return Status::Ok();
  });
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(loads.load(), 1);
}

TEST_F(PageLoaderTest, ConcurrentRunsOfManyLoadersReadEachPageOnce) {
  PageCache cache(4 << 20, 16);
  std::atomic<int> wrong{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<int> single_loads{0};
  std::vector<std::thread> threads;
  // Four sessions' runs overlapping on pages [0, 94) in different places...
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      TestLoader loader(backing_, &cache);
      uint64_t first = t * 10;
      LoadedRun run = loader.Load(Run(first, 64));
      if (!run.status.ok() || !RunHoldsFile(file_, first, run, 64)) wrong++;
      bytes_read += loader.Get(loader.session.backing_bytes_read);
    });
  }
  // ...and blocking single-page loads of the same pages.
  for (uint64_t t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (uint64_t p = 0; p < 96; ++p) {
        auto page = cache.GetOrLoad({1, p * kPage, kPage}, [&, p](CachedPage& out) {
          single_loads++;
          std::memset(out.mutable_data(), file_.ByteOf(p), kPage);
          return Status::Ok();
        });
        if (!page.ok() || ((*page)->is_zero() ? 0 : (*page)->data()[100]) != file_.ByteOf(p)) wrong++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  // Pages 3 and 40 are zeros but still data in the file: read like the rest.
  EXPECT_EQ(bytes_read.load() / kPage + static_cast<uint64_t>(single_loads.load()), 96u)
      << "a page was read twice (96 distinct pages)";
}

}  // namespace
}  // namespace page_loader_test
}  // namespace uffdpager
