#include "vmm/guest_layout.h"

#include <algorithm>
#include <string>

#include "common/json_fields.h"

namespace uffdpager::vmm {

namespace {

constexpr uint64_t kTwoMiB = 2 * kMiB;
constexpr uint64_t k4GiB = 1ULL << 32;

// The fields; GuestLayout::FromJson checks what they describe.
Status ReadLayout(const nlohmann::json& j, GuestLayout* layout) {
  JsonFields fields(j);
  std::vector<nlohmann::json> regions;
  UFFD_RETURN_IF_ERROR(fields.Read("page_size", &layout->page_size));
  UFFD_RETURN_IF_ERROR(fields.Read("hole_start", &layout->hole_start));
  UFFD_RETURN_IF_ERROR(fields.Read("hole_size", &layout->hole_size));
  UFFD_RETURN_IF_ERROR(fields.Read("regions", &regions));
  for (size_t i = 0; i < regions.size(); ++i) {
    JsonFields r(regions[i], "regions[" + std::to_string(i) + "]");
    GuestRegion region;
    UFFD_RETURN_IF_ERROR(r.Read("guest_phys_addr", &region.gpa));
    UFFD_RETURN_IF_ERROR(r.Read("size", &region.size));
    UFFD_RETURN_IF_ERROR(r.Read("file_offset", &region.file_offset));
    layout->regions.push_back(region);
  }
  return Status::Ok();
}

}  // namespace

Result<GuestLayout> GuestLayout::ForMemorySize(uint64_t mem_bytes, uint64_t hole_start, uint64_t hole_size,
                                               uint64_t page_size) {
  if (mem_bytes == 0 || mem_bytes % page_size != 0) {
    return Status::InvalidArgument("memory size " + std::to_string(mem_bytes) +
                                   " is not a positive multiple of the page size");
  }
  if (hole_start == 0 || hole_start % kTwoMiB != 0 || hole_size % kTwoMiB != 0) {
    return Status::InvalidArgument("the memory hole must start above 0 and be 2 MiB aligned");
  }
  GuestLayout layout;
  layout.page_size = page_size;
  layout.hole_start = hole_start;
  layout.hole_size = hole_size;
  uint64_t first = std::min(mem_bytes, hole_start);
  layout.regions.push_back({0, first, 0});
  if (mem_bytes > first) {
    layout.regions.push_back({hole_start + hole_size, mem_bytes - first, first});
  }
  if (layout.regions.back().gpa + layout.regions.back().size > k4GiB - 16 * kMiB) {
    return Status::InvalidArgument("guest memory of " + std::to_string(mem_bytes / kMiB) +
                                   " MiB with this hole does not fit below 4 GiB, where tinyvmm's guest maps memory");
  }
  return layout;
}

uint64_t GuestLayout::total_size() const {
  uint64_t total = 0;
  for (const auto& r : regions) total += r.size;
  return total;
}

std::optional<uint64_t> GuestLayout::FileOffsetOf(uint64_t gpa) const {
  for (const auto& r : regions) {
    if (gpa >= r.gpa && gpa < r.gpa + r.size) return r.file_offset + (gpa - r.gpa);
  }
  return std::nullopt;
}

nlohmann::json GuestLayout::ToJson() const {
  nlohmann::json regs = nlohmann::json::array();
  for (const auto& r : regions) {
    regs.push_back({{"guest_phys_addr", r.gpa}, {"size", r.size}, {"file_offset", r.file_offset}});
  }
  return {{"page_size", page_size}, {"hole_start", hole_start}, {"hole_size", hole_size}, {"regions", regs}};
}

Result<GuestLayout> GuestLayout::FromJson(const nlohmann::json& j) {
  GuestLayout layout;
  if (Status st = ReadLayout(j, &layout); !st.ok()) return st.WithContext("memory layout");
  // First: the regions are checked against the page size (a zero would divide).
  if (layout.page_size != kGuestPageSize && layout.page_size != kTwoMiB) {
    return Status::InvalidArgument("memory layout has an unsupported page size");
  }
  if (layout.regions.empty() || layout.regions.size() > 2) {
    return Status::InvalidArgument("memory layout must have one or two regions");
  }
  uint64_t expected_offset = 0;
  for (const auto& region : layout.regions) {
    if (region.size == 0 || region.size % layout.page_size != 0 || region.gpa % kTwoMiB != 0 ||
        region.file_offset != expected_offset) {
      return Status::InvalidArgument("memory layout has a malformed region");
    }
    expected_offset += region.size;
  }
  return layout;
}

}  // namespace uffdpager::vmm
