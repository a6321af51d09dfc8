// LatencyHistogram: how long something took, in fixed buckets (Prometheus
// style, cumulative when read). Lock-free: the fault path only increments
// relaxed atomics, so observing costs a few nanoseconds and never blocks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace uffdpager {

class LatencyHistogram {
 public:
  // Upper bounds in nanoseconds: 1 µs to 1 s in 1-2.5-5 steps, which spans
  // a busy-polled fault (tens of µs) to a read stuck on slow storage.
  static constexpr std::array<uint64_t, 19> kBoundsNs = {
      1'000,      2'500,       5'000,       10'000,      25'000,       50'000,     100'000,
      250'000,    500'000,     1'000'000,   2'500'000,   5'000'000,    10'000'000, 25'000'000,
      50'000'000, 100'000'000, 250'000'000, 500'000'000, 1'000'000'000};

  void Observe(uint64_t ns);

  struct Snapshot {
    std::array<uint64_t, kBoundsNs.size()> cumulative{};  // samples <= each bound
    uint64_t count = 0;                                   // all samples (the +Inf bucket)
    uint64_t sum_ns = 0;
  };
  // Buckets are read one by one while others observe; the count is derived
  // from the buckets so a snapshot is always self-consistent.
  Snapshot Read() const;

 private:
  std::array<std::atomic<uint64_t>, kBoundsNs.size() + 1> buckets_{};  // last: above every bound
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace uffdpager
