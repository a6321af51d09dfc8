// The state file format and the guest model, in process.
#include <gtest/gtest.h>

#include "vmm/guest_program.h"
#include "vmm/snapshot_state.h"

namespace uffdpager::vmm {
namespace {

SnapshotState Sample() {
  SnapshotState s;
  s.machine.vcpu_count = 2;
  s.machine.mem_size_mib = 32;
  s.layout = *GuestLayout::ForMemorySize(32 * kMiB, 16 * kMiB, 16 * kMiB, kGuestPageSize);
  s.program = {7, 3};
  s.generation = 5;
  for (int i = 0; i < 2; ++i) {
    VcpuState v;
    v.regs.rip = 0x1000 + i;
    v.regs.rdi = 42;
    v.sregs.cr0 = 0x80000011;
    v.progress = {42, 0xdeadbeef, 99};
    s.vcpus.push_back(v);
  }
  return s;
}

TEST(SnapshotStateTest, RoundTrips) {
  SnapshotState s = Sample();
  auto back = DecodeSnapshotState(EncodeSnapshotState(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->machine, s.machine);
  EXPECT_EQ(back->layout, s.layout);
  EXPECT_EQ(back->program, s.program);
  EXPECT_EQ(back->generation, 5u);
  ASSERT_EQ(back->vcpus.size(), 2u);
  EXPECT_EQ(back->vcpus[1].regs.rip, 0x1001u);
  EXPECT_EQ(back->vcpus[1].sregs.cr0, 0x80000011u);
  EXPECT_EQ(back->vcpus[1].progress, s.vcpus[1].progress);
}

TEST(SnapshotStateTest, RejectsEveryCorruption) {
  std::string good = EncodeSnapshotState(Sample());
  for (size_t i = 0; i < good.size(); i += 7) {
    std::string bad = good;
    bad[i] ^= 1;
    EXPECT_FALSE(DecodeSnapshotState(bad).ok()) << "flipped byte " << i;
  }
  EXPECT_FALSE(DecodeSnapshotState(good.substr(0, good.size() - 1)).ok());
  EXPECT_FALSE(DecodeSnapshotState(good + "x").ok());
  EXPECT_FALSE(DecodeSnapshotState("").ok());
  std::string future = good;
  future[8] = 2;  // format version 2
  auto r = DecodeSnapshotState(future);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("version"), std::string::npos);
}

TEST(GuestLayoutTest, SplitsAtTheHoleLikeFirecracker) {
  auto one = GuestLayout::ForMemorySize(16 * kMiB, 64 * kMiB, 64 * kMiB, kGuestPageSize);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->regions.size(), 1u);
  auto two = GuestLayout::ForMemorySize(128 * kMiB, 64 * kMiB, 64 * kMiB, kGuestPageSize);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->regions.size(), 2u);
  EXPECT_EQ(two->regions[1], (GuestRegion{128 * kMiB, 64 * kMiB, 64 * kMiB}));
  EXPECT_EQ(two->FileOffsetOf(128 * kMiB + 4096), 64 * kMiB + 4096);
  EXPECT_FALSE(two->FileOffsetOf(100 * kMiB).has_value());
}

TEST(GuestWalkTest, PartitionsAreDisjointAndAvoidTheHole) {
  auto layout = GuestLayout::ForMemorySize(32 * kMiB, 16 * kMiB, 16 * kMiB, kGuestPageSize);
  auto walk = GuestWalk::Create(*layout, 3, {1, 2});
  ASSERT_TRUE(walk.ok());
  std::vector<uint8_t> image(32 * kMiB, 0);
  for (uint32_t v = 0; v < 3; ++v) {
    VcpuProgress p = walk->InitialProgress(v);
    for (int k = 0; k < 2000; ++k) {
      p = walk->Step(v, p, [&](uint64_t gpa) -> uint8_t* {
        EXPECT_TRUE(walk->IsWalkedPage(gpa));
        auto off = layout->FileOffsetOf(gpa);
        EXPECT_TRUE(off.has_value()) << gpa;
        // Walk page index = guest page number, less the hole's pages past it.
        uint64_t page = gpa / kGuestPageSize;
        if (gpa >= 32 * kMiB) page -= 16 * kMiB / kGuestPageSize;
        EXPECT_EQ((page - kReservedPages) % 3, v) << "page outside vCPU " << v << "'s partition";
        return image.data() + *off;
      });
    }
    EXPECT_EQ(p.step, 2000u);
  }
}

}  // namespace
}  // namespace uffdpager::vmm
