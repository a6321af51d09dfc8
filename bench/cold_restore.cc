#include "cold_restore.h"

#include <filesystem>
#include <map>
#include <string>

#include <fmt/format.h>

#include "pager_harness.h"
#include "report.h"
#include "restore_steps.h"
#include "stats.h"

namespace uffdpager::bench {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kPagerVariants = {"_never_seen", "_recorded"};

// The variants of one working set at one readahead.
struct Cell {
  const WorkingSet* set;
  uint64_t readahead_kib;
  std::vector<Series> series;
  // Per flavor: the size of the data files each _recorded restore's pager
  // found (what the never_seen restore before it left), KiB.
  std::map<std::string, std::vector<double>> record_kib;
};

json CellJson(const Cell& cell, uint64_t device_kib) {
  const WorkingSet& set = *cell.set;
  const std::vector<Series>& series = cell.series;
  const double file_cold = Median(FindSeries(series, "file_cold").ms);
  json variants = json::array();
  for (const Series& s : series) {
    json j = s.ToJson(set.distinct_bytes());
    if (s.skipped.empty() && !s.name.starts_with("copy_floor") && s.name != kScatteredReadFloor) {
      const double median = Median(s.ms);
      j["ratio_vs_file_cold"] = median / file_cold;
      j[std::string("ratio_vs_") + kScatteredReadFloor] = median / Median(FindSeries(series, kScatteredReadFloor).ms);
      for (unsigned threads : CopyFloorThreads()) {
        const std::string floor = CopyFloorName(threads);
        j["ratio_vs_" + floor] = median / Median(FindSeries(series, floor).ms);
      }
    }
    if (auto it = cell.record_kib.find(s.name); it != cell.record_kib.end())
      j["median_record_kib"] = Median(it->second);
    variants.push_back(j);
  }
  json out = WorkingSetResults(set, std::move(variants));
  out["readahead_kib"] = cell.readahead_kib;
  out["readahead_is_device_default"] = cell.readahead_kib == device_kib;
  return out;
}

}  // namespace

// The regular files under a pager's data directory `dir` (recursively).
// `record_bytes` gets the size of what a restore can have recorded for later
// ones: all of them except the pager's log, its pid file and live/ (the
// sessions' crash-recovery records).
std::vector<std::string> DataFiles(const std::string& dir, uint64_t* record_bytes) {
  std::vector<std::string> files;
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    files.push_back(it->path().string());
    const std::string name = it->path().filename().string();
    if (name != "pager.log" && name != "pager.pid" && it->path().parent_path().filename() != "live") {
      total += it->file_size(ec);
    }
  }
  if (record_bytes) *record_bytes = total;
  return files;
}

// Storage goes cold for the next restore by `reader` (0: this process): the
// memory file and `data_files` leave the page cache, the reader's own code
// enters it, and the memory file must have no byte left in memory.
Status MakeStorageCold(const BenchConfig& config, std::vector<std::string> data_files, pid_t reader) {
  data_files.push_back(config.snapshot_path);
  UFFD_RETURN_IF_ERROR(EvictFilesFromPageCache(data_files));
  UFFD_RETURN_IF_ERROR(WarmExecutableMappings(reader));
  auto resident = ResidentBytes(config.snapshot_path);
  if (!resident.ok()) return resident.status();
  if (*resident != 0) {
    return Status::Internal(fmt::format("{} still has {} bytes in the page cache after eviction (mapped by a process?)",
                                        config.snapshot_path, *resident));
  }
  return Status::Ok();
}

// One restore through a fresh pager of `flavor` on `tag`'s data directory.
Result<RestoreSample> ColdPagerRestore(const BenchConfig& config, const PagerFlavor& flavor, const std::string& tag,
                                       PagerDataDir data, const std::string& session_id, const WorkingSet& set) {
  auto pager = BenchPager::Launch(config.pager, flavor, tag, data);
  if (!pager.ok()) return pager.status().WithContext("launch " + flavor.name);
  UFFD_RETURN_IF_ERROR(MakeStorageCold(config, DataFiles((*pager)->data_dir(), nullptr), (*pager)->pid()));
  auto sample = TimePagerRestore(config, **pager, session_id, set);
  if (!sample.ok()) return sample.status().WithContext(flavor.name + " " + session_id);
  // Stopping the pager (destroying it) makes it save what it recorded.
  return sample;
}

Result<json> RunColdRestores(const BenchConfig& config, const std::vector<const WorkingSet*>& sets,
                             const std::vector<uint64_t>& readahead_kib, ReadaheadOverride& readahead) {
  std::vector<Cell> cells;
  std::vector<PagerFlavor> flavors;
  for (const WorkingSet* set : sets) {
    for (uint64_t kib : readahead_kib) {
      Cell cell{set, kib, {{"file_cold"}, {kScatteredReadFloor}, {kDemandFaultFloor}}, {}};
      for (unsigned threads : CopyFloorThreads()) cell.series.push_back({CopyFloorName(threads)});
      flavors = AddFlavorSeries(config, kPagerVariants, cell.series);
      cells.push_back(std::move(cell));
    }
  }

  // Runs interleave the variants so slow drift of a shared machine spreads
  // over all of them instead of biasing one.
  for (unsigned run = 0; run < config.runs; ++run) {
    for (Cell& cell : cells) {
      const WorkingSet& set = *cell.set;
      // Set before anything opens the file: opening copies the device's
      // readahead into the file's own state.
      UFFD_RETURN_IF_ERROR(readahead.Set(cell.readahead_kib));

      auto floors = MeasureCopyFloors(config, set.SortedDistinctPages());
      if (!floors.ok()) return floors.status();
      for (size_t i = 0; i < floors->size(); ++i) {
        FindSeries(cell.series, CopyFloorName(CopyFloorThreads()[i])).Add((*floors)[i]);
      }

      UFFD_RETURN_IF_ERROR(MakeStorageCold(config, {}, 0));
      auto file = TimeFileRestore(config, set);
      if (!file.ok()) return file.status().WithContext("file_cold");
      FindSeries(cell.series, "file_cold").Add(*file);

      UFFD_RETURN_IF_ERROR(MakeStorageCold(config, {}, 0));
      auto scattered = TimeScatteredReadFloor(config, set);
      if (!scattered.ok()) return scattered.status().WithContext(kScatteredReadFloor);
      FindSeries(cell.series, kScatteredReadFloor).Add(*scattered);

      UFFD_RETURN_IF_ERROR(MakeStorageCold(config, {}, 0));
      auto demand = TimeDemandFaultFloor(config, set);
      if (!demand.ok()) return demand.status().WithContext(kDemandFaultFloor);
      FindSeries(cell.series, kDemandFaultFloor).Add(*demand);

      for (size_t f = 0; f < flavors.size(); ++f) {
        const PagerFlavor& flavor = flavors[f];
        // Short names: session socket paths must fit in 108 bytes.
        const std::string tag = "cold-" + std::to_string(f);
        const std::string id = fmt::format("{}-{}-{}", set.name, cell.readahead_kib, run);
        auto never_seen = ColdPagerRestore(config, flavor, tag, PagerDataDir::kFresh, id + "-new", set);
        if (!never_seen.ok()) return never_seen.status();
        FindSeries(cell.series, flavor.name + "_never_seen").Add(*never_seen);

        uint64_t record_bytes = 0;
        DataFiles(config.pager.data_root + "/" + tag, &record_bytes);
        cell.record_kib[flavor.name + "_recorded"].push_back(double(record_bytes) / 1024.0);
        auto recorded = ColdPagerRestore(config, flavor, tag, PagerDataDir::kKeep, id + "-rec", set);
        if (!recorded.ok()) return recorded.status();
        FindSeries(cell.series, flavor.name + "_recorded").Add(*recorded);
      }
      Progress(fmt::format("cold: {}, readahead {} KiB, run {}/{} done", set.name, cell.readahead_kib, run + 1,
                           config.runs));
    }
  }
  UFFD_RETURN_IF_ERROR(readahead.Restore());

  json entries = json::array();
  for (const Cell& cell : cells) entries.push_back(CellJson(cell, readahead.original_kib()));
  return entries;
}

}  // namespace uffdpager::bench
