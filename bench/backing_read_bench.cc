// backing_read_bench: how should the pager read backing memory? Measures, on
// one page-cache-warm 512 MiB memory file, the three ways the pager could get
// a file's bytes into its buffers, for the three shapes of read it does:
//
//   methods   pread                 one pread(2) per read (what BackingFile does today)
//             mmap_populated        memcpy from a MAP_SHARED, PROT_READ mapping of the
//                                   file whose page tables are all present (a pager
//                                   that maps each file once and keeps it)
//             mmap_first_touch      the same mapping with its page tables dropped
//                                   before every pass over the file: each page pays
//                                   its minor fault (a pager that maps per session)
//             io_uring              one SQE per read, the whole batch submitted with
//                                   one io_uring_submit_and_wait
//             io_uring_fixed        the same with a registered file and buffer
//   patterns  run_2m                2 MiB consecutive runs, in file order (completion)
//             scatter_4k_x64        64 pages picked from a random permutation of the
//                                   file's pages per batch (a prefetch tail)
//             single_4k             one page from that permutation (a demand fault)
//
// plus `pread_per_page` on run_2m: 512 separate 4 KiB preads, the page-by-page
// path ReadRun replaced. Every batch of every method goes to the same
// pre-faulted destination buffer. Counters: bytes_per_second, and ns_per_page
// (wall time per 4 KiB page). Real time is measured, since io_uring may hand
// work to kernel threads whose CPU time the calling thread would not see.
//
// Usage (docs/benchmarks.md has the published numbers):
//   backing_read_bench [--work-dir=DIR] [--file-mib=N] [benchmark flags]
//   backing_read_bench --benchmark_format=json --benchmark_out=reads.json
// DIR defaults to $BACKING_READ_BENCH_DIR, else build-bench/bench-work/ (the
// directory next to bin/). Unless --benchmark_repetitions is given, each
// benchmark runs 9 repetitions, randomly interleaved with the others', and
// only the aggregates (mean, median, stddev, cv) are reported.
#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "stats.h"
#include "workload.h"

namespace fs = std::filesystem;
using namespace uffdpager;
using namespace uffdpager::bench;

namespace {

constexpr uint64_t kRunBytes = 2 * kMiB;
constexpr unsigned kScatterBatch = 64;
constexpr double kMinTimeSeconds = 0.2;  // per repetition: 16 benchmarks x 9 repetitions take about a minute
constexpr char kDefaultRepetitions[] = "--benchmark_repetitions=9";
constexpr char kAggregatesOnly[] = "--benchmark_report_aggregates_only=true";
// Repetitions of all benchmarks run in random order, so a burst of load from
// a neighbour on a shared machine spreads over every method instead of
// landing on whichever ran at that moment.
constexpr char kInterleave[] = "--benchmark_enable_random_interleaving=true";

// io_uring_queue_init/_exit as RAII.
class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    if (initialized_) io_uring_queue_exit(&ring_);
  }
  Status Init(unsigned entries) {
    int rc = io_uring_queue_init(entries, &ring_, 0);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_queue_init");
    initialized_ = true;
    return Status::Ok();
  }
  io_uring* get() { return &ring_; }

 private:
  io_uring ring_{};
  bool initialized_ = false;
};

// One read: `length` bytes at file `offset` into `out`.
struct Read {
  uint64_t offset;
  uint64_t length;
  uint8_t* out;
};

// Everything the benchmarks share, set up once in main.
struct Fixture {
  std::string path;
  uint64_t file_bytes = 0;
  UniqueFd fd;
  MemoryMapping populated;           // MAP_POPULATE: page tables present
  MemoryMapping first_touch;         // page tables dropped (MADV_DONTNEED) before every pass
  MemoryMapping destination;         // where every read lands, pre-faulted
  Ring ring;                         // plain fd and buffers
  Ring fixed_ring;                   // registered fd (index 0) and buffer (index 0)
  std::vector<uint64_t> page_order;  // a random permutation of the file's page indices
};
std::unique_ptr<Fixture> fixture;

Status SetUp(const std::string& path, uint64_t bytes) {
  auto f = std::make_unique<Fixture>();
  f->path = path;
  f->file_bytes = bytes;
  UFFD_RETURN_IF_ERROR(GenerateSnapshotFile(path, bytes));
  // Page cache warm: these are the pager's numbers, not the disk's.
  UFFD_RETURN_IF_ERROR(WarmPageCache(path));
  f->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f->fd) return Status::FromErrno(errno, "open " + path);
  auto populated = MemoryMapping::Map(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, f->fd.get(), 0,
                                      "populated file mapping");
  if (!populated.ok()) return populated.status();
  f->populated = std::move(*populated);
  auto first_touch = MemoryMapping::Map(nullptr, bytes, PROT_READ, MAP_SHARED, f->fd.get(), 0, "file mapping");
  if (!first_touch.ok()) return first_touch.status();
  f->first_touch = std::move(*first_touch);
  const uint64_t destination_bytes = std::max<uint64_t>(kRunBytes, kScatterBatch * kPageSize);
  auto destination = MemoryMapping::Map(nullptr, destination_bytes, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0, "destination buffer");
  if (!destination.ok()) return destination.status();
  f->destination = std::move(*destination);

  UFFD_RETURN_IF_ERROR(f->ring.Init(kScatterBatch));
  UFFD_RETURN_IF_ERROR(f->fixed_ring.Init(kScatterBatch));
  const int fd = f->fd.get();
  int rc = io_uring_register_files(f->fixed_ring.get(), &fd, 1);
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_register_files");
  iovec iov{f->destination.data(), f->destination.size()};
  rc = io_uring_register_buffers(f->fixed_ring.get(), &iov, 1);
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_register_buffers");

  f->page_order.resize(bytes / kPageSize);
  std::iota(f->page_order.begin(), f->page_order.end(), 0);
  std::shuffle(f->page_order.begin(), f->page_order.end(), std::mt19937_64(42));
  fixture = std::move(f);
  return Status::Ok();
}

// ---- the methods: each performs a batch of reads, or fails -------------

Status ReadPread(const std::vector<Read>& batch) {
  for (const Read& r : batch) {
    ssize_t n = ::pread(fixture->fd.get(), r.out, r.length, static_cast<off_t>(r.offset));
    if (n != static_cast<ssize_t>(r.length)) return Status::FromErrno(n < 0 ? errno : EIO, "pread");
  }
  return Status::Ok();
}

Status CopyFrom(const MemoryMapping& mapping, const std::vector<Read>& batch) {
  for (const Read& r : batch) std::memcpy(r.out, mapping.data() + r.offset, r.length);
  return Status::Ok();
}

Status ReadUring(bool fixed, const std::vector<Read>& batch) {
  io_uring* ring = fixed ? fixture->fixed_ring.get() : fixture->ring.get();
  for (size_t i = 0; i < batch.size(); ++i) {
    const Read& r = batch[i];
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) return Status::Internal("io_uring submission queue full");
    if (fixed) {
      io_uring_prep_read_fixed(sqe, 0, r.out, unsigned(r.length), r.offset, 0);
      sqe->flags |= IOSQE_FIXED_FILE;
    } else {
      io_uring_prep_read(sqe, fixture->fd.get(), r.out, unsigned(r.length), r.offset);
    }
    io_uring_sqe_set_data64(sqe, i);
  }
  int rc = io_uring_submit_and_wait(ring, unsigned(batch.size()));
  if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit_and_wait");
  // Waiting for more completions than submissions would never return.
  if (size_t(rc) != batch.size()) return Status::Internal("io_uring took only part of the batch");
  Status status = Status::Ok();
  for (size_t seen = 0; seen < batch.size(); ++seen) {
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(ring, &cqe);
    if (rc < 0) return Status::FromErrno(-rc, "io_uring_wait_cqe");
    // Every read here is one page-cache-hot extent: anything short is a bug.
    const uint64_t want = batch[io_uring_cqe_get_data64(cqe)].length;
    if (cqe->res < 0) {
      status = Status::FromErrno(-cqe->res, "io_uring read");
    } else if (uint64_t(cqe->res) != want) {
      status = Status::Internal("io_uring read came back short");
    }
    io_uring_cqe_seen(ring, cqe);
  }
  return status;
}

enum class Method { kPread, kPreadPerPage, kMmapPopulated, kMmapFirstTouch, kUring, kUringFixed };
enum class Pattern { kRun2M, kScatter4K, kSingle4K };

Status ReadBatch(Method method, const std::vector<Read>& batch) {
  switch (method) {
    case Method::kPread:
    case Method::kPreadPerPage:  // the batch is already split into pages
      return ReadPread(batch);
    case Method::kMmapPopulated: return CopyFrom(fixture->populated, batch);
    case Method::kMmapFirstTouch: return CopyFrom(fixture->first_touch, batch);
    case Method::kUring: return ReadUring(false, batch);
    case Method::kUringFixed: return ReadUring(true, batch);
  }
  return Status::Internal("unknown method");
}

// ---- the patterns: where the next batch reads ---------------------------

// Walks the file in batches of `pattern`'s shape; `Next` returns false when
// the batch it produced starts a new pass over the file (so first-touch
// mappings can drop their page tables first).
class BatchSource {
 public:
  BatchSource(Pattern pattern, Method method) : pattern_(pattern), method_(method) {}

  bool Next(std::vector<Read>* batch) {
    batch->clear();
    uint8_t* out = fixture->destination.data();
    bool same_pass = true;
    if (pattern_ == Pattern::kRun2M) {
      if (cursor_ + kRunBytes > fixture->file_bytes) cursor_ = 0, same_pass = false;
      if (method_ == Method::kPreadPerPage) {
        for (uint64_t at = 0; at < kRunBytes; at += kPageSize) batch->push_back({cursor_ + at, kPageSize, out + at});
      } else {
        batch->push_back({cursor_, kRunBytes, out});
      }
      cursor_ += kRunBytes;
      return same_pass;
    }
    const unsigned count = pattern_ == Pattern::kScatter4K ? kScatterBatch : 1;
    const auto& order = fixture->page_order;
    if (cursor_ + count > order.size()) cursor_ = 0, same_pass = false;
    for (unsigned i = 0; i < count; ++i)
      batch->push_back({order[cursor_ + i] * kPageSize, kPageSize, out + i * kPageSize});
    cursor_ += count;
    return same_pass;
  }

 private:
  Pattern pattern_;
  Method method_;
  uint64_t cursor_ = 0;
};

Status DropPageTables() {
  if (::madvise(fixture->first_touch.data(), fixture->first_touch.size(), MADV_DONTNEED) != 0) {
    return Status::FromErrno(errno, "madvise(MADV_DONTNEED)");
  }
  return Status::Ok();
}

void BM_Read(benchmark::State& state, Method method, Pattern pattern) {
  using Clock = std::chrono::steady_clock;
  BatchSource source(pattern, method);
  std::vector<Read> batch;
  uint64_t bytes = 0;
  if (method == Method::kMmapFirstTouch) {
    if (Status st = DropPageTables(); !st.ok()) return state.SkipWithError(st.ToString().c_str());
  }
  // Our own clock for ns_per_page (Google Benchmark exposes no elapsed time
  // to the benchmark, and its inverted rate counters print as "s"/"ks").
  Clock::duration paused{};
  const auto start = Clock::now();
  for (auto _ : state) {
    if (!source.Next(&batch) && method == Method::kMmapFirstTouch) {
      // A new pass over the file: every page must fault again. Rare (once
      // per pass over the file) and kept out of both clocks.
      state.PauseTiming();
      const auto pause_start = Clock::now();
      Status st = DropPageTables();
      paused += Clock::now() - pause_start;
      state.ResumeTiming();
      if (!st.ok()) return state.SkipWithError(st.ToString().c_str());
    }
    if (Status st = ReadBatch(method, batch); !st.ok()) return state.SkipWithError(st.ToString().c_str());
    for (const Read& r : batch) bytes += r.length;
    benchmark::ClobberMemory();
  }
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start - paused).count();
  state.SetBytesProcessed(int64_t(bytes));
  state.counters["ns_per_page"] = bytes ? ns / double(bytes / kPageSize) : 0.0;
}

// A batch of each method must bring the file's own bytes: a method that read
// the wrong ones would be measuring nothing.
Status CheckMethodsAgree() {
  std::vector<uint8_t> want(kScatterBatch * kPageSize);
  for (Method method :
       {Method::kPread, Method::kMmapPopulated, Method::kMmapFirstTouch, Method::kUring, Method::kUringFixed}) {
    BatchSource source(Pattern::kScatter4K, method);
    std::vector<Read> batch;
    source.Next(&batch);
    std::memset(fixture->destination.data(), 0xA5, want.size());
    UFFD_RETURN_IF_ERROR(ReadBatch(method, batch));
    for (const Read& r : batch) {
      uint8_t page[kPageSize];
      if (::pread(fixture->fd.get(), page, kPageSize, off_t(r.offset)) != ssize_t(kPageSize) ||
          std::memcmp(page, r.out, kPageSize) != 0) {
        return Status::Internal("method " + std::to_string(int(method)) + " read the wrong bytes at offset " +
                                std::to_string(r.offset));
      }
    }
  }
  return Status::Ok();
}

void Register() {
  struct Named {
    const char* name;
    Method method;
  };
  const Named methods[] = {{"pread", Method::kPread},
                           {"mmap_populated", Method::kMmapPopulated},
                           {"mmap_first_touch", Method::kMmapFirstTouch},
                           {"io_uring", Method::kUring},
                           {"io_uring_fixed", Method::kUringFixed}};
  const std::pair<const char*, Pattern> patterns[] = {
      {"run_2m", Pattern::kRun2M}, {"scatter_4k_x64", Pattern::kScatter4K}, {"single_4k", Pattern::kSingle4K}};
  auto add = [](const std::string& name, Method m, Pattern p) {
    benchmark::RegisterBenchmark(name.c_str(), BM_Read, m, p)->UseRealTime()->MinTime(kMinTimeSeconds);
  };
  for (const auto& [pattern_name, pattern] : patterns) {
    for (const Named& m : methods) add(std::string(pattern_name) + "/" + m.name, m.method, pattern);
    if (pattern == Pattern::kRun2M) add("run_2m/pread_per_page", Method::kPreadPerPage, pattern);
  }
}

// Takes our own --work-dir= and --file-mib= out of argv before Google
// Benchmark sees it (it rejects flags it does not know).
std::string TakeFlag(int* argc, char** argv, const std::string& prefix) {
  std::string value;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with(prefix)) {
      value = arg.substr(prefix.size());
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  std::string work_dir = TakeFlag(&argc, argv, "--work-dir=");
  std::string file_mib = TakeFlag(&argc, argv, "--file-mib=");
  if (work_dir.empty() && std::getenv("BACKING_READ_BENCH_DIR") != nullptr) {
    work_dir = std::getenv("BACKING_READ_BENCH_DIR");
  }
  if (work_dir.empty())
    work_dir = (fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bench-work").string();
  const uint64_t mib = file_mib.empty() ? 512 : std::stoull(file_mib);
  if (mib < 2 || mib % 2 != 0) {
    std::fprintf(stderr, "backing_read_bench: --file-mib must be an even number >= 2\n");
    return 2;
  }

  // Default to interleaved, repeated runs reporting medians, unless told
  // otherwise.
  std::vector<char*> args(argv, argv + argc);
  auto given = [&args](const char* flag) {
    return std::any_of(args.begin(), args.end(), [flag](const char* a) { return std::string(a).starts_with(flag); });
  };
  if (!given("--benchmark_repetitions")) {
    args.push_back(const_cast<char*>(kDefaultRepetitions));
    args.push_back(const_cast<char*>(kAggregatesOnly));
  }
  if (!given("--benchmark_enable_random_interleaving")) args.push_back(const_cast<char*>(kInterleave));
  int bench_argc = int(args.size());
  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 2;

  std::error_code ec;
  fs::create_directories(work_dir, ec);
  std::string path = fs::absolute(fs::path(work_dir) / ("backing-read-" + std::to_string(mib) + "mib.mem")).string();
  std::fprintf(stderr, "backing_read_bench: %llu MiB file %s, page cache warm\n", static_cast<unsigned long long>(mib),
               path.c_str());
  if (Status st = SetUp(path, mib * kMiB); !st.ok()) {
    std::fprintf(stderr, "backing_read_bench: setup: %s\n", st.ToString().c_str());
    return 1;
  }
  if (Status st = CheckMethodsAgree(); !st.ok()) {
    std::fprintf(stderr, "backing_read_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  fixture.reset();
  return 0;
}
