// restore_bench's `cold` section: restores with the snapshot's memory file
// NOT in memory, the case a File-backend restore pays for with the disk.
// For every working set and every readahead value (set on the snapshot's
// block device for the variant, put back afterwards by ReadaheadOverride):
//  - file_cold: Firecracker's File backend (open + private mmap + touches);
//  - copy_floor_1_thread / copy_floor_2_threads: the working set copied in
//    from memory (restore_variants.h), what no userfaultfd restore beats;
//  - for each pager flavor, a FRESH pager process started for the restore
//    (its memory cache empty):
//      <flavor>_never_seen: on an empty data directory;
//      <flavor>_recorded: on the data directory the never_seen restore just
//        left behind (whatever it recorded: working-set files), so only its
//        memory is new.
// Before each restore the memory file and the pager's data files are evicted
// from the page cache (exactly those files: the shared machine keeps the rest
// of its cache) and the memory file is checked to have no byte resident; the
// binaries and libraries of the restoring process are read into the page
// cache first, so the bytes read from storage are the restore's own.
// Each sample has its time and its bytes read from storage (/proc/PID/io of
// the process that reads: this one for file_cold, the pager for the pager
// variants); every restore verifies its page sample against the file.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "pager_harness.h"
#include "readahead.h"
#include "restore_steps.h"
#include "restore_variants.h"

namespace uffdpager::bench {

// The regular files under a pager's data directory `dir` (recursively).
// `record_bytes` gets the size of what a restore can have recorded for later
// ones: all of them except the pager's log, its pid file and live/.
std::vector<std::string> DataFiles(const std::string& dir, uint64_t* record_bytes);

// Storage goes cold for the next restore by `reader` (0: this process): the
// memory file and `data_files` leave the page cache, the reader's own code
// enters it, and the memory file must have no byte left in memory.
Status MakeStorageCold(const BenchConfig& config, std::vector<std::string> data_files, pid_t reader);

// One restore through a fresh pager of `flavor` on `tag`'s data directory,
// with storage cold; the pager stops after it (and saves what it recorded).
Result<RestoreSample> ColdPagerRestore(const BenchConfig& config, const PagerFlavor& flavor, const std::string& tag,
                                       PagerDataDir data, const std::string& session_id, const WorkingSet& set);

// `config.runs` interleaved runs; returns one entry per working set and
// readahead value (in that nesting order), each with its variants (medians,
// samples, read bytes, and ratios to file_cold at the same readahead and to
// the copy floors). Uses config.pager.data_root for the pagers' directories.
Result<nlohmann::json> RunColdRestores(const BenchConfig& config, const std::vector<const WorkingSet*>& sets,
                                       const std::vector<uint64_t>& readahead_kib, ReadaheadOverride& readahead);

}  // namespace uffdpager::bench
