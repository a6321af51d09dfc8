#include "pager/serving/fault_engine.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/logging.h"

namespace uffdpager {

using Clock = std::chrono::steady_clock;

Result<std::unique_ptr<FaultEngine>> FaultEngine::Create(Userfaultfd* uffd, MemoryLayout layout,
                                                         std::shared_ptr<const BackingChain> backing, PageCache* cache,
                                                         const CacheKey& chain_key, CounterSink counters,
                                                         FaultEngineOptions options, int wake_fd) {
  std::unique_ptr<FaultEngine> engine(new FaultEngine(uffd, std::move(layout), counters, options));
  auto loader = PageLoader::Create(std::move(backing), cache, chain_key, counters, wake_fd);
  if (!loader.ok()) return loader.status();
  engine->loader_ = std::move(*loader);
  return engine;
}

FaultEngine::FaultEngine(Userfaultfd* uffd, MemoryLayout layout, CounterSink counters, FaultEngineOptions options)
    : uffd_(uffd), layout_(std::move(layout)), counters_(counters), options_(options), presence_(layout_.regions()) {}

FaultEngine::~FaultEngine() = default;

// ---- Events ----------------------------------------------------------------

ServeReport FaultEngine::ServeEvents() {
  ServeReport report;
  bool stalled = false;
  for (;;) {
    size_t read = ReadEvents(&report);
    if (report.vm_gone) return report;
    if (stalled && read == 0) {
      report.retry_pending = true;
      return report;
    }
    loader_->Poll();
    stalled = !InstallLoaded(0, &report) || !ServePending(&report);
    if (report.vm_gone || !stalled) return report;
  }
}

size_t FaultEngine::ReadEvents(ServeReport* report) {
  std::array<uffd_msg, 64> msgs;
  size_t total = 0;
  ++read_round_;
  for (;;) {
    ssize_t n = ::read(uffd_->fd(), msgs.data(), sizeof(msgs));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return total;
      RecordFailure(report, Status::FromErrno(errno, "read userfaultfd events"));
      return total;
    }
    if (n == 0) return total;
    size_t count = static_cast<size_t>(n) / sizeof(uffd_msg);
    auto now = Clock::now();
    for (size_t i = 0; i < count; ++i) {
      const uffd_msg& m = msgs[i];
      switch (m.event) {
        case UFFD_EVENT_PAGEFAULT:
          counters_.Add(&FaultCounters::faults);
          pending_.push_back({m.arg.pagefault.address, now, read_round_, 0});
          break;
        case UFFD_EVENT_REMOVE: HandleRemove(m.arg.remove.start, m.arg.remove.end); break;
        default: UFFD_LOG_RATE_LIMITED(spdlog::level::warn, "ignoring unexpected userfaultfd event {}", m.event); break;
      }
    }
    total += count;
    if (count < msgs.size()) return total;
  }
}

void FaultEngine::HandleRemove(uint64_t start, uint64_t end) {
  counters_.Add(&FaultCounters::remove_events);
  counters_.Add(&FaultCounters::removed_bytes, end - start);
  removed_.Add(start, end);
  ++remove_generation_;
  // A page discarded with notice faults again rightly: no loop.
  for (auto it = refaults_.begin(); it != refaults_.end();) {
    const bool overlaps = it->first < end && it->first + it->second.page_size > start;
    it = overlaps ? refaults_.erase(it) : std::next(it);
  }
  for (size_t r = 0; r < layout_.regions().size(); ++r) presence_.ClearRange(r, start, end);
}

bool FaultEngine::HasWorkNow(bool completing) const {
  if (!loader_->ready().empty()) return true;
  const uint64_t run_bytes = kMaxRunBytes;
  const bool plan_left =
      prefetch_pos_ < prefetch_plan_.size() || (compact_ && compact_next_block_ < compact_->blocks());
  if (plan_left && loader_->CanStart(LoadPurpose::kPrefetch, run_bytes)) return true;
  if (completing && populate_region_ < layout_.regions().size() &&
      loader_->CanStart(LoadPurpose::kCompletion, run_bytes)) {
    return true;
  }
  return false;
}

// ---- Demand faults ---------------------------------------------------------

std::optional<bool> FaultEngine::StopsLoop(FillResult result, ServeReport* report) {
  switch (result) {
    case FillResult::kRetry: counters_.Add(&FaultCounters::eagain_retries); return false;
    case FillResult::kVmGone: report->vm_gone = true; return true;
    case FillResult::kDone:
    case FillResult::kFailed: return std::nullopt;
  }
  return std::nullopt;
}

bool FaultEngine::ServePending(ServeReport* report) {
  // Serving a fault can end a load at once (its pages were cached): install
  // those, and serve what that resolved, until nothing changes.
  for (int pass = 0; pass < 4; ++pass) {
    bool started = false;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->run != 0) {
        ++it;
        continue;
      }
      bool waiting = false;
      FillResult result = ServeFault(*it, &waiting, report);
      if (auto stop = StopsLoop(result, report)) return *stop;
      if (waiting) {
        started = true;
        ++it;
        continue;
      }
      it = pending_.erase(it);
    }
    if (!started || loader_->ready().empty()) return true;
    if (!InstallLoaded(0, report)) return false;
    if (report->vm_gone) return true;
  }
  return true;
}

FaultEngine::FillResult FaultEngine::ServeFault(PendingFault& fault, bool* waiting, ServeReport* report) {
  auto loc = layout_.Locate(fault.address);
  if (!loc) {
    RecordFailure(report, Status::InvalidArgument(
                              fmt::format("fault at {:#x} is outside every registered region", fault.address)));
    counters_.Add(&FaultCounters::unservable_faults);
    return FillResult::kFailed;
  }
  const bool removed = removed_.Overlaps(loc->page_addr, loc->page_addr + loc->page_size);
  if (presence_.IsPresent(loc->region, loc->page_index)) {
    // Found looping before: its threads stay blocked, however many of them
    // fault on it (a wake for one wakes them all, and the loop resumes).
    if (looping_.count(loc->page_addr) != 0) return FillResult::kFailed;
    // In a removed range, present on our word only: the kernel completes a
    // REMOVE event as we read it and zaps the range after that, so zeros we
    // installed in between can be gone again. Install them anew; only if
    // they are still there is this fault a duplicate or a loop.
    if (removed) {
      bool still_there = false;
      FillResult result = FillZeros(*loc, report, &still_there);
      if (result != FillResult::kDone || !still_there) {
        if (result == FillResult::kDone) FaultServed(fault, *loc, /*brought_in=*/true);
        return result;
      }
    }
    if (Status loop = CheckRefault(*loc, fault.read_round); !loop.ok()) {
      looping_.insert(loc->page_addr);
      RecordFailure(report, std::move(loop));
      counters_.Add(&FaultCounters::unservable_faults);
      return FillResult::kFailed;  // its thread stays blocked: no more spinning
    }
    // A duplicate fault on a page we already installed (several threads
    // touched it before the copy woke them): a wake is all it needs.
    counters_.Add(&FaultCounters::already_present);
    (void)uffd_->Wake(loc->page_addr, loc->page_size);
    FaultServed(fault, *loc, /*brought_in=*/false);
    return FillResult::kDone;
  }
  if (removed) {
    FillResult result = FillZeros(*loc, report);
    if (result == FillResult::kDone) FaultServed(fault, *loc, /*brought_in=*/true);
    return result;
  }
  if (const RunSpan* span = RunCovering(loc->region, loc->page_index)) {
    fault.run = span->id;
  } else {
    const uint64_t count = DemandRunLength(*loc);
    // Bytes in memory go in at once: the fault is served in this round.
    if (loader_->CachedPrefix(loc->file_offset, loc->page_size, std::min(count, CachedRunLimit(loc->page_size)),
                              &cached_pages_) > 0) {
      uint64_t installed = 0;
      FillResult result =
          InstallCached(loc->region, loc->page_index, cached_pages_, LoadPurpose::kDemand, &installed, report);
      if (installed > 1) counters_.Add(&FaultCounters::fault_around_pages, installed - 1);
      if (result == FillResult::kDone) FaultServed(fault, *loc, /*brought_in=*/false);  // recorded as it went in
      return result;
    }
    // First, so that its block's load holds the page and the demand run
    // waits for it instead of reading the backing memory.
    StartCompactBlockFor(loc->file_offset);
    fault.run = StartRun(LoadPurpose::kDemand, loc->region, loc->page_index, count);
  }
  *waiting = true;
  return FillResult::kDone;
}

void FaultEngine::FaultServed(const PendingFault& fault, const PageLocation& loc, bool brought_in) {
  auto ns = static_cast<uint64_t>((Clock::now() - fault.read_at) / std::chrono::nanoseconds(1));
  counters_.Add(&FaultCounters::fault_service_ns_total, ns);
  counters_.Max(&FaultCounters::fault_service_ns_max, ns);
  if (brought_in && recording_ && recorded_.size() < record_limit_) recorded_.push_back(loc.file_offset);
}

const FaultEngine::RunSpan* FaultEngine::RunCovering(size_t region, uint64_t page) const {
  for (const RunSpan& span : runs_) {
    if (span.region == region && page >= span.first_page && page < span.first_page + span.count) return &span;
  }
  return nullptr;
}

uint64_t FaultEngine::StartRun(LoadPurpose purpose, size_t region, uint64_t first_page, uint64_t count) {
  const GuestRegionMapping& r = layout_.regions()[region];
  RunRequest request{purpose, r.offset + first_page * r.page_size, r.page_size, count};
  // Registered before the load starts: a load that ends at once (every page
  // cached) is installed through its span like any other.
  const uint64_t id = loader_->Start(request);
  runs_.push_back(RunSpan{id, region, first_page, count, purpose});
  return id;
}

uint64_t FaultEngine::DemandRunLength(const PageLocation& loc) {
  uint64_t window = options_.fault_around_max_pages > 0 ? FaultAroundWindow(loc) : 1;
  uint64_t count = std::max<uint64_t>(1, MissingRunLength(loc.region, loc.page_index, window));
  // Stop the window at the first page another run of ours is loading.
  for (uint64_t i = 1; i < count; ++i) {
    if (RunCovering(loc.region, loc.page_index + i) != nullptr) return i;
  }
  return count;
}

uint64_t FaultEngine::CachedRunLimit(uint64_t page_size) {
  return std::max<uint64_t>(1, kMaxCachedRunBytes / page_size);
}

FaultEngine::FillResult FaultEngine::InstallCached(size_t region, uint64_t first, const std::vector<PageRef>& pages,
                                                   LoadPurpose purpose, uint64_t* installed, ServeReport* report) {
  const uint64_t count = pages.size();
  const uint64_t ps = pages[0]->size();
  std::array<uint8_t, kMaxCachedRunBytes / 4096> zero{};
  const uint8_t* source = pages[0]->data();  // null for a zero page, which needs no source
  zero[0] = pages[0]->is_zero() ? 1 : 0;
  if (count > 1) {
    // One ioctl for the run costs less than one per page, even with the copy.
    if (!cached_run_buffer_.valid()) {
      auto buffer = MemoryMapping::Map(nullptr, kMaxCachedRunBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                       -1, 0, "cached run staging buffer");
      if (!buffer.ok()) {
        RecordFailure(report, buffer.status());
        return FillResult::kFailed;
      }
      cached_run_buffer_ = std::move(*buffer);
    }
    for (uint64_t i = 0; i < count; ++i) zero[i] = pages[i]->CopyTo(cached_run_buffer_.data() + i * ps) ? 1 : 0;
    source = cached_run_buffer_.data();
  }
  FillResult result = InstallPages(region, first, count, source, zero.data(), installed, report);
  if (purpose == LoadPurpose::kDemand) RecordBroughtIn(region, first, *installed);
  return result;
}

void FaultEngine::RecordBroughtIn(size_t region, uint64_t first, uint64_t count) {
  if (!recording_) return;
  const GuestRegionMapping& r = layout_.regions()[region];
  for (uint64_t k = 0; k < count && recorded_.size() < record_limit_; ++k) {
    recorded_.push_back(r.offset + (first + k) * r.page_size);
  }
}

uint64_t FaultEngine::FaultAroundWindow(const PageLocation& loc) {
  // Which stream does this fault continue? One whose last window ended at
  // most a window before it; else the least recently used slot starts anew.
  AccessStream* stream = nullptr;
  for (AccessStream& s : streams_) {
    if (s.window > 0 && loc.page_addr >= s.next_addr && loc.page_addr < s.next_addr + s.window * loc.page_size) {
      stream = &s;
      break;
    }
  }
  if (stream != nullptr) {
    stream->window = std::min(stream->window * 2, options_.fault_around_max_pages);
  } else {
    stream = &streams_[0];
    for (AccessStream& s : streams_) {
      if (s.last_used < stream->last_used) stream = &s;
    }
    stream->window = 1;
  }
  stream->last_used = ++stream_clock_;
  uint64_t window = std::min(stream->window, std::max<uint64_t>(1, kMaxRunBytes / loc.page_size));
  uint64_t count = std::max<uint64_t>(1, MissingRunLength(loc.region, loc.page_index, window));
  stream->next_addr = loc.page_addr + count * loc.page_size;
  return count;
}

uint64_t FaultEngine::MissingRunLength(size_t region, uint64_t first, uint64_t max) const {
  const GuestRegionMapping& r = layout_.regions()[region];
  const uint64_t pages = r.size / r.page_size;
  uint64_t count = 0;
  while (first + count < pages && count < max) {
    uint64_t page = first + count;
    uint64_t addr = r.base_host_virt_addr + page * r.page_size;
    if (presence_.IsPresent(region, page) || removed_.Overlaps(addr, addr + r.page_size)) break;
    ++count;
  }
  return count;
}

// ---- Installing ------------------------------------------------------------

bool FaultEngine::InstallLoaded(size_t background_pages, ServeReport* report) {
  // Demand runs first, and background runs a fault waits for; then other
  // background runs, about `background_pages` pages' worth.
  size_t background_done = 0;
  for (int round = 0; round < 2; ++round) {
    const bool demand_round = round == 0;
    for (size_t i = 0; i < loader_->ready().size();) {
      const LoadedRun run = loader_->ready()[i];
      auto compact = std::find_if(compact_runs_.begin(), compact_runs_.end(),
                                  [&](const std::pair<uint64_t, size_t>& c) { return c.first == run.id; });
      if (compact != compact_runs_.end()) {
        // A block a demand fault waits for goes in with the demand runs.
        const bool awaited = compact_awaited_.count(run.id) != 0;
        if (demand_round != awaited || (!demand_round && background_done >= background_pages)) {
          ++i;
          continue;
        }
        FillResult result = InstallCompactBlock(run, compact->second);
        if (auto stop = StopsLoop(result, report)) return *stop;
        if (!demand_round) background_done += run.request.count;
        continue;  // InstallCompactBlock released the run
      }
      auto span = std::find_if(runs_.begin(), runs_.end(), [&](const RunSpan& s) { return s.id == run.id; });
      const bool awaited = span != runs_.end() && (span->purpose == LoadPurpose::kDemand ||
                                                   std::any_of(pending_.begin(), pending_.end(),
                                                               [&](const PendingFault& f) { return f.run == run.id; }));
      if (demand_round != awaited || (!demand_round && background_done >= background_pages)) {
        ++i;
        continue;
      }
      FillResult result = InstallRun(run, report);
      if (auto stop = StopsLoop(result, report)) return *stop;
      if (!demand_round) background_done += run.request.count;
      // InstallRun released the run: ready() lost entry i.
    }
  }
  return true;
}

FaultEngine::FillResult FaultEngine::InstallRun(const LoadedRun& run, ServeReport* report) {
  auto span_it = std::find_if(runs_.begin(), runs_.end(), [&](const RunSpan& s) { return s.id == run.id; });
  RunSpan& span = *span_it;
  // A copy error of a background run is not the session's failure: prefetch
  // skips the page, completion answers with it.
  ServeReport own;
  ServeReport* install_report = span.purpose == LoadPurpose::kDemand ? report : &own;
  const uint64_t ps = run.request.page_size;
  const GuestRegionMapping& r = layout_.regions()[span.region];
  // The pages still missing and not removed go in; any other page changed
  // while the run loaded (a fault, or a remove) and is left as it is.
  for (uint64_t i = 0; i < run.valid_pages;) {
    const uint64_t page = span.first_page + i;
    const uint64_t addr = r.base_host_virt_addr + page * ps;
    if (presence_.IsPresent(span.region, page) || removed_.Overlaps(addr, addr + ps)) {
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < run.valid_pages) {
      const uint64_t a = r.base_host_virt_addr + (span.first_page + j) * ps;
      if (presence_.IsPresent(span.region, span.first_page + j) || removed_.Overlaps(a, a + ps)) break;
      ++j;
    }
    uint64_t installed = 0;
    FillResult result =
        InstallPages(span.region, page, j - i, run.bytes + i * ps, run.zero + i, &installed, install_report);
    span.installed += installed;
    // What a demand run brought in is the working set: the faulting page
    // and, with fault-around, the neighbours its stream went on to. Recorded
    // here, once per page, in the order they went in.
    if (span.purpose == LoadPurpose::kDemand) RecordBroughtIn(span.region, page, installed);
    if (result == FillResult::kRetry || result == FillResult::kVmGone) return result;
    if (result == FillResult::kFailed) break;  // a copy error, recorded
    i = j;
  }
  switch (span.purpose) {
    case LoadPurpose::kDemand:
      if (span.installed > 1) counters_.Add(&FaultCounters::fault_around_pages, span.installed - 1);
      break;
    case LoadPurpose::kPrefetch: counters_.Add(&FaultCounters::prefetch_pages, span.installed); break;
    case LoadPurpose::kCompletion: counters_.Add(&FaultCounters::completion_pages, span.installed); break;
  }
  if (own.failure && span.purpose == LoadPurpose::kCompletion && !completion_failure_)
    completion_failure_ = own.failure;
  if (run.valid_pages < run.request.count) {
    Status why = run.status.WithContext(
        fmt::format("cannot load the page at {:#x}", r.base_host_virt_addr + (span.first_page + run.valid_pages) * ps));
    if (span.purpose == LoadPurpose::kCompletion && !completion_failure_) completion_failure_ = why;
    if (span.purpose == LoadPurpose::kPrefetch) spdlog::debug("prefetch skips: {}", why.ToString());
    // A demand fault whose page could not be loaded fails below.
    if (span.purpose == LoadPurpose::kDemand) {
      for (const PendingFault& f : pending_) {
        if (f.run == run.id) {
          RecordFailure(report, why);
          break;
        }
      }
    }
  }
  // The faults this run was for: served if their page is in now (its
  // install woke them); failed if it was their demand run; otherwise they
  // start a load of their own.
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->run != run.id) {
      ++it;
      continue;
    }
    auto loc = layout_.Locate(it->address);
    if (loc && presence_.IsPresent(loc->region, loc->page_index)) {
      FaultServed(*it, *loc, /*brought_in=*/false);  // a demand run's pages were recorded as they went in
      it = pending_.erase(it);
    } else if (span.purpose == LoadPurpose::kDemand && loc && loc->page_index - span.first_page >= run.valid_pages) {
      counters_.Add(&FaultCounters::unservable_faults);
      it = pending_.erase(it);
    } else {
      it->run = 0;
      ++it;
    }
  }
  runs_.erase(span_it);
  loader_->Release(run.id);
  return FillResult::kDone;
}

FaultEngine::FillResult FaultEngine::InstallPages(size_t region, uint64_t first, uint64_t count, const uint8_t* source,
                                                  const uint8_t* zero, uint64_t* installed, ServeReport* report) {
  const GuestRegionMapping& r = layout_.regions()[region];
  const uint64_t ps = r.page_size;
  *installed = 0;
  // Split the pages into ioctls. A stretch of zero pages goes in with
  // UFFDIO_ZEROPAGE when it is long (a hole, untouched memory) or is all of
  // them; a lone zero page among data is cheaper copied with its neighbours
  // than given an ioctl of its own. Huge pages have no ZEROPAGE: their zeros
  // are copied from a zero page of their size, one ioctl each.
  const uint8_t* zero_source = nullptr;
  if (ps != 4096 && std::any_of(zero, zero + count, [](uint8_t z) { return z != 0; })) {
    zero_source = ZeroHugePage(ps, report);
    if (zero_source == nullptr) return FillResult::kFailed;
  }
  auto zero_stretch = [&](uint64_t from) {
    uint64_t end = from;
    while (end < count && zero[end]) ++end;
    return end - from;
  };
  struct Segment {
    uint64_t first, end;
    bool zero;
  };
  std::array<Segment, 64> segments;
  size_t nsegments = 0;
  for (uint64_t i = 0; i < count && nsegments < segments.size();) {
    const uint64_t zeros = zero_stretch(i);
    const bool is_zero = zeros > 0 && (ps != 4096 || zeros >= kMinZeroStretchPages || zeros == count);
    uint64_t j = i + (is_zero ? (ps == 4096 ? zeros : 1) : 0);
    while (!is_zero && j < count) {
      const uint64_t z = zero_stretch(j);
      if (z > 0 && (ps != 4096 || z >= kMinZeroStretchPages)) break;
      j += std::max<uint64_t>(z, 1);
    }
    segments[nsegments++] = {i, j, is_zero};
    i = j;
  }
  count = segments[nsegments - 1].end;  // (pages needing more ioctls than that go in next time)
  // One ioctl wakes its own range; several go in without waking (a vCPU
  // faulting on any of these pages meanwhile keeps sleeping) and then one wake
  // covers them all.
  const bool batched = nsegments > 1;
  const uint64_t run_addr = r.base_host_virt_addr + first * ps;
  FillResult result = FillResult::kDone;
  uint64_t done = 0;
  size_t n = 0;
  while (n < nsegments) {
    const Segment& seg = segments[n];
    const uint64_t i = std::max(seg.first, done);  // past a page EEXIST skipped
    if (i >= seg.end) {
      ++n;
      continue;
    }
    const uint64_t addr = run_addr + i * ps;
    const uint64_t len = (seg.end - i) * ps;
    UffdFillOutcome outcome;
    if (seg.zero && ps == 4096) {
      outcome = uffd_->ZeroPage(addr, len, batched ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0);
    } else {
      const uint8_t* from = seg.zero ? zero_source : source + i * ps;
      outcome = uffd_->Copy(addr, from, len, batched ? UFFDIO_COPY_MODE_DONTWAKE : 0);
    }
    const uint64_t went_in = outcome.bytes / ps;
    for (uint64_t k = i; k < i + went_in; ++k) presence_.MarkPresent(region, first + k);
    counters_.Add(seg.zero ? &FaultCounters::zero_pages : &FaultCounters::pages_copied, went_in);
    if (!seg.zero) counters_.Add(&FaultCounters::bytes_copied, went_in * ps);
    done = i + went_in;
    if (outcome.error == 0) {
      ++n;
      continue;
    }
    PageLocation stuck{region, addr + went_in * ps, r.offset + (first + done) * ps, ps, first + done};
    result = ClassifyOutcome(stuck, outcome, seg.zero ? "UFFDIO_ZEROPAGE run" : "UFFDIO_COPY run", report);
    if (result != FillResult::kDone) break;
    ++done;  // EEXIST: that page is in already; go on after it
  }
  if (batched || result != FillResult::kDone) (void)uffd_->Wake(run_addr, std::max<uint64_t>(done, 1) * ps);
  *installed = done;
  return result;
}

FaultEngine::FillResult FaultEngine::FillZeros(const PageLocation& loc, ServeReport* report, bool* still_there) {
  UffdFillOutcome outcome;
  if (loc.page_size == 4096) {
    outcome = uffd_->ZeroPage(loc.page_addr, loc.page_size);
  } else {
    const uint8_t* zeros = ZeroHugePage(loc.page_size, report);
    if (zeros == nullptr) return FillResult::kFailed;
    outcome = uffd_->Copy(loc.page_addr, zeros, loc.page_size);
  }
  if (outcome.error == 0) counters_.Add(&FaultCounters::zero_pages);
  if (outcome.error == EEXIST && still_there != nullptr) {
    *still_there = true;
    return FillResult::kDone;
  }
  return ClassifyOutcome(loc, outcome, "zero fill", report);
}

const uint8_t* FaultEngine::ZeroHugePage(uint64_t page_size, ServeReport* report) {
  if (!zero_huge_page_.valid() || zero_huge_page_.size() < page_size) {
    // Populated (with the shared zero page): UFFDIO_COPY into hugetlb reads
    // its source with page faults disabled, and an unpopulated source makes
    // the kernel copy through a spare huge page the host may not have.
    auto zeros = MemoryMapping::Map(nullptr, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0,
                                    "zero huge page source");
    if (!zeros.ok()) {
      RecordFailure(report, zeros.status());
      return nullptr;
    }
    zero_huge_page_ = std::move(*zeros);
  }
  return zero_huge_page_.data();
}

FaultEngine::FillResult FaultEngine::ClassifyOutcome(const PageLocation& loc, const UffdFillOutcome& outcome,
                                                     const char* what, ServeReport* report) {
  switch (outcome.error) {
    case 0: presence_.MarkPresent(loc.region, loc.page_index); return FillResult::kDone;
    case EEXIST:
      // Another path installed it first; make sure nobody still sleeps on it.
      presence_.MarkPresent(loc.region, loc.page_index);
      counters_.Add(&FaultCounters::already_present);
      (void)uffd_->Wake(loc.page_addr, loc.page_size);
      return FillResult::kDone;
    case EAGAIN: return FillResult::kRetry;
    case ESRCH: return FillResult::kVmGone;
    default:
      counters_.Add(&FaultCounters::copy_errors);
      RecordFailure(report, Status::FromErrno(outcome.error, fmt::format("{} of {} bytes at {:#x}", what, loc.page_size,
                                                                         loc.page_addr)));
      return FillResult::kFailed;
  }
}

Status FaultEngine::CheckRefault(const PageLocation& loc, uint64_t fault_read_round) {
  if (refaults_.size() >= kMaxRefaultPages && refaults_.count(loc.page_addr) == 0) refaults_.clear();
  Refaults& r = refaults_[loc.page_addr];
  // A fault read before the last wake of its page is a duplicate that raced
  // the install; one read after it means the page went missing again.
  if (r.woken_in_round != 0 && fault_read_round > r.woken_in_round) ++r.count;
  r.woken_in_round = read_round_;
  r.page_size = loc.page_size;
  if (r.count <= kMaxRefaults) return Status::Ok();
  const uint32_t count = r.count;
  refaults_.erase(loc.page_addr);
  return Status::Protocol(fmt::format(
      "the VMM's memory does not match its handshake: the page at {:#x} ({} bytes) faulted again {} times in a row "
      "after the pager installed it and woke its threads (memory discarded without UFFD_EVENT_REMOVE, or registered "
      "with smaller pages than the {} bytes the handshake claimed)",
      loc.page_addr, loc.page_size, count, loc.page_size));
}

void FaultEngine::RecordFailure(ServeReport* report, Status status) {
  UFFD_LOG_RATE_LIMITED(spdlog::level::err, "{}", status.ToString());
  if (!report->failure) report->failure = std::move(status);
}

// ---- Completion ------------------------------------------------------------

void FaultEngine::StartCompletionLoads() {
  const auto& regions = layout_.regions();
  while (populate_region_ < regions.size()) {
    const auto& r = regions[populate_region_];
    const uint64_t pages = r.size / r.page_size;
    const uint64_t max_run = std::max<uint64_t>(1, kMaxRunBytes / r.page_size);
    while (populate_page_ < pages) {
      if (!loader_->CanStart(LoadPurpose::kCompletion, max_run * r.page_size)) return;
      uint64_t count = MissingRunLength(populate_region_, populate_page_, max_run);
      // Pages another run of ours loads are left to it.
      for (uint64_t i = 0; i < count; ++i) {
        if (RunCovering(populate_region_, populate_page_ + i) != nullptr) {
          count = i;
          break;
        }
      }
      if (count == 0) {  // present, removed (zeros once unregistered), or loading
        ++populate_page_;
        continue;
      }
      StartRun(LoadPurpose::kCompletion, populate_region_, populate_page_, count);
      populate_page_ += count;
    }
    ++populate_region_;
    populate_page_ = 0;
  }
}

Status FaultEngine::PopulateStep(size_t max_pages, bool* done, ServeReport* report) {
  *done = false;
  loader_->Poll();
  StartCompletionLoads();
  if (!InstallLoaded(max_pages, report)) {
    report->retry_pending = true;
    return Status::Ok();  // drain events first; installing resumes next step
  }
  if (report->vm_gone) return Status::Unavailable("the VM's address space is gone");
  if (completion_failure_) {
    // The caller answers complete with this; the session goes on serving. A
    // later complete starts over from the first page.
    Status failure = *completion_failure_;
    completion_failure_.reset();
    populate_region_ = 0;
    populate_page_ = 0;
    return failure;
  }
  if (populate_region_ < layout_.regions().size()) return Status::Ok();
  // Every page was started: done once every run of ours is in and nothing
  // is missing any more (a page a demand run loaded may still be on its way).
  for (const RunSpan& span : runs_) {
    if (span.purpose != LoadPurpose::kPrefetch) return Status::Ok();
  }
  for (size_t region = 0; region < layout_.regions().size(); ++region) {
    const auto& r = layout_.regions()[region];
    const uint64_t pages = r.size / r.page_size;
    for (uint64_t page = 0; page < pages;) {
      uint64_t missing = MissingRunLength(region, page, pages - page);
      if (missing > 0) {
        // Missing again (a remove came and went): go round once more.
        populate_region_ = region;
        populate_page_ = page;
        return Status::Ok();
      }
      ++page;
    }
  }
  *done = true;
  return Status::Ok();
}

Status FaultEngine::UnregisterAll() {
  for (const auto& r : layout_.regions()) {
    UFFD_RETURN_IF_ERROR(uffd_->Unregister(r.base_host_virt_addr, r.size));
  }
  return Status::Ok();
}

// ---- Working sets ----------------------------------------------------------

void FaultEngine::StartRecording(size_t max_pages) {
  recording_ = true;
  record_limit_ = max_pages;
}

std::vector<uint64_t> FaultEngine::TakeRecording() {
  recording_ = false;
  return std::move(recorded_);
}

void FaultEngine::SetPrefetchPlan(std::vector<uint64_t> offsets, uint64_t page_size) {
  prefetch_plan_ = std::move(offsets);
  prefetch_page_size_ = page_size;
  prefetch_pos_ = 0;
}

void FaultEngine::SetCompactPlan(CompactWorkingSet compact) {
  prefetch_plan_.clear();
  prefetch_pos_ = 0;
  prefetch_page_size_ = compact.page_size();
  compact_.emplace(std::move(compact));
  compact_next_block_ = 0;
  compact_started_.assign(compact_->blocks(), false);
}

bool FaultEngine::prefetching() const {
  if (prefetch_pos_ < prefetch_plan_.size()) return true;
  if (compact_ && (compact_next_block_ < compact_->blocks() || !compact_runs_.empty())) return true;
  return std::any_of(runs_.begin(), runs_.end(), [](const RunSpan& s) { return s.purpose == LoadPurpose::kPrefetch; });
}

bool FaultEngine::CompactBlockCached(size_t block) const {
  // A few pages spread over the block stand for it: probing each would cost
  // as much as the cache's own lookups when the run loads.
  const auto& offsets = compact_->offsets();
  const uint64_t first = block * CompactWorkingSet::kBlockPages;
  const uint64_t count = compact_->BlockPages(block);
  constexpr uint64_t kProbes = 4;
  for (uint64_t k = 0; k < kProbes; ++k) {
    if (!loader_->CachedOrLoading(offsets[first + k * (count - 1) / (kProbes - 1)], compact_->page_size())) {
      return false;
    }
  }
  return true;
}

void FaultEngine::StartCompactLoads() {
  while (compact_ && compact_next_block_ < compact_->blocks()) {
    const size_t b = compact_next_block_;
    if (compact_started_[b]) {
      ++compact_next_block_;  // a demand fault had it read early
      continue;
    }
    if (!StartCompactBlock(b, /*awaited=*/false)) return;
    ++compact_next_block_;
  }
}

void FaultEngine::StartCompactBlockFor(uint64_t file_offset) {
  if (!compact_ || compact_next_block_ >= compact_->blocks()) return;  // all started, or fallen back
  const std::optional<size_t> block = compact_->BlockOf(file_offset);
  if (!block || compact_started_[*block]) return;
  (void)StartCompactBlock(*block, /*awaited=*/true);
}

bool FaultEngine::StartCompactBlock(size_t b, bool awaited) {
  const uint64_t count = compact_->BlockPages(b);
  if (CompactBlockCached(b)) {
    TakeCompactBlockFromCache(b);
    return true;
  }
  if (!awaited && !loader_->CanStart(LoadPurpose::kPrefetch, count * compact_->page_size())) return false;
  compact_started_[b] = true;
  RunRequest request{LoadPurpose::kPrefetch, 0, compact_->page_size(), count};
  request.source_fd = compact_->fd();
  request.source_offset = compact_->BlockOffset(b);
  request.page_offsets = compact_->offsets().data() + b * CompactWorkingSet::kBlockPages;
  const uint64_t id = loader_->Start(request);
  if (id == 0) {  // another session claimed the block's first page just now: it reads the block
    TakeCompactBlockFromCache(b);
    return true;
  }
  compact_runs_.emplace_back(id, b);
  if (awaited) compact_awaited_.insert(id);
  return true;
}

void FaultEngine::TakeCompactBlockFromCache(size_t b) {
  compact_started_[b] = true;
  // Another session brought these pages in, or is reading them: the shared
  // cache serves them without a read of our own (single flight).
  const auto& offsets = compact_->offsets();
  const auto first = offsets.begin() + static_cast<ptrdiff_t>(b * CompactWorkingSet::kBlockPages);
  prefetch_plan_.insert(prefetch_plan_.end(), first, first + static_cast<ptrdiff_t>(compact_->BlockPages(b)));
  counters_.Add(&FaultCounters::compact_blocks_from_cache);
}

void FaultEngine::FallBackFromCompact(size_t block, const std::string& why) {
  spdlog::warn("compact working set: {}; its pages from block {} on are read from the memory file instead", why, block);
  if (!compact_fell_back_) counters_.Add(&FaultCounters::compact_fallbacks);
  compact_fell_back_ = true;
  const auto& offsets = compact_->offsets();
  std::vector<uint64_t> rest(
      offsets.begin() + static_cast<ptrdiff_t>(std::min(offsets.size(), block * CompactWorkingSet::kBlockPages)),
      offsets.end());
  // Blocks already loading stay theirs: they are checked on their own.
  compact_next_block_ = compact_->blocks();
  prefetch_plan_.insert(prefetch_plan_.end(), rest.begin(), rest.end());
}

FaultEngine::FillResult FaultEngine::InstallCompactBlock(const LoadedRun& run, size_t block) {
  const uint64_t ps = run.request.page_size;
  const uint64_t first = block * CompactWorkingSet::kBlockPages;
  const auto& offsets = compact_->offsets();
  FillResult result = FillResult::kDone;
  const bool intact = run.valid_pages == run.request.count && compact_->BlockIntact(block, run.bytes);
  if (!intact) {
    // Nothing of a block that cannot be trusted goes in; neither do the
    // blocks after it (a damaged file rarely has one bad block).
    FallBackFromCompact(block, run.valid_pages < run.request.count
                                   ? run.status.ToString()
                                   : fmt::format("block {} does not match its hash", block));
    std::vector<uint64_t> own(offsets.begin() + static_cast<ptrdiff_t>(first),
                              offsets.begin() + static_cast<ptrdiff_t>(first + run.request.count));
    prefetch_plan_.insert(prefetch_plan_.begin() + static_cast<ptrdiff_t>(prefetch_pos_), own.begin(), own.end());
  } else {
    // Group the block's pages into runs of consecutive, missing, not removed
    // pages of one region; each run goes in with one ioctl.
    for (uint64_t i = 0; i < run.request.count;) {
      auto loc = layout_.LocateFileOffset(offsets[first + i]);
      if (!loc || loc->page_size != ps || loc->file_offset != offsets[first + i] ||
          MissingRunLength(loc->region, loc->page_index, 1) == 0 || HeldOut(offsets[first + i])) {
        ++i;  // the layout changed since the record, the page is in (or discarded), or held back
        continue;
      }
      uint64_t n = 1;
      while (i + n < run.request.count && offsets[first + i + n] == offsets[first + i] + n * ps &&
             MissingRunLength(loc->region, loc->page_index + n, 1) == 1 && !HeldOut(offsets[first + i + n])) {
        ++n;
      }
      uint64_t installed = 0;
      ServeReport own;  // a copy error here is prefetch's, not the session's: logged, skipped
      result = InstallPages(loc->region, loc->page_index, n, run.bytes + i * ps, run.zero + i, &installed, &own);
      counters_.Add(&FaultCounters::prefetch_pages, installed);
      if (result == FillResult::kRetry || result == FillResult::kVmGone) return result;
      i += std::max<uint64_t>(installed, 1);
    }
  }
  compact_awaited_.erase(run.id);
  compact_runs_.erase(std::find_if(compact_runs_.begin(), compact_runs_.end(),
                                   [&](const std::pair<uint64_t, size_t>& c) { return c.first == run.id; }));
  loader_->Release(run.id, /*vouched=*/intact);  // other sessions get the block's pages only if it is intact
  return result == FillResult::kFailed ? FillResult::kDone : result;
}

void FaultEngine::PrefetchStep(size_t max_pages, ServeReport* report) {
  loader_->Poll();
  StartCompactLoads();
  size_t cached_done = 0;
  // Start loads of the next runs of the plan while there is room.
  while (prefetch_pos_ < prefetch_plan_.size()) {
    const uint64_t offset = prefetch_plan_[prefetch_pos_];
    auto loc = layout_.LocateFileOffset(offset);
    if (!loc || loc->page_size != prefetch_page_size_ || loc->file_offset != offset || HeldOut(offset)) {
      ++prefetch_pos_;  // the layout changed since the record, or the page is held back: skip
      continue;
    }
    // Extend over the plan's consecutive offsets, then keep the missing prefix.
    const uint64_t ps = loc->page_size;
    uint64_t span = 1;
    while (prefetch_pos_ + span < prefetch_plan_.size() && span < kMaxRunBytes / ps &&
           prefetch_plan_[prefetch_pos_ + span] == offset + span * ps &&
           !HeldOut(prefetch_plan_[prefetch_pos_ + span])) {
      ++span;
    }
    uint64_t count = MissingRunLength(loc->region, loc->page_index, span);
    for (uint64_t i = 0; i < count; ++i) {
      if (RunCovering(loc->region, loc->page_index + i) != nullptr) {
        count = i;
        break;
      }
    }
    if (count == 0) {
      ++prefetch_pos_;  // the guest has it already (or discarded it, or it is loading)
      continue;
    }
    // Pages in memory go in now, without a load; a step installs about
    // `max_pages` of them, so demand faults wait at most that long (the
    // budget is checked before looking them up: a lookup is most of the cost).
    if (cached_done >= max_pages) break;
    if (loader_->CachedPrefix(offset, ps, std::min(count, CachedRunLimit(ps)), &cached_pages_) > 0) {
      uint64_t installed = 0;
      ServeReport own;  // a copy error here is prefetch's, not the session's: skipped
      FillResult result =
          InstallCached(loc->region, loc->page_index, cached_pages_, LoadPurpose::kPrefetch, &installed, &own);
      counters_.Add(&FaultCounters::prefetch_pages, installed);
      if (auto stop = StopsLoop(result, report)) {
        if (!*stop) report->retry_pending = true;
        return;
      }
      prefetch_pos_ += cached_pages_.size();
      cached_done += cached_pages_.size();
      continue;
    }
    if (!loader_->CanStart(LoadPurpose::kPrefetch, count * ps)) break;
    StartRun(LoadPurpose::kPrefetch, loc->region, loc->page_index, count);
    prefetch_pos_ += count;
  }
  if (!InstallLoaded(max_pages, report)) report->retry_pending = true;
}

}  // namespace uffdpager
