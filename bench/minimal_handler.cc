#include "minimal_handler.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>

#include "common/guest_memory.h"

namespace uffdpager::bench {

Result<MemoryMapping> MapSnapshotPopulated(const std::string& path, uint64_t bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + path);
  return MemoryMapping::Map(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd.get(), 0, "snapshot file");
}

Result<RegisteredRegion> RegisterRegion(uint64_t bytes) {
  RegisteredRegion region;
  auto memory = MemoryMapping::MapAlignedAnonymous(bytes, kRegionAlignment, MAP_NORESERVE);
  if (!memory.ok()) return memory.status();
  region.memory = std::move(*memory);
  auto uffd = Userfaultfd::Create(O_CLOEXEC | O_NONBLOCK);
  if (!uffd.ok()) return uffd.status();
  region.uffd = std::move(*uffd);
  if (auto api = region.uffd.NegotiateApi(0); !api.ok()) return api.status();
  if (auto reg = region.uffd.RegisterMissing(region.memory.address(), bytes); !reg.ok()) return reg.status();
  return region;
}

MinimalHandler::MinimalHandler(Userfaultfd& uffd, uintptr_t region_base, const uint8_t* source)
    : uffd_(uffd), base_(region_base), source_(source) {}

MinimalHandler::MinimalHandler(Userfaultfd& uffd, uintptr_t region_base, int fd)
    : uffd_(uffd), base_(region_base), fd_(fd) {}

MinimalHandler::~MinimalHandler() { Stop(); }

Status MinimalHandler::Start() {
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd_) return Status::FromErrno(errno, "eventfd");
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void MinimalHandler::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
  thread_.join();
}

void MinimalHandler::Run() {
  alignas(4096) uint8_t scratch[4096];
  pollfd fds[2] = {{uffd_.fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    uffd_msg msg;
    // EAGAIN: a spurious wake, or another handler took the fault.
    if (::read(uffd_.fd(), &msg, sizeof(msg)) != ssize_t(sizeof(msg))) continue;
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uintptr_t page = msg.arg.pagefault.address & ~uintptr_t(4095);
    const uint8_t* bytes = source_ + (page - base_);
    if (source_ == nullptr) {
      if (::pread(fd_, scratch, sizeof(scratch), static_cast<off_t>(page - base_)) != ssize_t(sizeof(scratch))) {
        if (error_ == 0) error_ = errno != 0 ? errno : EIO;
        continue;
      }
      bytes = scratch;
    }
    UffdFillOutcome out = uffd_.Copy(page, bytes, 4096);
    if (out.error == EEXIST) (void)uffd_.Wake(page, 4096);  // in already: nobody may sleep on it
    if (out.error != 0 && out.error != EEXIST && error_ == 0) error_ = out.error;
    ++served_;
  }
}

Result<std::chrono::nanoseconds> RawBatchedCopy(const MemoryMapping& source, uint64_t batch_bytes) {
  // Every page of the file is the working set whose copy floor is the whole
  // file's: consecutive pages, so batch_bytes at a time.
  std::vector<uint64_t> pages(source.size() / 4096);
  std::iota(pages.begin(), pages.end(), uint64_t{0});
  return RawWorkingSetCopy(source, pages, batch_bytes, 1);
}

Result<std::chrono::nanoseconds> RawWorkingSetCopy(const MemoryMapping& source,
                                                   const std::vector<uint64_t>& sorted_pages, uint64_t batch_bytes,
                                                   unsigned threads) {
  constexpr uint64_t kPage = 4096;
  auto region = RegisterRegion(source.size());
  if (!region.ok()) return region.status();
  // Each thread copies a contiguous share of the sorted pages, run by run.
  auto copy_share = [&](size_t begin, size_t end, int* error) {
    size_t i = begin;
    while (i < end) {
      size_t j = i + 1;
      while (j < end && sorted_pages[j] == sorted_pages[j - 1] + 1 && (j - i) * kPage < batch_bytes) ++j;
      const uint64_t off = sorted_pages[i] * kPage, len = (j - i) * kPage;
      UffdFillOutcome out = region->uffd.Copy(region->memory.address() + off, source.data() + off, len);
      if (out.error != 0 || out.bytes != len) {
        *error = out.error ? out.error : EIO;
        return;
      }
      i = j;
    }
  };
  threads = std::max(1u, threads);
  std::vector<int> errors(threads, 0);
  std::vector<std::thread> workers;
  auto start = std::chrono::steady_clock::now();
  for (unsigned t = 0; t < threads; ++t) {
    const size_t begin = sorted_pages.size() * t / threads, end = sorted_pages.size() * (t + 1) / threads;
    workers.emplace_back(copy_share, begin, end, &errors[t]);
  }
  for (std::thread& w : workers) w.join();
  auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
  for (int error : errors) {
    if (error != 0) return Status::FromErrno(error, "UFFDIO_COPY of the working set");
  }
  return elapsed;
}

}  // namespace uffdpager::bench
