// VmmStandIn: the tests' Firecracker. Lays out guest memory as Firecracker
// does (GuestMemory), performs its exact UFFD handshake with the pager
// (PerformVmmHandshake), and then touches memory the ways a VM does: from
// several vCPU-like threads colliding on a shared hot set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/guest_memory.h"
#include "common/vmm_handshake.h"

namespace uffdpager::testing {

struct VmmStandIn {
  GuestMemory memory;
  VmmHandshake handshake;

  // Allocates the regions and hands them to the pager session at `socket_path`.
  // `options` may also make it lie (VmmHandshakeOptions: features, page size).
  static Result<std::unique_ptr<VmmStandIn>> Restore(const std::string& socket_path,
                                                     const std::vector<uint64_t>& region_sizes,
                                                     uint64_t page_size = 4096, VmmHandshakeOptions options = {});
  // The same over `connection`, connected already: several VMMs can then be
  // queued on one session socket before any of them sends.
  static Result<std::unique_ptr<VmmStandIn>> RestoreOn(UniqueFd connection, const std::vector<uint64_t>& region_sizes,
                                                       uint64_t page_size = 4096, VmmHandshakeOptions options = {});
};

// Reads one byte of every page from `threads` threads. Thread t starts at a
// different page and wraps around, so every page is faulted by several
// threads at nearly the same time (duplicate faults on a hot set).
void TouchAllPages(const GuestMemory& memory, int threads);

// Reads one byte of each of `pages` (4 KiB page numbers of the memory file)
// in order, from the calling thread.
void TouchPages(const GuestMemory& memory, const std::vector<uint64_t>& pages);

// About a third of `page_count` pages, spread out, the same for one `seed`:
// a working set for record and replay tests.
std::vector<uint64_t> SpreadPages(uint64_t page_count, uint64_t seed);

// The number of 4 KiB pages of `memory`.
uint64_t PageCount(const GuestMemory& memory);

}  // namespace uffdpager::testing
