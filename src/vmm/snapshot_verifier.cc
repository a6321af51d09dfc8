#include "vmm/snapshot_verifier.h"

#include <cstring>
#include <vector>

#include "common/durable_file.h"
#include "vmm/guest_program.h"
#include "vmm/snapshot_state.h"

namespace uffdpager::vmm {

Result<VerifyReport> VerifyGuestProgress(const std::string& from_state, const std::string& from_mem,
                                         const std::string& to_state, const std::string& to_mem) {
  auto a = ReadSnapshotStateFile(from_state);
  if (!a.ok()) return a.status();
  auto b = ReadSnapshotStateFile(to_state);
  if (!b.ok()) return b.status();
  if (!(a->layout == b->layout) || a->vcpus.size() != b->vcpus.size() || !(a->program == b->program)) {
    return Status::InvalidArgument("the two snapshots are not of the same guest");
  }
  auto walk = GuestWalk::Create(a->layout, a->machine.vcpu_count, a->program);
  if (!walk.ok()) return walk.status();
  auto image = ReadWholeFileBytes(from_mem);
  if (!image.ok()) return image.status();
  auto actual = ReadWholeFileBytes(to_mem);
  if (!actual.ok()) return actual.status();
  if (image->size() < a->layout.total_size() || actual->size() < a->layout.total_size()) {
    return Status::InvalidArgument("a memory file is smaller than the guest's memory");
  }
  std::vector<VcpuProgress> from;
  std::vector<uint32_t> targets;
  VerifyReport report;
  for (size_t i = 0; i < a->vcpus.size(); ++i) {
    from.push_back(a->vcpus[i].progress);
    targets.push_back(b->vcpus[i].progress.step);
    if (b->vcpus[i].progress.step < a->vcpus[i].progress.step) {
      return Status::InvalidArgument("vCPU " + std::to_string(i) + " of the later snapshot is behind the earlier");
    }
    report.steps_replayed += b->vcpus[i].progress.step - a->vcpus[i].progress.step;
  }
  auto replayed = walk->Replay(*image, from, targets);
  if (!replayed.ok()) return replayed.status();
  for (size_t i = 0; i < replayed->size(); ++i) {
    const VcpuProgress& want = (*replayed)[i];
    const VcpuProgress& got = b->vcpus[i].progress;
    if (!(want == got)) {
      return Status::Internal("vCPU " + std::to_string(i) + " at step " + std::to_string(got.step) +
                              ": the guest's checksum is " + std::to_string(got.checksum) + ", the model's " +
                              std::to_string(want.checksum));
    }
  }
  for (const auto& r : a->layout.regions) {
    for (uint64_t off = 0; off < r.size; off += kGuestPageSize) {
      if (!walk->IsWalkedPage(r.gpa + off)) continue;
      uint64_t at = r.file_offset + off;
      if (std::memcmp(image->data() + at, actual->data() + at, kGuestPageSize) != 0) {
        return Status::Internal("guest page at guest physical " + std::to_string(r.gpa + off) +
                                " differs from the model");
      }
      ++report.pages_compared;
    }
  }
  return report;
}

}  // namespace uffdpager::vmm
