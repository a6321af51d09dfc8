// UringReader: reads of files, and faulting-in of mappings, through one
// io_uring: many in flight at once, their completions reaped without
// waiting. A session's thread submits the reads its faults, prefetch and
// completion need and goes on serving; storage latency then overlaps across
// faults and vCPUs instead of adding up.
//
// Owned and used by one thread; not thread-safe. Buffers and mappings named
// in a request must stay valid until its completion is reaped (or the reader
// is destroyed, which waits for every request in flight).
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager {

class UringReader {
 public:
  struct Completion {
    uint64_t tag = 0;
    Status status;
    uint64_t bytes = 0;  // bytes read (0 for an advice)
  };

  // `depth`: how many requests may be in flight at once.
  static Result<std::unique_ptr<UringReader>> Create(unsigned depth);
  ~UringReader();
  UringReader(const UringReader&) = delete;
  UringReader& operator=(const UringReader&) = delete;

  // Readable (POLLIN) when completions are waiting to be reaped.
  int poll_fd() const { return ring_.ring_fd; }
  unsigned in_flight() const { return in_flight_; }
  unsigned depth() const { return static_cast<unsigned>(slots_.size()); }
  bool full() const { return in_flight_ >= slots_.size(); }

  // Reads exactly `length` bytes at `offset` of `fd` into `buffer`: a short
  // read is continued; the end of the file before `length` is an error.
  // REQUIRES: !full().
  void Read(int fd, uint64_t offset, uint64_t length, uint8_t* buffer, uint64_t tag);
  // madvise(`advice`) of [addr, addr+length) in the kernel's worker, e.g.
  // MADV_POPULATE_READ to fault a file mapping in without blocking here.
  // REQUIRES: !full().
  void Advise(void* addr, uint64_t length, int advice, uint64_t tag);
  // Hands the requests queued since the last call to the kernel. Reads of
  // pages already in the page cache usually complete during this call.
  Status Submit();
  // Appends every finished request to *out, without waiting.
  void Reap(std::vector<Completion>* out);

 private:
  struct Slot {
    bool busy = false;
    bool advice = false;
    int fd = -1;
    uint64_t offset = 0;
    uint64_t length = 0;
    uint64_t done = 0;
    uint8_t* buffer = nullptr;
    uint64_t tag = 0;
  };

  UringReader() = default;
  size_t TakeSlot();
  void QueueRead(size_t slot);
  // Waits for every request in flight (at destruction).
  void Drain();

  io_uring ring_{};
  bool initialized_ = false;
  std::vector<Slot> slots_;
  std::vector<size_t> free_slots_;
  unsigned in_flight_ = 0;
  unsigned queued_ = 0;  // in the submission queue, not yet submitted
};

}  // namespace uffdpager
