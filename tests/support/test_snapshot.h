// Generated snapshot memory files with known, page-distinct contents, and the
// byte-for-byte comparison of guest memory against such a file.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/guest_memory.h"

namespace uffdpager::testing {

// Writes `size` bytes to `path`: every page different (seeded), and every
// `zero_every`-th page all zeros (0 = none). Returns false on I/O error.
bool WriteTestSnapshot(const std::string& path, uint64_t size, uint64_t seed, uint64_t zero_every = 7);

// The whole file, read back from disk.
std::vector<uint8_t> ReadFileBytes(const std::string& path);

// Compares every byte of `memory` with the memory file at `path`, except that
// bytes inside `zero_ranges` (file offsets [start, end)) must be zero.
// Reading guest memory faults in whatever is still missing.
::testing::AssertionResult MatchesSnapshotFile(const GuestMemory& memory, const std::string& path,
                                               const std::vector<std::pair<uint64_t, uint64_t>>& zero_ranges = {});

}  // namespace uffdpager::testing
