// The single restores restore_bench's restore and cold sections are made of
// (a File-backend restore, a restore through a pager, the copy floor), each
// timed and with the bytes it made the kernel fetch from storage, and the
// series of samples they add up to.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pager_harness.h"
#include "restore_variants.h"
#include "workload.h"

namespace uffdpager::bench {

inline constexpr auto kRestoreLimit = std::chrono::seconds(300);
inline constexpr uint64_t kBatchBytes = 2 * kMiB;

// One restore's measurements.
struct RestoreSample {
  double ms = 0;
  // Bytes the restore made the kernel fetch from storage (read_bytes of
  // /proc/PID/io, readahead included); none without task I/O accounting.
  std::optional<uint64_t> read_bytes;
  nlohmann::json counters;              // pager restores: the session's counters
  std::optional<uint64_t> cache_bytes;  // pager restores: its cache afterwards
  // Pager restores: bytes the pager fetched from the object store since it
  // started (the benchmarks start a fresh pager per object restore).
  std::optional<uint64_t> store_bytes;
};

// File backend: what Firecracker's `File` restore does, open + private mmap,
// then the vCPUs fault pages straight from the page cache (or the disk).
// read_bytes: this process's, from the open until the last touch (nothing
// else in this process reads files meanwhile); the page sample is verified
// against the file after that.
Result<RestoreSample> TimeFileRestore(const BenchConfig& config, const WorkingSet& set);

// One restore through `pager`: the handshake and the touches are timed (the
// orchestrator's POST /sessions happens before the VM loads, so it is not).
// read_bytes: the pager process's, from before POST /sessions until the
// touched pages are verified (the session's reads in flight are its own).
Result<RestoreSample> TimePagerRestore(const BenchConfig& config, const BenchPager& pager,
                                       const std::string& session_id, const WorkingSet& set);

// The copy floor (restore_variants.h) of `sorted_pages`: the file warmed and
// mapped populated, then one copy per CopyFloorThreads() entry, in order.
// read_bytes: this process's during the copy (none: it copies from memory).
const std::vector<unsigned>& CopyFloorThreads();
std::string CopyFloorName(unsigned threads);
Result<std::vector<RestoreSample>> MeasureCopyFloors(const BenchConfig& config,
                                                     const std::vector<uint64_t>& sorted_pages);

// The scattered-read floor of a never-seen restore from cold storage: the
// working set's pages read from the (cold) memory file with one 4 KiB
// `pread` each, by as many threads as the set has (each its own pages, in
// its first-touch order), nothing installed. A restore that reads only the
// pages its guest touches, without knowing them in advance, waits at least
// this long for storage; only reading more than the working set (the File
// backend's readahead) gets below it.
Result<RestoreSample> TimeScatteredReadFloor(const BenchConfig& config, const WorkingSet& set);
inline constexpr const char* kScatteredReadFloor = "scattered_read_floor";

// The demand-fault floor of a never-seen restore from cold storage: the set's
// threads touch it as in every other variant (so the guest's own work and
// its faults share the cores as they do with the pager) while one handler
// thread per touching thread, each taking one fault at a time, reads the
// faulting 4 KiB page from the memory file (one `pread`, no readahead) and
// installs it. A demand pager built from nothing but the kernel's
// userfaultfd that reads exactly the pages the guest touches, with no cache,
// queue or fault-around: the scattered-read floor plus the fault round trip.
// Only guessing beyond the faulting page (fault-around, readahead) gets below
// it, which a working set without locality gives nothing to go on. The bytes
// are verified as every restore's are.
Result<RestoreSample> TimeDemandFaultFloor(const BenchConfig& config, const WorkingSet& set);
inline constexpr const char* kDemandFaultFloor = "demand_fault_floor";

// Whether `config`'s pager has `flavor` (its flag is in `uffd-pager --help`).
bool FlavorAvailable(const BenchConfig& config, const PagerFlavor& flavor);

// A named series of samples; a skipped series keeps only its note.
struct Series {
  std::string name;
  std::vector<double> ms;
  std::vector<double> read_mib;  // one per sample, when the kernel accounts reads
  // Pager restores: the session's counters (faults served, pages installed
  // by fault-around and by prefetch) and the pager's cache afterwards (MiB).
  std::vector<double> faults, fault_around_pages, prefetch_pages, cache_mib;
  std::vector<double> store_mib;  // object restores: fetched from the store
  std::string skipped;

  void Add(const RestoreSample& sample);
  // Medians (and samples): median_ms, samples_ms; median_read_mib,
  // samples_read_mib and read_per_working_set (read bytes over the working
  // set's, `working_set_bytes`) when every sample has its reads; the pager
  // counters when present; or just {name, skipped}.
  nlohmann::json ToJson(uint64_t working_set_bytes) const;
};

// Adds a series `<flavor><suffix>` for each suffix and each of the
// configured flavors (RestoreFlavors(config.flavors)); a flavor this pager
// lacks gets skipped series with a note. Returns the flavors it has.
std::vector<PagerFlavor> AddFlavorSeries(const BenchConfig& config, const std::vector<std::string>& suffixes,
                                         std::vector<Series>& series);

// The series named `name` in `series`. REQUIRES: it is there.
Series& FindSeries(std::vector<Series>& series, const std::string& name);
const Series& FindSeries(const std::vector<Series>& series, const std::string& name);

}  // namespace uffdpager::bench
