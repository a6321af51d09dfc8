// GuestLayout: where guest RAM sits in guest physical space and in the
// memory file. Like Firecracker on x86: RAM starts at guest physical 0 and
// is split in two regions by a hole below 4 GiB (Firecracker's is the
// 32-bit MMIO gap); the memory file holds the regions back to back, so a
// region's file offset is the sum of the sizes of the regions before it.
// tinyvmm makes the hole's position configurable so small test guests get
// two regions too.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "uffdpager/status.h"

namespace uffdpager::vmm {

inline constexpr uint64_t kGuestPageSize = 4096;
inline constexpr uint64_t kMiB = 1ULL << 20;

struct GuestRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t file_offset = 0;
  bool operator==(const GuestRegion&) const = default;
};

struct GuestLayout {
  std::vector<GuestRegion> regions;
  uint64_t page_size = kGuestPageSize;  // host backing page size: 4 KiB or 2 MiB
  uint64_t hole_start = 0;
  uint64_t hole_size = 0;

  // `mem_bytes` of RAM from guest physical 0, split at `hole_start` (both
  // multiples of 2 MiB). tinyvmm's guest maps only the first 4 GiB
  // (identity-mapped), so all of it must sit below 4 GiB.
  static Result<GuestLayout> ForMemorySize(uint64_t mem_bytes, uint64_t hole_start, uint64_t hole_size,
                                           uint64_t page_size);

  uint64_t total_size() const;
  // Where guest physical `gpa` is in the memory file, if it is RAM.
  std::optional<uint64_t> FileOffsetOf(uint64_t gpa) const;

  nlohmann::json ToJson() const;
  static Result<GuestLayout> FromJson(const nlohmann::json& j);
  bool operator==(const GuestLayout&) const = default;
};

}  // namespace uffdpager::vmm
