// VerifyGuestProgress: checks two snapshots of one guest against the model.
// Replaying the guest's walk over the earlier memory file, from the earlier
// state's progress to the later state's step counts, must give exactly the
// later state's checksums and leave exactly the later memory file's bytes in
// every walked page. This is how tinyvmm (`tinyvmm --verify`) and its tests
// prove that a restore — File, Uffd through a page server, or a Diff merged
// into an older file — gave the guest exactly the right memory.
#pragma once

#include <cstdint>
#include <string>

#include "uffdpager/status.h"

namespace uffdpager::vmm {

struct VerifyReport {
  uint64_t steps_replayed = 0;
  uint64_t pages_compared = 0;
};

Result<VerifyReport> VerifyGuestProgress(const std::string& from_state, const std::string& from_mem,
                                         const std::string& to_state, const std::string& to_mem);

}  // namespace uffdpager::vmm
