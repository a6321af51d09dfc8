#include "pager/serving/page_loader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace uffdpager {

using Clock = std::chrono::steady_clock;

// Registered with the cache for every load a run waits for: another
// session's thread calls LoadEnded, which marks that something ended and
// wakes this session's thread through its own copy of the wake eventfd.
class PageLoader::Waker final : public LoadWaiter {
 public:
  explicit Waker(UniqueFd fd) : fd_(std::move(fd)) {}
  void LoadEnded() override {
    ended_.store(true, std::memory_order_release);
    uint64_t one = 1;
    (void)!::write(fd_.get(), &one, sizeof(one));
  }
  bool TakeEnded() { return ended_.exchange(false, std::memory_order_acq_rel); }

 private:
  const UniqueFd fd_;
  std::atomic<bool> ended_{false};
};

Result<std::unique_ptr<PageLoader>> PageLoader::Create(std::shared_ptr<const BackingChain> backing, PageCache* cache,
                                                       const CacheKey& chain_key, const CounterSink& counters,
                                                       int wake_fd) {
  std::unique_ptr<PageLoader> loader(new PageLoader(std::move(backing), cache, chain_key, counters));
  auto reader = UringReader::Create(kQueueDepth);
  if (!reader.ok()) return reader.status().WithContext("the session's reader");
  loader->reader_ = std::move(*reader);
  UniqueFd fd(::fcntl(wake_fd, F_DUPFD_CLOEXEC, 0));
  if (!fd) return Status::FromErrno(errno, "dup the session's wake eventfd");
  loader->waker_ = std::make_shared<Waker>(std::move(fd));
  return loader;
}

PageLoader::PageLoader(std::shared_ptr<const BackingChain> backing, PageCache* cache, const CacheKey& chain_key,
                       const CounterSink& counters)
    : backing_(std::move(backing)),
      cache_(cache),
      chain_namespace_(cache->InternNamespace(chain_key)),
      counters_(counters) {
  // A single file keeps the session's key (its caller's name for it); each
  // layer of a deeper chain is named by itself, whichever chain reads it.
  for (size_t i = 0; i < backing_->depth(); ++i) {
    const BackingFile& layer = backing_->layer(i);
    layer_namespaces_.push_back(backing_->depth() == 1
                                    ? chain_namespace_
                                    : cache->InternNamespace(CacheKey(layer.path(), layer.IdentityText())));
  }
}

PageLoader::~PageLoader() {
  // Reads still in flight write into our buffers: wait for them (the
  // reader's destructor does) before the buffers go, and give up every
  // claim so that no other session waits for a load that never ends.
  reader_.reset();
  for (auto& [id, run] : runs_) {
    if (run.claims_published) continue;
    for (uint64_t i = 0; i < run.request.count; ++i) {
      if (run.source[i] == Source::kRead && run.loads[i]) cache_->Finish(KeyOf(run, i), run.loads[i], nullptr, {});
    }
  }
}

PageKey PageLoader::KeyAt(uint64_t file_offset, uint64_t page_size) const {
  const size_t layer = backing_->PageLayer(file_offset, page_size);
  return PageKey{layer == BackingChain::kMixedLayers ? chain_namespace_ : layer_namespaces_[layer], file_offset,
                 page_size};
}

PageKey PageLoader::KeyOf(const Run& run, uint64_t page) const {
  const uint64_t ps = run.request.page_size;
  return KeyAt(
      run.request.page_offsets != nullptr ? run.request.page_offsets[page] : run.request.file_offset + page * ps, ps);
}

bool PageLoader::CanStart(LoadPurpose purpose, uint64_t bytes) const {
  if (purpose == LoadPurpose::kDemand) return true;
  return background_runs_ < kMaxBackgroundRuns && background_bytes_ + bytes <= kMaxBackgroundBytes;
}

Status PageLoader::AllocateBuffer(Run& run) {
  const uint64_t bytes = run.request.count * run.request.page_size;
  if (bytes <= kSmallRunBytes) {
    void* p = std::aligned_alloc(4096, bytes);
    if (p == nullptr) return Status::Internal(fmt::format("out of memory for a {}-byte run", bytes));
    run.small_buffer = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(p), std::free);
    run.bytes = run.small_buffer.get();
    return Status::Ok();
  }
  if (!free_big_buffers_.empty()) {
    run.big_buffer = std::move(free_big_buffers_.back());
    free_big_buffers_.pop_back();
  } else {
    auto mapping = MemoryMapping::Map(nullptr, kMaxRunBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                                      "run staging buffer");
    if (!mapping.ok()) return mapping.status();
    run.big_buffer = std::move(*mapping);
  }
  run.bytes = run.big_buffer.data();
  return Status::Ok();
}

bool PageLoader::ClaimBlock(const RunRequest& request, std::vector<PageLoadRef>* claims) {
  const uint64_t last = request.count - 1;
  claims->assign(request.count, nullptr);
  // Pages cached or loading elsewhere are read here anyway (one read for
  // the block); the others are ours to share.
  auto claim = [&](uint64_t i) {
    PageClaim claimed = cache_->Claim(KeyAt(request.page_offsets[i], request.page_size), /*claim=*/true, waker_);
    if (claimed.kind == PageClaim::Kind::kClaimed) (*claims)[i] = std::move(claimed.load);
    return claimed.kind;
  };
  // The last page is claimed first: a session that then finds both the
  // first and the last page loading has met another block read, not a
  // demand run that happens to cover one of them, and leaves the block to
  // it (holding no claim: both were another's).
  const PageClaim::Kind last_kind = claim(last);
  if (last > 0 && claim(0) == PageClaim::Kind::kWaiting && last_kind == PageClaim::Kind::kWaiting) return false;
  for (uint64_t i = 1; i < last; ++i) claim(i);
  return true;
}

uint64_t PageLoader::Start(const RunRequest& request) {
  std::vector<PageLoadRef> block_claims;
  if (request.source_fd >= 0 && request.page_offsets != nullptr && !ClaimBlock(request, &block_claims)) return 0;
  const uint64_t id = next_run_++;
  Run& run = runs_.emplace(id, Run{}).first->second;
  run.request = request;
  run.valid = request.count;
  run.source.assign(request.count, Source::kRead);
  run.loads.assign(request.count, nullptr);
  run.zero.assign(request.count, 0);
  if (request.purpose != LoadPurpose::kDemand) {
    ++background_runs_;
    background_bytes_ += request.count * request.page_size;
  }
  const bool keep = request.purpose != LoadPurpose::kCompletion;
  const uint64_t ps = request.page_size;

  if (request.source_fd >= 0) {
    if (request.page_offsets != nullptr) {
      run.loads = std::move(block_claims);
    } else {
      run.claims_published = true;  // nothing claimed
    }
    Status allocated = AllocateBuffer(run);
    if (!allocated.ok()) {
      MarkBad(run, 0, allocated);
    } else {
      const uint64_t tag = next_op_++;
      ops_.emplace(tag, ReadOp{id, 0, request.source_offset, request.count * ps, run.bytes, Clock::time_point{},
                               request.source_fd});
      queued_ops_.push_back(tag);
      ++run.reads;
      SubmitQueued();
    }
    FinishIfDone(id, run);
    return id;
  }

  // A one-page run the cache has needs no buffer: its bytes are the page's.
  if (request.count == 1) {
    PageClaim claim = cache_->Claim(KeyOf(run, 0), keep, waker_);
    if (claim.kind == PageClaim::Kind::kCached) {
      counters_.Add(&FaultCounters::cache_hits);
      run.source[0] = Source::kCached;
      run.zero[0] = claim.page->is_zero() ? 1 : 0;
      run.single = std::move(claim.page);
      run.bytes = const_cast<uint8_t*>(run.single->data());  // read-only use: a copy source
      FinishIfDone(id, run);
      return id;
    }
    run.source[0] = claim.kind == PageClaim::Kind::kWaiting ? Source::kWait : Source::kRead;
    run.loads[0] = std::move(claim.load);
  }
  Status allocated = AllocateBuffer(run);
  if (!allocated.ok()) {
    MarkBad(run, 0, allocated);
    PublishClaims(run);
    FinishIfDone(id, run);
    return id;
  }
  if (request.count > 1) {
    for (uint64_t i = 0; i < request.count; ++i) {
      PageClaim claim = cache_->Claim(KeyOf(run, i), keep, waker_);
      switch (claim.kind) {
        case PageClaim::Kind::kCached:
          counters_.Add(&FaultCounters::cache_hits);
          run.source[i] = Source::kCached;
          run.zero[i] = claim.page->CopyTo(run.bytes + i * ps) ? 1 : 0;
          break;
        case PageClaim::Kind::kWaiting:
          run.source[i] = Source::kWait;
          run.loads[i] = std::move(claim.load);
          break;
        case PageClaim::Kind::kClaimed:
        case PageClaim::Kind::kUnclaimed: run.loads[i] = std::move(claim.load); break;
      }
    }
  }
  for (uint64_t i = 0; i < request.count;) {
    if (run.source[i] != Source::kRead) {
      run.waits += run.source[i] == Source::kWait ? 1 : 0;
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < request.count && run.source[j] == Source::kRead) ++j;
    ReadPages(id, run, i, j);
    i = j;
  }
  SubmitQueued();
  if (run.reads == 0) PublishClaims(run);
  CollectWaited(id, run);
  FinishIfDone(id, run);
  return id;
}

uint64_t PageLoader::CachedPrefix(uint64_t file_offset, uint64_t page_size, uint64_t count,
                                  std::vector<PageRef>* pages) {
  pages->clear();
  uint64_t found = 0;
  while (found < count) {
    PageRef page = cache_->Find(KeyAt(file_offset + found * page_size, page_size));
    if (!page) break;
    pages->push_back(std::move(page));
    ++found;
  }
  counters_.Add(&FaultCounters::cache_hits, found);
  return found;
}

void PageLoader::ReadPages(uint64_t id, Run& run, uint64_t first, uint64_t end) {
  const uint64_t ps = run.request.page_size;
  const uint64_t offset = run.request.file_offset + first * ps;
  const uint64_t length = (end - first) * ps;
  counters_.Add(&FaultCounters::cache_misses, end - first);
  // A file filled on demand (an object's local copy) gets the range first;
  // this blocks the session's thread for the fetch (the io_uring reads only
  // local files).
  if (Status present = backing_->EnsureRange(offset, length); !present.ok()) {
    MarkBad(run, first, present);
    return;
  }
  // What no layer holds is zeros without a read; each piece of data is one
  // read of the layer that holds it.
  uint64_t pos = offset;
  uint8_t* out = run.bytes + first * ps;
  backing_->ForEachDataPiece(offset, length, [&](uint64_t start, uint64_t stop, size_t layer) {
    std::memset(out + (pos - offset), 0, start - pos);
    const uint64_t tag = next_op_++;
    ops_.emplace(tag, ReadOp{id, (start - run.request.file_offset) / ps, start, stop - start, out + (start - offset),
                             Clock::time_point{}, backing_->layer(layer).fd(), layer});
    queued_ops_.push_back(tag);
    ++run.reads;
    pos = stop;
  });
  std::memset(out + (pos - offset), 0, offset + length - pos);
}

void PageLoader::SubmitQueued() {
  while (!queued_ops_.empty() && !reader_->full()) {
    const uint64_t tag = queued_ops_.front();
    queued_ops_.pop_front();
    ReadOp& op = ops_.at(tag);
    op.submitted = Clock::now();
    reader_->Read(op.fd, op.offset, op.length, op.out, tag);
  }
  // A refused submission leaves the requests in the ring: the next Poll
  // submits them again.
  Status submitted = reader_->Submit();
  if (!submitted.ok()) spdlog::warn("{}", submitted.ToString());
}

void PageLoader::MarkBad(Run& run, uint64_t page, const Status& status) {
  if (page < run.valid) {
    run.valid = page;
    run.status = status;
  }
}

void PageLoader::Complete(const UringReader::Completion& completion) {
  auto it = ops_.find(completion.tag);
  if (it == ops_.end()) return;
  ReadOp op = it->second;
  ops_.erase(it);
  auto run_it = runs_.find(op.run);
  if (run_it == runs_.end()) return;
  Run& run = run_it->second;
  --run.reads;
  // One latency sample per read the file really saw.
  counters_.Add(&FaultCounters::backing_read_ns_total,
                static_cast<uint64_t>((Clock::now() - op.submitted) / std::chrono::nanoseconds(1)));
  const bool from_backing = run.request.source_fd < 0;
  counters_.Add(from_backing ? &FaultCounters::backing_bytes_read : &FaultCounters::working_set_bytes_read,
                completion.bytes);
  if (!completion.status.ok()) {
    MarkBad(run, op.first_page,
            completion.status.WithContext(
                fmt::format("read {} bytes at offset {} of {}", op.length, op.offset,
                            from_backing ? backing_->layer(op.layer).path() : "the compact working set")));
  }
  if (run.reads == 0) PublishClaims(run);
}

void PageLoader::PublishClaims(Run& run, bool releasing) {
  if (run.claims_published || (run.request.page_offsets != nullptr && !releasing)) return;
  run.claims_published = true;
  const uint64_t ps = run.request.page_size;
  for (uint64_t i = 0; i < run.request.count; ++i) {
    if (run.source[i] != Source::kRead) continue;
    const bool good = i < run.valid;
    // A run from another file found its zero pages when it finished.
    if (good && run.request.source_fd < 0) run.zero[i] = cache_->IsZeroPage(run.bytes + i * ps, ps) ? 1 : 0;
    if (!run.loads[i]) continue;  // not claimed: nothing to share
    std::shared_ptr<CachedPage> page;
    if (good) {
      try {
        page = std::make_shared<CachedPage>(ps);
        if (!run.zero[i]) std::memcpy(page->mutable_data(), run.bytes + i * ps, ps);
      } catch (const std::bad_alloc&) {
        page.reset();  // not kept; waiters read it themselves
      }
    }
    cache_->Finish(KeyOf(run, i), run.loads[i], std::move(page), Status::Ok());
    run.loads[i].reset();
  }
}

void PageLoader::CollectWaited(uint64_t id, Run& run) {
  if (run.waits == 0) return;
  const uint64_t ps = run.request.page_size;
  for (uint64_t i = 0; i < run.request.count; ++i) {
    if (run.source[i] != Source::kWait || !run.loads[i]) continue;
    PageRef page;
    Status error;
    LoadOutcome outcome = cache_->Outcome(KeyOf(run, i), run.loads[i], &page, &error);
    if (outcome == LoadOutcome::kLoading) continue;
    run.loads[i].reset();
    --run.waits;
    if (outcome == LoadOutcome::kLoaded) {
      counters_.Add(&FaultCounters::cache_hits);
      run.zero[i] = page->CopyTo(run.bytes + i * ps) ? 1 : 0;
      continue;
    }
    // The other load gave nothing (it stopped short, or failed): read the
    // page here, for this run only.
    run.source[i] = Source::kRead;
    ReadPages(id, run, i, i + 1);
  }
  SubmitQueued();
}

void PageLoader::FinishIfDone(uint64_t id, Run& run) {
  if (run.finished || run.reads > 0 || run.waits > 0) return;
  if (run.request.source_fd >= 0) {
    const uint64_t ps = run.request.page_size;
    for (uint64_t i = 0; i < run.valid; ++i) run.zero[i] = cache_->IsZeroPage(run.bytes + i * ps, ps) ? 1 : 0;
  }
  PublishClaims(run);
  run.finished = true;
  ready_.push_back(LoadedRun{id, run.request, run.status, run.valid, run.bytes, run.zero.data()});
}

void PageLoader::Poll() {
  completions_.clear();
  reader_->Reap(&completions_);
  for (const auto& c : completions_) Complete(c);
  SubmitQueued();
  const bool ended = waker_->TakeEnded();
  for (auto& [id, run] : runs_) {
    if (run.finished) continue;
    if (ended) CollectWaited(id, run);
    FinishIfDone(id, run);
  }
}

void PageLoader::Release(uint64_t id, bool vouched) {
  auto it = runs_.find(id);
  if (it == runs_.end()) return;
  Run& run = it->second;
  if (run.request.page_offsets != nullptr && !run.claims_published) {
    if (!vouched) MarkBad(run, 0, Status::Internal("the caller did not vouch for the run's bytes"));
    PublishClaims(run, /*releasing=*/true);
  }
  // A background run counts against the bound until it is released, not
  // only while it reads: runs served from the cache end at once, and
  // counting them only in flight would let one step start the whole plan
  // (thousands of staged runs waiting to be installed).
  if (run.request.purpose != LoadPurpose::kDemand) {
    --background_runs_;
    background_bytes_ -= run.request.count * run.request.page_size;
  }
  if (run.big_buffer.valid()) {
    // Keep one buffer warm; give the memory of the others back at once, so
    // an idle session does not hold staging memory.
    if (free_big_buffers_.empty()) {
      free_big_buffers_.push_back(std::move(run.big_buffer));
    } else {
      (void)::madvise(run.big_buffer.data(), run.big_buffer.size(), MADV_DONTNEED);
      free_big_buffers_.push_back(std::move(run.big_buffer));
    }
  }
  runs_.erase(it);
  for (auto r = ready_.begin(); r != ready_.end(); ++r) {
    if (r->id == id) {
      ready_.erase(r);
      break;
    }
  }
}

}  // namespace uffdpager
