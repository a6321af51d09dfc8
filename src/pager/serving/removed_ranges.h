// RemovedRanges: the guest ranges the VMM discarded with MADV_DONTNEED
// (balloon, free-page reporting, virtio-mem). Their snapshot content is dead:
// a later fault in them is served zeros, never the memory file's bytes.
#pragma once

#include <cstdint>
#include <map>

namespace uffdpager {

class RemovedRanges {
 public:
  void Add(uint64_t start, uint64_t end);  // [start, end), merged with neighbours
  bool Contains(uint64_t addr) const;
  bool Overlaps(uint64_t start, uint64_t end) const;
  uint64_t total_bytes() const;
  const std::map<uint64_t, uint64_t>& ranges() const { return ranges_; }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end, disjoint, not adjacent
};

}  // namespace uffdpager
