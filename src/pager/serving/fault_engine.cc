#include "pager/serving/fault_engine.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace uffdpager {

using Clock = std::chrono::steady_clock;

FaultEngine::FaultEngine(Userfaultfd* uffd, MemoryLayout layout, std::shared_ptr<BackingFile> backing, PageCache* cache,
                         uint64_t cache_namespace, CounterSink counters, FaultEngineOptions options)
    : uffd_(uffd),
      layout_(std::move(layout)),
      backing_(std::move(backing)),
      cache_(cache),
      cache_namespace_(cache_namespace),
      counters_(counters),
      options_(options),
      presence_(layout_.regions()) {}

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
    stalled = !ServePending(&report);
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
          pending_.push_back({m.arg.pagefault.address, now, read_round_});
          break;
        case UFFD_EVENT_REMOVE: HandleRemove(m.arg.remove.start, m.arg.remove.end); break;
        default: spdlog::warn("ignoring unexpected userfaultfd event {}", m.event); break;
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

bool FaultEngine::ServePending(ServeReport* report) {
  while (!pending_.empty()) {
    const PendingFault fault = pending_.front();
    auto loc = layout_.Locate(fault.address);
    FillResult result;
    if (!loc) {
      RecordFailure(report, Status::InvalidArgument(
                                fmt::format("fault at {:#x} is outside every registered region", fault.address)));
      result = FillResult::kFailed;
    } else {
      serving_round_ = fault.read_round;
      bool was_present = presence_.IsPresent(loc->region, loc->page_index);
      result = options_.fault_around_max_pages > 0 ? FaultAround(*loc, report) : FillPage(*loc, report);
      if (recording_ && !was_present && result == FillResult::kDone && recorded_.size() < record_limit_) {
        recorded_.push_back(loc->file_offset);
      }
    }
    if (result == FillResult::kRetry) {
      counters_.Add(&FaultCounters::eagain_retries);
      return false;
    }
    if (result == FillResult::kVmGone) {
      report->vm_gone = true;
      return true;
    }
    pending_.pop_front();
    if (result == FillResult::kFailed) counters_.Add(&FaultCounters::unservable_faults);
    if (result == FillResult::kDone) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - fault.read_at).count();
      counters_.Add(&FaultCounters::fault_service_ns_total, static_cast<uint64_t>(ns));
      counters_.Max(&FaultCounters::fault_service_ns_max, static_cast<uint64_t>(ns));
    }
  }
  return true;
}

FaultEngine::FillResult FaultEngine::FillPage(const PageLocation& loc, ServeReport* report) {
  if (presence_.IsPresent(loc.region, loc.page_index)) {
    if (Status loop = CheckRefault(loc); !loop.ok()) {
      RecordFailure(report, std::move(loop));
      return FillResult::kFailed;  // its thread stays blocked: no more spinning
    }
    // A duplicate fault on a page we already installed (several threads
    // touched it before the copy woke them): a wake is all it needs.
    counters_.Add(&FaultCounters::already_present);
    (void)uffd_->Wake(loc.page_addr, loc.page_size);
    return FillResult::kDone;
  }
  if (removed_.Overlaps(loc.page_addr, loc.page_addr + loc.page_size)) return FillZeros(loc, report);

  auto page = LoadPage(loc.file_offset, loc.page_size);
  if (!page.ok()) {
    RecordFailure(report, page.status().WithContext(fmt::format("cannot serve fault at {:#x}", loc.page_addr)));
    return FillResult::kFailed;
  }
  // All-zero pages (holes, or zeros found on load) need no bytes copied.
  if ((*page)->is_zero()) return FillZeros(loc, report);
  auto outcome = uffd_->Copy(loc.page_addr, (*page)->data(), loc.page_size);
  if (outcome.error == 0) {
    counters_.Add(&FaultCounters::pages_copied);
    counters_.Add(&FaultCounters::bytes_copied, loc.page_size);
  }
  return ClassifyOutcome(loc, outcome, "UFFDIO_COPY", report);
}

Result<PageRef> FaultEngine::LoadPage(uint64_t file_offset, uint64_t page_size) {
  bool hit = false;
  auto page = cache_->GetOrLoad(
      PageKey{cache_namespace_, file_offset, page_size},
      [&](CachedPage& out) {
        if (cache_->zero_pages() == ZeroPageMode::kDetect && backing_->IsHole(file_offset, page_size)) {
          return Status::Ok();  // zeros, no read
        }
        return ReadBacking(file_offset, page_size, out.mutable_data());
      },
      &hit);
  if (page.ok()) counters_.Add(hit ? &FaultCounters::cache_hits : &FaultCounters::cache_misses);
  return page;
}

template <typename Read>
Status FaultEngine::CountBackingRead(Read&& read) {
  auto start = Clock::now();
  uint64_t bytes = 0;
  Status st = read(&bytes);
  // One latency sample per read the file really saw (a range of holes is none).
  if (bytes > 0 || !st.ok()) {
    counters_.Add(&FaultCounters::backing_read_ns_total,
                  static_cast<uint64_t>((Clock::now() - start) / std::chrono::nanoseconds(1)));
  }
  counters_.Add(&FaultCounters::backing_bytes_read, bytes);
  return st;
}

Status FaultEngine::ReadBacking(uint64_t offset, uint64_t length, uint8_t* out) {
  return CountBackingRead([&](uint64_t* bytes) { return backing_->ReadRange(offset, out, length, bytes); });
}

FaultEngine::FillResult FaultEngine::FillZeros(const PageLocation& loc, ServeReport* report) {
  UffdFillOutcome outcome;
  if (loc.page_size == 4096) {
    outcome = uffd_->ZeroPage(loc.page_addr, loc.page_size);
  } else {
    if (!zero_huge_page_.valid() || zero_huge_page_.size() < loc.page_size) {
      // Populated (with the shared zero page): UFFDIO_COPY into hugetlb reads
      // its source with page faults disabled, and an unpopulated source makes
      // the kernel copy through a spare huge page the host may not have.
      auto zeros = MemoryMapping::Map(nullptr, loc.page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1,
                                      0, "zero huge page source");
      if (!zeros.ok()) {
        RecordFailure(report, zeros.status());
        return FillResult::kFailed;
      }
      zero_huge_page_ = std::move(*zeros);
    }
    outcome = uffd_->Copy(loc.page_addr, zero_huge_page_.data(), loc.page_size);
  }
  if (outcome.error == 0) counters_.Add(&FaultCounters::zero_pages);
  return ClassifyOutcome(loc, outcome, "zero fill", report);
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

Status FaultEngine::CheckRefault(const PageLocation& loc) {
  if (refaults_.size() >= kMaxRefaultPages && refaults_.count(loc.page_addr) == 0) refaults_.clear();
  Refaults& r = refaults_[loc.page_addr];
  // A fault read before the last wake of its page is a duplicate that raced
  // the install; one read after it means the page went missing again.
  if (r.woken_in_round != 0 && serving_round_ > r.woken_in_round) ++r.count;
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
  spdlog::error("{}", status.ToString());
  if (!report->failure) report->failure = std::move(status);
}

Status FaultEngine::PopulateStep(size_t max_pages, bool* done, ServeReport* report) {
  const auto& regions = layout_.regions();
  size_t installed = 0;
  *done = false;
  while (populate_region_ < regions.size()) {
    const auto& r = regions[populate_region_];
    const uint64_t pages = r.size / r.page_size;
    const uint64_t max_run = std::max<uint64_t>(1, kMaxRunBytes / r.page_size);
    while (populate_page_ < pages) {
      if (installed >= max_pages) return Status::Ok();
      uint64_t count = MissingRunLength(populate_region_, populate_page_, max_run);
      if (count == 0) {  // present, or removed (reads as zeros once unregistered)
        ++populate_page_;
        continue;
      }
      uint64_t done_pages = 0;
      ServeReport step;  // kept apart: a demand fault's failure is not completion's
      FillResult result = PopulateRun(populate_region_, populate_page_, count, &done_pages, &step, RunUse::kCompletion);
      populate_page_ += done_pages;
      installed += done_pages;
      counters_.Add(&FaultCounters::completion_pages, done_pages);
      if (result == FillResult::kRetry) {
        counters_.Add(&FaultCounters::eagain_retries);
        report->retry_pending = true;
        return Status::Ok();  // drain events first; resume at this page
      }
      if (result == FillResult::kVmGone) {
        report->vm_gone = true;
        return Status::Unavailable("the VM's address space is gone");
      }
      if (result == FillResult::kFailed) {
        // The caller answers complete with this; the session goes on serving.
        return step.failure ? *step.failure : Status::Internal("completion failed");
      }
    }
    ++populate_region_;
    populate_page_ = 0;
  }
  *done = true;
  return Status::Ok();
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

FaultEngine::FillResult FaultEngine::FaultAround(const PageLocation& loc, ServeReport* report) {
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
  uint64_t max = std::min(stream->window, std::max<uint64_t>(1, kMaxRunBytes / loc.page_size));
  uint64_t count = MissingRunLength(loc.region, loc.page_index, max);
  if (count <= 1) {  // present, removed, or alone: the plain path
    stream->next_addr = loc.page_addr + loc.page_size;
    return FillPage(loc, report);
  }
  uint64_t installed = 0;
  FillResult result = PopulateRun(loc.region, loc.page_index, count, &installed, report, RunUse::kFaultAround);
  if (installed > 1) counters_.Add(&FaultCounters::fault_around_pages, installed - 1);
  stream->next_addr = loc.page_addr + std::max<uint64_t>(installed, 1) * loc.page_size;
  return result;
}

Status FaultEngine::EnsureStaging() {
  if (staging_.valid()) return Status::Ok();
  auto staging = MemoryMapping::Map(nullptr, kMaxRunBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                                    "run staging buffer");
  if (!staging.ok()) return staging.status();
  staging_ = std::move(*staging);
  return Status::Ok();
}

BackingMapping* FaultEngine::MappedBacking() {
  if (!mapping_tried_) {
    mapping_tried_ = true;
    auto mapping = BackingMapping::Map(backing_);
    if (mapping.ok()) {
      mapped_backing_ = std::make_unique<BackingMapping>(std::move(*mapping));
    } else {
      spdlog::warn("{}; completion reads through a buffer instead", mapping.status().ToString());
    }
  }
  return mapped_backing_.get();
}

Status FaultEngine::LoadRun(uint64_t file_offset, uint64_t page_size, uint64_t count, RunUse use,
                            const uint8_t** source, uint64_t* valid_pages, bool* mapped) {
  *mapped = false;
  *valid_pages = 0;
  BackingMapping* mapping = use == RunUse::kCompletion ? MappedBacking() : nullptr;
  if (mapping == nullptr) {
    UFFD_RETURN_IF_ERROR(EnsureStaging());
    *source = staging_.data();
    return ReadRunIntoStaging(file_offset, page_size, count, use, valid_pages);
  }
  // Completion keeps nothing in the shared cache, so it needs no staging
  // copy either: the pages go from the page cache to the VM in one copy.
  *mapped = true;
  *source = mapping->at(file_offset);
  staging_zero_.assign(count, 0);
  Status st = CountBackingRead([&](uint64_t* bytes) { return mapping->Load(file_offset, count * page_size, bytes); });
  if (st.ok() && cache_->zero_pages() == ZeroPageMode::kDetect) {
    st = mapping->FindZeroPages(file_offset, page_size, count, staging_zero_.data());
  }
  if (st.ok()) *valid_pages = count;
  return st;
}

Status FaultEngine::ReadRunIntoStaging(uint64_t file_offset, uint64_t page_size, uint64_t count, RunUse use,
                                       uint64_t* valid_pages) {
  RangeReader reader = [this](uint64_t offset, uint64_t length, uint8_t* out) {
    return ReadBacking(offset, length, out);
  };
  RunReadResult result;
  Status st = cache_->ReadRun(PageRun{cache_namespace_, file_offset, page_size, count},
                              use == RunUse::kCompletion ? RunKeep::kNone : RunKeep::kShare, reader, staging_.data(),
                              &staging_zero_, &result);
  counters_.Add(&FaultCounters::cache_hits, result.hits);
  counters_.Add(&FaultCounters::cache_misses, result.misses);
  *valid_pages = result.valid_pages;
  return st;
}

uint64_t FaultEngine::ZeroStretch(uint64_t from, uint64_t count) const {
  uint64_t end = from;
  while (end < count && staging_zero_[end]) ++end;
  return end - from;
}

FaultEngine::FillResult FaultEngine::PopulateRun(size_t region, uint64_t first, uint64_t count, uint64_t* installed,
                                                 ServeReport* report, RunUse use) {
  const GuestRegionMapping& r = layout_.regions()[region];
  const uint64_t ps = r.page_size;
  *installed = 0;
  const uint8_t* source = nullptr;
  uint64_t valid = 0;
  bool mapped = false;
  Status loaded = LoadRun(r.offset + first * ps, ps, count, use, &source, &valid, &mapped);
  // Whatever happens below, the mapped source's page tables go once the
  // run is in.
  struct ReleaseOnExit {
    BackingMapping* mapping;
    uint64_t offset, length;
    ~ReleaseOnExit() {
      if (mapping) mapping->Release(offset, length);
    }
  } release{mapped ? mapped_backing_.get() : nullptr, r.offset + first * ps, count * ps};
  if (!loaded.ok()) {
    // Fault-around and prefetch install what could be read; completion, and
    // any run whose first page is unreadable, fail.
    if (valid == 0 || use == RunUse::kCompletion) {
      RecordFailure(report, loaded.WithContext(fmt::format("cannot load the page at {:#x}",
                                                           r.base_host_virt_addr + (first + valid) * ps)));
    }
    count = valid;
  }
  if (count == 0) return FillResult::kFailed;
  // Split the run into ioctls. A stretch of zero pages goes in with
  // UFFDIO_ZEROPAGE when it is long (a hole, untouched memory) or is the whole
  // run; a lone zero page among data is cheaper copied with its neighbours
  // than given an ioctl of its own.
  struct Segment {
    uint64_t first, end;
    bool zero;
  };
  std::array<Segment, 64> segments;
  size_t nsegments = 0;
  for (uint64_t i = 0; i < count && nsegments < segments.size();) {
    const uint64_t zeros = ps == 4096 ? ZeroStretch(i, count) : 0;
    const bool zero = zeros > 0 && (zeros >= kMinZeroStretchPages || zeros == count);
    uint64_t j = i + (zero ? zeros : 0);
    while (!zero && j < count) {
      const uint64_t z = ps == 4096 ? ZeroStretch(j, count) : 0;
      if (z >= kMinZeroStretchPages) break;
      j += std::max<uint64_t>(z, 1);
    }
    segments[nsegments++] = {i, j, zero};
    i = j;
  }
  count = segments[nsegments - 1].end;  // (a run needing more ioctls than that ends early)
  // One ioctl wakes its own range; several go in without waking (a vCPU
  // faulting on any of these pages meanwhile keeps sleeping) and then one wake
  // covers the run.
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
    UffdFillOutcome outcome = seg.zero
                                  ? uffd_->ZeroPage(addr, len, batched ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0)
                                  : uffd_->Copy(addr, source + i * ps, len, batched ? UFFDIO_COPY_MODE_DONTWAKE : 0);
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
  if (result != FillResult::kDone) return result;
  return report->failure ? FillResult::kFailed : FillResult::kDone;
}

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
  prefetch_cursor_ = 0;
  prefetch_window_.clear();
  prefetch_window_pos_ = 0;
}

bool FaultEngine::prefetching() const {
  return prefetch_window_pos_ < prefetch_window_.size() || prefetch_cursor_ < prefetch_plan_.size();
}

bool FaultEngine::RefillPrefetchWindow() {
  if (prefetch_cursor_ >= prefetch_plan_.size()) return false;
  // The plan is in first-touch order, which interleaves the vCPUs' streams
  // and scatters neighbouring pages far apart. Installing the next window of
  // it in file order turns that back into long runs (one ioctl each), while
  // the window keeps early-touched pages early.
  const size_t take = std::min(kPrefetchWindowPages, prefetch_plan_.size() - prefetch_cursor_);
  prefetch_window_.assign(prefetch_plan_.begin() + static_cast<ptrdiff_t>(prefetch_cursor_),
                          prefetch_plan_.begin() + static_cast<ptrdiff_t>(prefetch_cursor_ + take));
  prefetch_cursor_ += take;
  std::sort(prefetch_window_.begin(), prefetch_window_.end());
  prefetch_window_.erase(std::unique(prefetch_window_.begin(), prefetch_window_.end()), prefetch_window_.end());
  prefetch_window_pos_ = 0;
  return true;
}

void FaultEngine::PrefetchStep(size_t max_pages, ServeReport* report) {
  size_t installed = 0;
  size_t runs = 0;
  // Bounded in pages and in ioctls: a scattered plan goes in one page per
  // run, and a demand fault should not wait behind hundreds of those.
  while (installed < max_pages && runs < kPrefetchRunsPerStep) {
    if (prefetch_window_pos_ >= prefetch_window_.size() && !RefillPrefetchWindow()) return;
    const uint64_t offset = prefetch_window_[prefetch_window_pos_];
    auto loc = layout_.LocateFileOffset(offset);
    if (!loc || loc->page_size != prefetch_page_size_ || loc->file_offset != offset) {
      ++prefetch_window_pos_;  // the layout changed since the record: skip
      continue;
    }
    // Extend over the window's consecutive offsets, then keep the missing prefix.
    const uint64_t ps = loc->page_size;
    uint64_t span = 1;
    while (prefetch_window_pos_ + span < prefetch_window_.size() && span < kMaxRunBytes / ps &&
           prefetch_window_[prefetch_window_pos_ + span] == offset + span * ps) {
      ++span;
    }
    uint64_t count = MissingRunLength(loc->region, loc->page_index, span);
    if (count == 0) {
      ++prefetch_window_pos_;  // the guest has it already (or discarded it)
      continue;
    }
    uint64_t done = 0;
    ServeReport step;  // a page prefetch cannot load is not the session's failure
    FillResult result = PopulateRun(loc->region, loc->page_index, count, &done, &step, RunUse::kPrefetch);
    counters_.Add(&FaultCounters::prefetch_pages, done);
    installed += done;
    ++runs;
    if (result == FillResult::kRetry) {
      prefetch_window_pos_ += done;
      counters_.Add(&FaultCounters::eagain_retries);
      report->retry_pending = true;
      return;
    }
    if (result == FillResult::kVmGone) {
      report->vm_gone = true;
      return;
    }
    prefetch_window_pos_ += std::max<uint64_t>(done, 1);
  }
}

Status FaultEngine::UnregisterAll() {
  for (const auto& r : layout_.regions()) {
    UFFD_RETURN_IF_ERROR(uffd_->Unregister(r.base_host_virt_addr, r.size));
  }
  return Status::Ok();
}

}  // namespace uffdpager
