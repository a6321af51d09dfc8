// restore_bench's `tinyvmm` section: the same restore comparison, but with a
// real KVM guest (tinyvmm) instead of vCPU-like threads. A source tinyvmm
// boots, runs (reading and writing its memory) and writes a Full snapshot;
// then every variant restores it in a fresh tinyvmm, `resume_vm: true`, and
// is timed from `PUT /snapshot/load` until each vCPU has walked
// `target_steps` more pages (GET /tinyvmm/guest). Variants: the File backend
// (page cache warm) and, for each pager flavor, a fresh pager with a cold
// and then a warm restore (for `--prefetch`: record, then replay), all
// Uffd. Each restore is checked: the guest is paused and its per-vCPU
// checksums must equal the host model's replay of the walk over the
// snapshot's memory file (every byte of every page the guest read is in
// those checksums).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "restore_variants.h"

namespace uffdpager::bench {

struct TinyVmmBenchConfig {
  std::string binary;    // tinyvmm
  std::string work_dir;  // the snapshot files go here (a real filesystem, not /tmp)
  uint64_t memory_mib = 256;
  unsigned vcpus = 2;
  // Steps each vCPU takes after the restore before the clock stops (one page
  // read per step, at random in its own partition of memory). 0: one pass,
  // as many steps as the vCPU has pages (≈63% of guest memory touched).
  uint64_t target_steps = 0;
  uint64_t source_steps = 3000;  // how far the source runs before its snapshot
};

// Why the section cannot run here (no /dev/kvm, tinyvmm not built), or ""
// when it can.
std::string TinyVmmUnavailableReason(const TinyVmmBenchConfig& vmm);

// Runs the section: `config.runs` interleaved runs of every variant. Uses
// config.pager (pager binary, data root for sockets) and config.pager_help.
Result<nlohmann::json> RunTinyVmmRestore(const BenchConfig& config, const TinyVmmBenchConfig& vmm);

}  // namespace uffdpager::bench
