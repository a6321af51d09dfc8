#include "pager/storage/uring_reader.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace uffdpager {

Result<std::unique_ptr<UringReader>> UringReader::Create(unsigned depth) {
  if (depth == 0) return Status::InvalidArgument("an io_uring needs a depth of at least 1");
  std::unique_ptr<UringReader> reader(new UringReader());
  int rc = io_uring_queue_init(depth, &reader->ring_, 0);
  if (rc < 0) return Status::FromErrno(-rc, fmt::format("io_uring_queue_init({})", depth));
  reader->initialized_ = true;
  reader->slots_.resize(depth);
  for (size_t i = depth; i-- > 0;) reader->free_slots_.push_back(i);
  return reader;
}

UringReader::~UringReader() {
  if (!initialized_) return;
  Drain();
  io_uring_queue_exit(&ring_);
}

void UringReader::Drain() {
  (void)Submit();
  std::vector<Completion> ignored;
  while (in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc < 0 && rc != -EINTR) break;  // nothing more will come back
    Reap(&ignored);
  }
}

size_t UringReader::TakeSlot() {
  size_t slot = free_slots_.back();
  free_slots_.pop_back();
  ++in_flight_;
  return slot;
}

void UringReader::QueueRead(size_t slot) {
  Slot& s = slots_[slot];
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  // A slot is taken for every request and the ring has one entry per slot,
  // so the submission queue cannot be full here.
  io_uring_prep_read(sqe, s.fd, s.buffer + s.done, static_cast<unsigned>(s.length - s.done),
                     static_cast<__u64>(s.offset + s.done));
  io_uring_sqe_set_data64(sqe, slot);
  ++queued_;
}

void UringReader::Read(int fd, uint64_t offset, uint64_t length, uint8_t* buffer, uint64_t tag) {
  size_t slot = TakeSlot();
  slots_[slot] = Slot{true, false, fd, offset, length, 0, buffer, tag};
  QueueRead(slot);
}

void UringReader::Advise(void* addr, uint64_t length, int advice, uint64_t tag) {
  size_t slot = TakeSlot();
  slots_[slot] = Slot{true, true, -1, 0, length, 0, static_cast<uint8_t*>(addr), tag};
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  io_uring_prep_madvise(sqe, addr, static_cast<off_t>(length), advice);
  io_uring_sqe_set_data64(sqe, slot);
  ++queued_;
}

Status UringReader::Submit() {
  while (queued_ > 0) {
    int rc = io_uring_submit(&ring_);
    if (rc == -EINTR || rc == -EAGAIN) continue;
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit");
    queued_ -= std::min<unsigned>(queued_, static_cast<unsigned>(rc));
  }
  return Status::Ok();
}

void UringReader::Reap(std::vector<Completion>* out) {
  io_uring_cqe* cqe = nullptr;
  bool requeued = false;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
    size_t slot = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    Slot& s = slots_[slot];
    Status status;
    if (res < 0) {
      status = s.advice ? Status::FromErrno(-res, fmt::format("madvise of {} bytes", s.length))
                        : Status::FromErrno(-res, fmt::format("read {} bytes at offset {}", s.length, s.offset));
    } else if (!s.advice) {
      if (res == 0) {
        status = Status::Error(ErrorCode::kIoError,
                               fmt::format("the file ends before offset {} (wanted {} bytes at offset {}; was it "
                                           "truncated?)",
                                           s.offset + s.done, s.length, s.offset));
      } else {
        s.done += static_cast<uint64_t>(res);
        if (s.done < s.length) {  // a short read: go on where it stopped
          QueueRead(slot);
          requeued = true;
          continue;
        }
      }
    }
    out->push_back(Completion{s.tag, std::move(status), s.advice ? 0 : s.done});
    s.busy = false;
    free_slots_.push_back(slot);
    --in_flight_;
  }
  if (requeued) (void)Submit();
}

}  // namespace uffdpager
