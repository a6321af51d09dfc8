#include "vmm/guest_ram.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace uffdpager::vmm {

GuestRam::GuestRam(GuestRam&& o) noexcept
    : layout_(std::move(o.layout_)),
      anonymous_(std::move(o.anonymous_)),
      file_regions_(std::move(o.file_regions_)),
      hosts_(std::move(o.hosts_)),
      vmm_dirty_(std::move(o.vmm_dirty_)) {}

GuestRam& GuestRam::operator=(GuestRam&& o) noexcept {
  layout_ = std::move(o.layout_);
  anonymous_ = std::move(o.anonymous_);
  file_regions_ = std::move(o.file_regions_);
  hosts_ = std::move(o.hosts_);
  vmm_dirty_ = std::move(o.vmm_dirty_);
  return *this;
}

void GuestRam::InitBitmaps() {
  vmm_dirty_.clear();
  for (const auto& r : layout_.regions) vmm_dirty_.emplace_back((r.size / kGuestPageSize + 63) / 64, 0);
}

Result<GuestRam> GuestRam::AllocateAnonymous(const GuestLayout& layout) {
  std::vector<uint64_t> sizes;
  for (const auto& r : layout.regions) sizes.push_back(r.size);
  auto memory = GuestMemory::Allocate(sizes, layout.page_size);
  if (!memory.ok()) return memory.status();
  GuestRam ram;
  ram.layout_ = layout;
  for (size_t i = 0; i < memory->region_count(); ++i) ram.hosts_.push_back(memory->region_data(i));
  ram.anonymous_.emplace(std::move(*memory));
  ram.InitBitmaps();
  return ram;
}

Result<GuestRam> GuestRam::MapFilePrivately(const GuestLayout& layout, const std::string& path) {
  if (layout.page_size != kGuestPageSize) {
    return Status::InvalidArgument("a memory file cannot back huge pages; restore with the Uffd backend");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Status::FromErrno(errno, "open memory file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return Status::FromErrno(errno, "stat memory file " + path);
  if (static_cast<uint64_t>(st.st_size) < layout.total_size()) {
    return Status::InvalidArgument("memory file " + path + " holds " + std::to_string(st.st_size) +
                                   " bytes, the snapshot's memory needs " + std::to_string(layout.total_size()));
  }
  GuestRam ram;
  ram.layout_ = layout;
  for (const auto& r : layout.regions) {
    // Private: the guest's writes stay in this process, the file is never
    // changed by running the VM (only by a Diff snapshot written into it).
    auto m = MemoryMapping::Map(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd.get(),
                                static_cast<off_t>(r.file_offset), "memory file region");
    if (!m.ok()) return m.status();
    ram.hosts_.push_back(m->data());
    ram.file_regions_.push_back(std::move(*m));
  }
  ram.InitBitmaps();
  return ram;
}

uint8_t* GuestRam::HostAddress(uint64_t gpa, uint64_t len) const {
  for (size_t i = 0; i < layout_.regions.size(); ++i) {
    const auto& r = layout_.regions[i];
    if (gpa >= r.gpa && gpa + len <= r.gpa + r.size) return hosts_[i] + (gpa - r.gpa);
  }
  return nullptr;
}

Status GuestRam::WriteFromVmm(uint64_t gpa, const void* data, uint64_t len) {
  uint8_t* host = HostAddress(gpa, len);
  if (host == nullptr) return Status::InvalidArgument("guest write outside RAM at " + std::to_string(gpa));
  // This copy may fault the page in through the userfaultfd, like
  // Firecracker's VMGenID write during a snapshot load.
  std::memcpy(host, data, len);
  std::lock_guard<std::mutex> lock(dirty_mu_);
  for (size_t i = 0; i < layout_.regions.size(); ++i) {
    const auto& r = layout_.regions[i];
    if (gpa < r.gpa || gpa >= r.gpa + r.size) continue;
    for (uint64_t p = (gpa - r.gpa) / kGuestPageSize; p <= (gpa - r.gpa + len - 1) / kGuestPageSize; ++p) {
      vmm_dirty_[i][p / 64] |= 1ULL << (p % 64);
    }
  }
  return Status::Ok();
}

std::vector<uint64_t> GuestRam::TakeVmmDirtyBitmap(size_t i) {
  std::lock_guard<std::mutex> lock(dirty_mu_);
  std::vector<uint64_t> out((layout_.regions[i].size / kGuestPageSize + 63) / 64, 0);
  out.swap(vmm_dirty_[i]);
  return out;
}

}  // namespace uffdpager::vmm
