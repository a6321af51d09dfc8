// The four measurements of restore_bench. Each runs its baselines and the
// real pager side by side in the same process run and returns its results
// as JSON (raw samples plus medians and ratios); report.cc prints them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pager_harness.h"
#include "workload.h"

namespace uffdpager::bench {

struct BenchConfig {
  std::string snapshot_path;
  // Non-empty: pager restores serve this chain (base first) instead, whose
  // bytes are snapshot_path's (what every sample is verified against).
  std::vector<std::string> snapshot_layers;
  // Non-empty: pager restores serve this object ("s3://BUCKET/KEY") instead,
  // whose bytes are snapshot_path's.
  std::string snapshot_url;
  uint64_t memory_bytes = 0;
  unsigned runs = 5;
  unsigned vcpu_threads = 4;
  uint64_t latency_pages = 8192;  // sequential single-page touches per latency run
  unsigned concurrent_vms = 16;
  uint64_t concurrent_cache_bytes = 0;  // pager cache bound in the concurrency test
  uint64_t verify_stride = 61;          // check every N-th touched page against the file
  PagerSetup pager;                     // binary, work dir, cache bound of the other tests
  std::string pager_help;               // `uffd-pager --help`, to see which flavors exist
  std::vector<std::string> flavors;     // restore flavors to run (empty: all; on-demand always)
};

// 1. Time until 4 vCPU-like threads have touched `set`: file backend (page
// cache warm and cold) against every pager flavor (its cache cold on a fresh
// pager, then warm on a second restore through the same pager).
Result<nlohmann::json> RunRestoreComparison(const BenchConfig& config, const WorkingSet& set);

// 2. Per-fault service latency of sequential single-page touches: the
// minimal handler against the pager (cache cold and warm).
Result<nlohmann::json> RunFaultLatency(const BenchConfig& config);

// 3. Populating the whole snapshot: POST /sessions/{id}/complete on an
// untouched session against raw 2 MiB UFFDIO_COPY batches.
Result<nlohmann::json> RunCompletionThroughput(const BenchConfig& config);

// 4. `concurrent_vms` client processes restoring one snapshot through one
// pager at once: total time, disk reads per working set, pager memory.
Result<nlohmann::json> RunConcurrentRestores(const BenchConfig& config, const WorkingSet& set);

// 5. A chain against one file of the same bytes (layered_restore.cc): the
// snapshot with kChainDepth - 1 Diff layers on top, through the default
// pager, with the files in the page cache (the pager's cache cold, then
// warm) and with nothing cached (storage cold).
Result<nlohmann::json> RunLayeredRestore(const BenchConfig& config, const WorkingSet& set);

// 6. Restores from an object in S3-compatible storage (store_restore.cc)
// against the File backend on the local copy with a cold page cache, with
// 0, 5 and 20 ms added to each request between pager and store: a fresh pager
// on a host that never saw the snapshot, and a restarted one whose disk tier
// and recorded working set are there. The store is the one the AWS_*
// environment names; without AWS_ENDPOINT_URL `skipped` says so and the
// result is null.
Result<nlohmann::json> RunStoreRestore(const BenchConfig& config, const WorkingSet& set, std::string* skipped);

}  // namespace uffdpager::bench
