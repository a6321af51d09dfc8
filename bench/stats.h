// Small measurement helpers: order statistics over samples, the page cache
// state of a file, and a process's memory from /proc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "uffdpager/status.h"

namespace uffdpager::bench {

// A duration in milliseconds, for reports.
double Ms(std::chrono::nanoseconds d);

// One line of progress on stderr (indented, flushed): the benchmarks run for
// minutes, and their stdout is the report.
void Progress(const std::string& line);

// The median of `samples` (mean of the two middle ones for an even count);
// 0 when empty.
double Median(std::vector<double> samples);

// The p-th percentile (0..100), nearest-rank; 0 when empty.
double Percentile(std::vector<double> samples, double p);

// Evicts `path` from the page cache: fadvise(DONTNEED) on the file, then a
// global drop_caches (clean page cache only) so nothing it left behind
// (e.g. readahead of neighbours) survives. Needs root for drop_caches; the
// fadvise alone is used when that write fails.
Status EvictFromPageCache(const std::string& path);

// Evicts exactly `paths` from the page cache (written back first, then
// fadvise(DONTNEED)), and nothing else: the rest of the machine keeps its
// cache. A page mapped by some process stays; ResidentBytes tells.
Status EvictFilesFromPageCache(const std::vector<std::string>& paths);

// How many bytes of `path` are in the page cache now (mincore of a mapping
// that is never touched).
Result<uint64_t> ResidentBytes(const std::string& path);

// Reads every file `pid` maps executable (its binary, its libraries) whole,
// so code it has not run yet is in the page cache and its first run reads
// nothing from storage (pid 0: this process).
Status WarmExecutableMappings(pid_t pid);

// read_bytes of /proc/PID/io: bytes the process caused to be fetched from
// storage, readahead included, over all its threads, live and exited (pid
// 0: this process). Unavailable without task I/O accounting.
Result<uint64_t> StorageReadBytes(pid_t pid);
// The bytes `pid` has read from storage since `before`, if both readings exist.
std::optional<uint64_t> ReadSince(pid_t pid, const Result<uint64_t>& before);

// Reads the whole file once so it sits in the page cache.
Status WarmPageCache(const std::string& path);

// VmRSS and VmHWM of `pid` in bytes, from /proc/PID/status.
struct ProcessMemory {
  uint64_t rss_bytes = 0;
  uint64_t hwm_bytes = 0;
  uint64_t anon_bytes = 0;  // RssAnon: heap, the page cache's buffers
  uint64_t file_bytes = 0;  // RssFile: mapped files (and the binary)
};
Result<ProcessMemory> ReadProcessMemory(pid_t pid);

}  // namespace uffdpager::bench
