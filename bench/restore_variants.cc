#include "restore_variants.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cold_restore.h"
#include "common/memory_mapping.h"
#include "common/unique_fd.h"
#include "minimal_handler.h"
#include "restore_steps.h"
#include "stats.h"

namespace uffdpager::bench {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Reads the first `pages` pages one at a time from one thread, timing each
// touch: with nothing else in flight, each is one full fault round trip.
std::vector<double> SequentialTouchLatenciesUs(const uint8_t* base, uint64_t pages) {
  std::vector<double> us;
  us.reserve(pages);
  for (uint64_t p = 0; p < pages; ++p) {
    timespec a, b;
    ::clock_gettime(CLOCK_MONOTONIC, &a);
    (void)*reinterpret_cast<const volatile uint8_t*>(base + p * kPageSize);
    ::clock_gettime(CLOCK_MONOTONIC, &b);
    us.push_back((b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3);
  }
  return us;
}

json LatencyJson(const std::vector<double>& us) {
  double mean = 0;
  for (double v : us) mean += v;
  return {{"samples", us.size()},
          {"p50_us", Percentile(us, 50)},
          {"p99_us", Percentile(us, 99)},
          {"mean_us", us.empty() ? 0 : mean / us.size()}};
}

// The latency client against one pager restore: waits until the pager has
// adopted the handshake, so the first touch does not include it.
Result<std::vector<double>> PagerTouchLatencies(const BenchConfig& config, const BenchPager& pager,
                                                const std::string& session_id, uint64_t pages) {
  auto socket = pager.CreateSession(session_id, config.snapshot_path);
  if (!socket.ok()) return socket.status();
  auto guest = BenchPager::HandOver(session_id, *socket, config.memory_bytes);
  if (!guest.ok()) return guest.status();
  UFFD_RETURN_IF_ERROR(pager.WaitForState(session_id, "serving", std::chrono::seconds(10)));
  std::vector<double> us;
  {
    Deadline deadline("latency client through the pager", kRestoreLimit);
    // The first region is 3/4 of memory, so `pages` consecutive pages of the
    // file are consecutive in it.
    us = SequentialTouchLatenciesUs((*guest)->memory.region_data(0), pages);
  }
  UFFD_RETURN_IF_ERROR(pager.client().CloseSession(session_id));
  return us;
}

// One client process of the concurrency test; returns its exit code and
// leaves its restore time in *elapsed_ns.
int RunConcurrentClient(const BenchConfig& config, const std::string& session_id, const std::string& socket,
                        const WorkingSet& set, uint64_t* elapsed_ns) {
  auto start = Clock::now();
  auto guest = BenchPager::HandOver(session_id, socket, config.memory_bytes);
  if (!guest.ok()) {
    std::fprintf(stderr, "%s: %s\n", session_id.c_str(), guest.status().ToString().c_str());
    return 2;
  }
  auto address = [&guest](uint64_t page) { return (*guest)->PageAddress(page); };
  TouchWorkingSet(set, address);
  *elapsed_ns = uint64_t((Clock::now() - start).count());
  Status verified = VerifySample(set, address, config.snapshot_path, config.verify_stride);
  if (!verified.ok()) {
    std::fprintf(stderr, "%s: %s\n", session_id.c_str(), verified.ToString().c_str());
    return 1;
  }
  return 0;
}

// Waits for every child, at most `limit`; kills the rest after that.
Status WaitForChildren(std::vector<pid_t>& children, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  int failed = 0;
  while (!children.empty()) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      if (std::erase(children, pid) && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) ++failed;
      continue;
    }
    if (Clock::now() > deadline) {
      for (pid_t child : children) ::kill(child, SIGKILL);
      for (pid_t child : children) ::waitpid(child, &status, 0);
      return Status::Timeout(std::to_string(children.size()) + " client(s) did not finish in time");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (failed) return Status::Internal(std::to_string(failed) + " client process(es) failed");
  return Status::Ok();
}

}  // namespace

Result<json> RunRestoreComparison(const BenchConfig& config, const WorkingSet& set) {
  std::vector<Series> series = {{"file_warm"}, {"file_cold"}};
  const std::vector<PagerFlavor> flavors = AddFlavorSeries(config, {"_cold", "_warm"}, series);
  // The floor: the working set's pages copied in with no pager and no faults.
  for (unsigned threads : CopyFloorThreads()) series.push_back({CopyFloorName(threads)});
  const std::vector<uint64_t> pages = set.SortedDistinctPages();

  // Runs interleave the variants so slow drift of a shared machine spreads
  // over all of them instead of biasing one.
  for (unsigned run = 0; run < config.runs; ++run) {
    UFFD_RETURN_IF_ERROR(WarmPageCache(config.snapshot_path));
    auto warm = TimeFileRestore(config, set);
    if (!warm.ok()) return warm.status();
    FindSeries(series, "file_warm").Add(*warm);

    UFFD_RETURN_IF_ERROR(EvictFromPageCache(config.snapshot_path));
    auto cold = TimeFileRestore(config, set);
    if (!cold.ok()) return cold.status();
    FindSeries(series, "file_cold").Add(*cold);

    auto floors = MeasureCopyFloors(config, pages);
    if (!floors.ok()) return floors.status();
    for (size_t i = 0; i < floors->size(); ++i) {
      FindSeries(series, CopyFloorName(CopyFloorThreads()[i])).Add((*floors)[i]);
    }

    for (const PagerFlavor& flavor : flavors) {
      // The pager's own cache starts empty; the file is in the page cache, so
      // this measures the pager, not the disk.
      UFFD_RETURN_IF_ERROR(WarmPageCache(config.snapshot_path));
      auto pager = BenchPager::Launch(config.pager, flavor, flavor.name);
      if (!pager.ok()) return pager.status().WithContext("launch " + flavor.name);
      for (const char* cache : {"cold", "warm"}) {
        std::string id = set.name + "-" + cache + "-" + std::to_string(run);
        auto sample = TimePagerRestore(config, **pager, id, set);
        if (!sample.ok()) return sample.status().WithContext(flavor.name + " " + cache);
        FindSeries(series, flavor.name + "_" + cache).Add(*sample);
      }
    }
    Progress(set.name + " run " + std::to_string(run + 1) + "/" + std::to_string(config.runs) + " done");
  }

  json variants = json::array();
  double file_warm = Median(FindSeries(series, "file_warm").ms);
  double on_demand_cold = Median(FindSeries(series, "pager_on_demand_cold").ms);
  double on_demand_warm = Median(FindSeries(series, "pager_on_demand_warm").ms);
  for (const Series& s : series) {
    json j = s.ToJson(set.distinct_bytes());
    if (s.skipped.empty()) {
      double median = Median(s.ms);
      // The floor copies from memory, like a pager whose cache is warm.
      bool warm_pager = (s.name.ends_with("_warm") && s.name.starts_with("pager")) || s.name.starts_with("copy_floor");
      j["ratio_vs_file_warm"] = median / file_warm;
      j["ratio_vs_on_demand"] = median / (warm_pager ? on_demand_warm : on_demand_cold);
    }
    variants.push_back(j);
  }
  return WorkingSetResults(set, std::move(variants));
}

Result<json> RunFaultLatency(const BenchConfig& config) {
  const uint64_t pages = std::min(config.latency_pages, config.memory_bytes / 4 * 3 / kPageSize);
  auto source = MapSnapshotPopulated(config.snapshot_path, pages * kPageSize);
  if (!source.ok()) return source.status();
  std::vector<double> minimal, pager_cold, pager_warm;
  for (unsigned run = 0; run < config.runs; ++run) {
    {
      auto region = RegisterRegion((pages * kPageSize + kBatchBytes - 1) / kBatchBytes * kBatchBytes);
      if (!region.ok()) return region.status();
      MinimalHandler handler(region->uffd, region->memory.address(), source->data());
      UFFD_RETURN_IF_ERROR(handler.Start());
      Deadline deadline("latency client through the minimal handler", kRestoreLimit);
      auto us = SequentialTouchLatenciesUs(region->memory.data(), pages);
      minimal.insert(minimal.end(), us.begin(), us.end());
      handler.Stop();
      if (handler.error()) return Status::FromErrno(handler.error(), "minimal handler UFFDIO_COPY");
    }
    auto pager = BenchPager::Launch(config.pager, OnDemandFlavor(), "latency");
    if (!pager.ok()) return pager.status().WithContext("launch pager for latency");
    for (auto [samples, cache] : {std::pair{&pager_cold, "cold"}, std::pair{&pager_warm, "warm"}}) {
      auto us =
          PagerTouchLatencies(config, **pager, std::string("latency-") + cache + "-" + std::to_string(run), pages);
      if (!us.ok()) return us.status();
      samples->insert(samples->end(), us->begin(), us->end());
    }
    Progress("fault latency run " + std::to_string(run + 1) + "/" + std::to_string(config.runs) + " done");
  }
  json j = {{"pages_per_run", pages},
            {"minimal_handler", LatencyJson(minimal)},
            {"pager_cold", LatencyJson(pager_cold)},
            {"pager_warm", LatencyJson(pager_warm)}};
  for (const char* which : {"pager_cold", "pager_warm"}) {
    for (const char* p : {"p50_us", "p99_us"}) {
      j[std::string(which) + "_ratio_" + p] = j[which][p].get<double>() / j["minimal_handler"][p].get<double>();
    }
  }
  return j;
}

Result<json> RunCompletionThroughput(const BenchConfig& config) {
  auto source = MapSnapshotPopulated(config.snapshot_path, config.memory_bytes);
  if (!source.ok()) return source.status();
  std::vector<double> raw_gib_s, pager_gib_s;
  const double gib = double(config.memory_bytes) / (1ULL << 30);
  for (unsigned run = 0; run < config.runs; ++run) {
    {
      Deadline deadline("raw batched UFFDIO_COPY", kRestoreLimit);
      auto raw = RawBatchedCopy(*source, kBatchBytes);
      if (!raw.ok()) return raw.status();
      raw_gib_s.push_back(gib / (raw->count() / 1e9));
    }
    auto pager = BenchPager::Launch(config.pager, OnDemandFlavor(), "completion");
    if (!pager.ok()) return pager.status().WithContext("launch pager for completion");
    std::string id = "complete-" + std::to_string(run);
    auto socket = (*pager)->CreateSession(id, config.snapshot_path);
    if (!socket.ok()) return socket.status();
    auto guest = BenchPager::HandOver(id, *socket, config.memory_bytes);
    if (!guest.ok()) return guest.status();
    UFFD_RETURN_IF_ERROR((*pager)->WaitForState(id, "serving", std::chrono::seconds(10)));
    auto start = Clock::now();
    UFFD_RETURN_IF_ERROR((*pager)->client().CompleteSession(id, std::chrono::seconds(300)));
    pager_gib_s.push_back(gib / std::chrono::duration<double>(Clock::now() - start).count());
    // After completion the memory is unregistered: a sample of it must hold
    // the file's bytes (read here without any fault reaching the pager).
    for (uint64_t page = 0; page < config.memory_bytes / kPageSize; page += 997) {
      if (std::memcmp((*guest)->PageAddress(page), source->data() + page * kPageSize, kPageSize) != 0) {
        return Status::Internal("completed page " + std::to_string(page) + " differs from the snapshot file");
      }
    }
    UFFD_RETURN_IF_ERROR((*pager)->client().CloseSession(id));
    Progress("completion run " + std::to_string(run + 1) + "/" + std::to_string(config.runs) + " done");
  }
  double raw = Median(raw_gib_s), paged = Median(pager_gib_s);
  return json{{"bytes", config.memory_bytes},     {"batch_bytes", kBatchBytes},    {"raw_uffdio_copy_gib_s", raw},
              {"raw_samples_gib_s", raw_gib_s},   {"pager_complete_gib_s", paged}, {"pager_samples_gib_s", pager_gib_s},
              {"ratio_pager_vs_raw", paged / raw}};
}

namespace {

// One round of `config.concurrent_vms` restores at once through `pager`,
// each a process of its own touching `set`.
struct ConcurrentRound {
  double total_ms = 0;
  std::vector<double> vm_ms;
  std::vector<std::string> session_ids;  // closed by the caller, after it read the pager's numbers
};

Result<ConcurrentRound> RestoreAtOnce(const BenchConfig& config, const BenchPager& pager, const WorkingSet& set,
                                      const std::string& tag) {
  const unsigned vms = config.concurrent_vms;
  ConcurrentRound round;
  std::vector<std::string> sockets;
  for (unsigned vm = 0; vm < vms; ++vm) {
    std::string id = "vm" + std::to_string(vm) + "-" + tag;
    auto socket = pager.CreateSession(id, config.snapshot_path);
    if (!socket.ok()) return socket.status();
    round.session_ids.push_back(id);
    sockets.push_back(*socket);
  }
  // Restore times come back through a shared page, one slot per client.
  auto shared = MemoryMapping::Map(nullptr, kPageSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0,
                                   "client results");
  if (!shared.ok()) return shared.status();
  auto* elapsed = reinterpret_cast<uint64_t*>(shared->data());
  std::fflush(nullptr);
  std::vector<pid_t> children;
  auto start = Clock::now();
  for (unsigned vm = 0; vm < vms; ++vm) {
    pid_t pid = ::fork();
    if (pid < 0) {
      for (pid_t child : children) ::kill(child, SIGKILL);
      (void)WaitForChildren(children, std::chrono::seconds(10));
      return Status::FromErrno(errno, "fork");
    }
    if (pid == 0) ::_exit(RunConcurrentClient(config, round.session_ids[vm], sockets[vm], set, &elapsed[vm]));
    children.push_back(pid);
  }
  UFFD_RETURN_IF_ERROR(WaitForChildren(children, kRestoreLimit));
  round.total_ms = Ms(Clock::now() - start);
  for (unsigned vm = 0; vm < vms; ++vm) round.vm_ms.push_back(elapsed[vm] / 1e6);
  return round;
}

}  // namespace

Result<json> RunConcurrentRestores(const BenchConfig& config, const WorkingSet& set) {
  PagerSetup setup = config.pager;
  setup.cache_max_bytes = config.concurrent_cache_bytes;
  std::vector<double> total_ms, vm_median_ms, read_ratio, rss_mib, hwm_mib, anon_mib;
  std::vector<double> recorded_total_ms, recorded_vm_median_ms, recorded_read_ratio;
  json runs = json::array();
  for (unsigned run = 0; run < config.runs; ++run) {
    // On demand, the memory file in the page cache: the pager's sharing.
    UFFD_RETURN_IF_ERROR(WarmPageCache(config.snapshot_path));
    auto pager = BenchPager::Launch(setup, OnDemandFlavor(), "concurrent");
    if (!pager.ok()) return pager.status().WithContext("launch pager for concurrency");
    auto round = RestoreAtOnce(config, **pager, set, std::to_string(run));
    if (!round.ok()) return round.status();
    auto stats = (*pager)->client().Stats();
    if (!stats.ok()) return stats.status();
    auto memory = ReadProcessMemory((*pager)->pid());
    if (!memory.ok()) return memory.status();
    double backing = (*stats).value("backing_bytes_read", 0.0);
    total_ms.push_back(round->total_ms);
    vm_median_ms.push_back(Median(round->vm_ms));
    read_ratio.push_back(backing / double(set.distinct_bytes()));
    rss_mib.push_back(memory->rss_bytes / double(kMiB));
    hwm_mib.push_back(memory->hwm_bytes / double(kMiB));
    anon_mib.push_back(memory->anon_bytes / double(kMiB));
    json one = {{"total_ms", round->total_ms},
                {"vm_restore_ms", round->vm_ms},
                {"backing_bytes_read", backing},
                {"cache_bytes", (*stats).value("cache_bytes", 0.0)},
                {"cache_hits", (*stats).value("cache_hits", 0.0)},
                {"cache_misses", (*stats).value("cache_misses", 0.0)},
                {"faults", (*stats).value("faults", 0.0)},
                {"pager_vm_rss_bytes", memory->rss_bytes},
                {"pager_vm_hwm_bytes", memory->hwm_bytes},
                {"pager_rss_anon_bytes", memory->anon_bytes},
                {"pager_rss_file_bytes", memory->file_bytes}};
    for (const std::string& id : round->session_ids) (void)(*pager)->client().CloseSession(id);
    pager->reset();

    // A hot pool's case: default flags, a working set recorded by an earlier
    // restore, storage cold, a fresh pager; every VM replays the same record
    // at once and each block of it should be read once, not once per VM.
    auto flavor = DefaultFlavor();
    if (!flavor.ok()) return flavor.status();
    const std::string tag = "concurrent-recorded";
    auto recording = ColdPagerRestore(config, *flavor, tag, PagerDataDir::kFresh, "record-" + std::to_string(run), set);
    if (!recording.ok()) return recording.status().WithContext("recording restore");
    auto replaying = BenchPager::Launch(setup, *flavor, tag, PagerDataDir::kKeep);
    if (!replaying.ok()) return replaying.status().WithContext("launch pager for recorded concurrency");
    UFFD_RETURN_IF_ERROR(MakeStorageCold(config, DataFiles((*replaying)->data_dir(), nullptr), (*replaying)->pid()));
    auto read_before = StorageReadBytes((*replaying)->pid());
    auto recorded = RestoreAtOnce(config, **replaying, set, "rec-" + std::to_string(run));
    if (!recorded.ok()) return recorded.status();
    auto read_bytes = ReadSince((*replaying)->pid(), read_before);
    if (!read_bytes) return Status::Internal("cannot read the pager's /proc/PID/io");
    const double read = double(*read_bytes);
    auto recorded_stats = (*replaying)->client().Stats();
    if (!recorded_stats.ok()) return recorded_stats.status();
    recorded_total_ms.push_back(recorded->total_ms);
    recorded_vm_median_ms.push_back(Median(recorded->vm_ms));
    recorded_read_ratio.push_back(read / double(set.distinct_bytes()));
    one["recorded_cold"] = {{"total_ms", recorded->total_ms},
                            {"vm_restore_ms", recorded->vm_ms},
                            {"storage_bytes_read", read},
                            {"pager_stats", *recorded_stats}};
    for (const std::string& id : recorded->session_ids) (void)(*replaying)->client().CloseSession(id);
    runs.push_back(std::move(one));
    Progress("concurrent restores run " + std::to_string(run + 1) + "/" + std::to_string(config.runs) + " done");
  }
  const double bound_mib = setup.cache_max_bytes / double(kMiB) + 64;
  return json{{"vms", config.concurrent_vms},
              {"threads_per_vm", set.per_thread.size()},
              {"working_set_mib", set.distinct_bytes() / double(kMiB)},
              {"cache_max_bytes", setup.cache_max_bytes},
              {"median_total_ms", Median(total_ms)},
              {"median_vm_restore_ms", Median(vm_median_ms)},
              {"median_backing_read_per_working_set", Median(read_ratio)},
              {"median_pager_rss_mib", Median(rss_mib)},
              {"median_pager_hwm_mib", Median(hwm_mib)},
              {"median_pager_rss_anon_mib", Median(anon_mib)},
              {"rss_bound_mib", bound_mib},
              {"recorded_cold",
               {{"median_total_ms", Median(recorded_total_ms)},
                {"median_vm_restore_ms", Median(recorded_vm_median_ms)},
                {"median_storage_read_per_working_set", Median(recorded_read_ratio)}}},
              {"runs", runs}};
}

}  // namespace uffdpager::bench
