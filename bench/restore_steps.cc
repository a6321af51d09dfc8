#include "restore_steps.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <utility>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "minimal_handler.h"
#include "stats.h"

namespace uffdpager::bench {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

}  // namespace

Result<RestoreSample> TimeFileRestore(const BenchConfig& config, const WorkingSet& set) {
  Deadline deadline("file-backed restore", kRestoreLimit);
  RestoreSample sample;
  auto read_before = StorageReadBytes(0);
  auto start = Clock::now();
  UniqueFd fd(::open(config.snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + config.snapshot_path);
  auto memory = MemoryMapping::Map(nullptr, config.memory_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0,
                                   "file-backed guest memory");
  if (!memory.ok()) return memory.status();
  const uint8_t* base = memory->data();
  auto address = [base](uint64_t page) { return base + page * kPageSize; };
  TouchWorkingSet(set, address);
  sample.ms = Ms(Clock::now() - start);
  sample.read_bytes = ReadSince(0, read_before);
  UFFD_RETURN_IF_ERROR(VerifySample(set, address, config.snapshot_path, config.verify_stride));
  return sample;
}

Result<RestoreSample> TimeScatteredReadFloor(const BenchConfig& config, const WorkingSet& set) {
  Deadline deadline("scattered-read floor", kRestoreLimit);
  UniqueFd fd(::open(config.snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + config.snapshot_path);
  // Exactly the pages asked for: no readahead around them.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  RestoreSample sample;
  auto read_before = StorageReadBytes(0);
  std::atomic<int> failed_errno{0};
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (const auto& pages : set.per_thread) {
    threads.emplace_back([&fd, &pages, &failed_errno] {
      alignas(4096) static thread_local uint8_t buffer[kPageSize];
      for (uint64_t page : pages) {
        if (::pread(fd.get(), buffer, kPageSize, static_cast<off_t>(page * kPageSize)) < 0) failed_errno = errno;
      }
    });
  }
  for (auto& t : threads) t.join();
  sample.ms = Ms(Clock::now() - start);
  sample.read_bytes = ReadSince(0, read_before);
  if (failed_errno != 0) return Status::FromErrno(failed_errno, "read " + config.snapshot_path);
  return sample;
}

Result<RestoreSample> TimeDemandFaultFloor(const BenchConfig& config, const WorkingSet& set) {
  Deadline deadline(kDemandFaultFloor, kRestoreLimit);
  UniqueFd fd(::open(config.snapshot_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open " + config.snapshot_path);
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);  // exactly the pages asked for
  auto region = RegisterRegion(config.memory_bytes);
  if (!region.ok()) return region.status();
  RestoreSample sample;
  auto read_before = StorageReadBytes(0);
  auto start = Clock::now();
  std::vector<std::unique_ptr<MinimalHandler>> handlers;
  for (size_t t = 0; t < set.per_thread.size(); ++t) {
    handlers.push_back(std::make_unique<MinimalHandler>(region->uffd, region->memory.address(), fd.get()));
    UFFD_RETURN_IF_ERROR(handlers.back()->Start());
  }
  const uint8_t* base = region->memory.data();
  auto address = [base](uint64_t page) { return base + page * kPageSize; };
  TouchWorkingSet(set, address);
  sample.ms = Ms(Clock::now() - start);
  sample.read_bytes = ReadSince(0, read_before);
  for (auto& handler : handlers) {
    handler->Stop();
    if (handler->error() != 0) {
      return Status::FromErrno(handler->error(), "serving the working set's faults from " + config.snapshot_path);
    }
  }
  UFFD_RETURN_IF_ERROR(VerifySample(set, address, config.snapshot_path, config.verify_stride));
  return sample;
}

Result<RestoreSample> TimePagerRestore(const BenchConfig& config, const BenchPager& pager,
                                       const std::string& session_id, const WorkingSet& set) {
  RestoreSample sample;
  auto read_before = StorageReadBytes(pager.pid());
  auto socket = pager.CreateSession(
      session_id, config.snapshot_url.empty() ? config.snapshot_path : config.snapshot_url, config.snapshot_layers);
  if (!socket.ok()) return socket.status();
  std::unique_ptr<RestoredGuest> guest;
  {
    Deadline deadline("restore through the pager (session " + session_id + ")", kRestoreLimit);
    auto start = Clock::now();
    auto handed = BenchPager::HandOver(session_id, *socket, config.memory_bytes);
    if (!handed.ok()) return handed.status();
    guest = std::move(*handed);
    TouchWorkingSet(set, [&guest](uint64_t page) { return guest->PageAddress(page); });
    sample.ms = Ms(Clock::now() - start);
  }
  UFFD_RETURN_IF_ERROR(VerifySample(
      set, [&guest](uint64_t page) { return guest->PageAddress(page); }, config.snapshot_path, config.verify_stride));
  sample.read_bytes = ReadSince(pager.pid(), read_before);
  sample.counters = pager.SessionCounters(session_id);
  UFFD_RETURN_IF_ERROR(pager.client().CloseSession(session_id));
  auto stats = pager.client().Stats();
  if (!stats.ok()) return stats.status().WithContext("pager stats");
  sample.cache_bytes = uint64_t(stats->value("cache_bytes", 0.0));
  if (!config.snapshot_url.empty()) sample.store_bytes = uint64_t(stats->value("object_store_bytes", 0.0));
  return sample;
}

const std::vector<unsigned>& CopyFloorThreads() {
  // One thread, and two: this machine's cores.
  static const std::vector<unsigned> threads = {1, 2};
  return threads;
}

std::string CopyFloorName(unsigned threads) {
  return "copy_floor_" + std::to_string(threads) + (threads == 1 ? "_thread" : "_threads");
}

Result<std::vector<RestoreSample>> MeasureCopyFloors(const BenchConfig& config,
                                                     const std::vector<uint64_t>& sorted_pages) {
  // Mapped only while the floor is measured: a mapping holds the file's
  // pages in memory, and cold variants must be able to drop them.
  UFFD_RETURN_IF_ERROR(WarmPageCache(config.snapshot_path));
  auto source = MapSnapshotPopulated(config.snapshot_path, config.memory_bytes);
  if (!source.ok()) return source.status();
  std::vector<RestoreSample> samples;
  for (unsigned threads : CopyFloorThreads()) {
    Deadline deadline("copy floor", kRestoreLimit);
    RestoreSample sample;
    auto read_before = StorageReadBytes(0);
    auto floor = RawWorkingSetCopy(*source, sorted_pages, kBatchBytes, threads);
    if (!floor.ok()) return floor.status();
    sample.ms = Ms(*floor);
    sample.read_bytes = ReadSince(0, read_before);
    samples.push_back(sample);
  }
  return samples;
}

bool FlavorAvailable(const BenchConfig& config, const PagerFlavor& flavor) {
  return flavor.required_flag.empty() || config.pager_help.find(flavor.required_flag) != std::string::npos;
}

void Series::Add(const RestoreSample& sample) {
  ms.push_back(sample.ms);
  if (sample.read_bytes) read_mib.push_back(double(*sample.read_bytes) / double(kMiB));
  if (sample.cache_bytes) {
    faults.push_back(sample.counters.value("faults", 0.0));
    fault_around_pages.push_back(sample.counters.value("fault_around_pages", 0.0));
    prefetch_pages.push_back(sample.counters.value("prefetch_pages", 0.0));
    cache_mib.push_back(double(*sample.cache_bytes) / double(kMiB));
  }
  if (sample.store_bytes) store_mib.push_back(double(*sample.store_bytes) / double(kMiB));
}

json Series::ToJson(uint64_t working_set_bytes) const {
  json j = {{"name", name}};
  if (!skipped.empty()) {
    j["skipped"] = skipped;
    return j;
  }
  j["median_ms"] = Median(ms);
  j["samples_ms"] = ms;
  if (!read_mib.empty() && read_mib.size() == ms.size()) {
    j["median_read_mib"] = Median(read_mib);
    j["samples_read_mib"] = read_mib;
    j["read_per_working_set"] = Median(read_mib) * double(kMiB) / double(working_set_bytes);
  }
  if (!faults.empty()) {
    j["median_faults"] = Median(faults);
    j["median_fault_around_pages"] = Median(fault_around_pages);
    j["median_prefetch_pages"] = Median(prefetch_pages);
    j["median_cache_mib"] = Median(cache_mib);
  }
  if (!store_mib.empty() && store_mib.size() == ms.size()) {
    j["median_store_mib"] = Median(store_mib);
    j["store_per_working_set"] = Median(store_mib) * double(kMiB) / double(working_set_bytes);
  }
  return j;
}

std::vector<PagerFlavor> AddFlavorSeries(const BenchConfig& config, const std::vector<std::string>& suffixes,
                                         std::vector<Series>& series) {
  std::vector<PagerFlavor> available;
  for (const PagerFlavor& flavor : RestoreFlavors(config.flavors)) {
    bool has = FlavorAvailable(config, flavor);
    if (has) available.push_back(flavor);
    for (const std::string& suffix : suffixes) {
      Series s{flavor.name + suffix};
      if (!has) s.skipped = "skipped: `uffd-pager --help` has no " + flavor.required_flag;
      series.push_back(s);
    }
  }
  return available;
}

const Series& FindSeries(const std::vector<Series>& series, const std::string& name) {
  return *std::find_if(series.begin(), series.end(), [&](const Series& s) { return s.name == name; });
}

Series& FindSeries(std::vector<Series>& series, const std::string& name) {
  return const_cast<Series&>(FindSeries(std::as_const(series), name));
}

}  // namespace uffdpager::bench
