// The baselines the pager is measured against, built from nothing but the
// kernel's userfaultfd: a minimal single-purpose fault handler, and raw
// batched UFFDIO_COPY of a whole file. Both serve from an mmap of the file
// that is already in memory, so they are the floor no real pager can beat.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "common/userfaultfd.h"
#include "uffdpager/status.h"

namespace uffdpager::bench {

// The whole snapshot file mapped read-only and pre-faulted (MAP_POPULATE),
// so reading it never faults during a measurement.
Result<MemoryMapping> MapSnapshotPopulated(const std::string& path, uint64_t bytes);

// One region of anonymous memory registered with a userfaultfd of our own,
// laid out as Firecracker lays out guest memory.
struct RegisteredRegion {
  MemoryMapping memory;
  Userfaultfd uffd;
};
Result<RegisteredRegion> RegisterRegion(uint64_t bytes);

// One thread: poll the uffd, read ONE event, UFFDIO_COPY one 4 KiB page,
// repeat. No cache, no queue, no bookkeeping: what a fault round trip costs on
// this machine. The page comes from the snapshot mapped in memory, or from
// one `pread` of the memory file. Several handlers may serve one uffd: each
// takes the faults it reads.
class MinimalHandler {
 public:
  // Serves from `source`, the snapshot mapped in memory.
  MinimalHandler(Userfaultfd& uffd, uintptr_t region_base, const uint8_t* source);
  // Serves from the memory file `fd`, one `pread` of the faulting page each.
  MinimalHandler(Userfaultfd& uffd, uintptr_t region_base, int fd);
  ~MinimalHandler();  // stops and joins the thread

  MinimalHandler(const MinimalHandler&) = delete;
  MinimalHandler& operator=(const MinimalHandler&) = delete;

  Status Start();
  void Stop();
  uint64_t faults_served() const { return served_; }
  // The first read or copy error, if any (the client would hang on it; the
  // harness checks this after a bounded wait). Read it after Stop.
  int error() const { return error_; }

 private:
  void Run();

  Userfaultfd& uffd_;
  const uintptr_t base_;
  const uint8_t* const source_ = nullptr;
  const int fd_ = -1;
  UniqueFd stop_fd_;
  std::thread thread_;
  uint64_t served_ = 0;
  int error_ = 0;
};

// Copies the whole file into a freshly registered region with UFFDIO_COPY in
// `batch_bytes` batches (nothing touches the region: this is the kernel's
// population speed, with no faults and no pager). Returns the copy time.
Result<std::chrono::nanoseconds> RawBatchedCopy(const MemoryMapping& source, uint64_t batch_bytes);

// The copy floor of a restore: UFFDIO_COPY of exactly the pages in
// `sorted_pages` (4 KiB page indices of `source`, ascending, distinct) into a
// freshly registered region, each run of consecutive pages in one ioctl of at
// most `batch_bytes`, split between `threads` threads by page count. Nothing
// faults and nothing is read from a file: no userfaultfd restore of that
// working set can install it faster on this machine. Returns the copy time.
Result<std::chrono::nanoseconds> RawWorkingSetCopy(const MemoryMapping& source,
                                                   const std::vector<uint64_t>& sorted_pages, uint64_t batch_bytes,
                                                   unsigned threads);

}  // namespace uffdpager::bench
