// Fuzzes what a VMM (or anyone who can connect to a session socket) sends:
// the handshake payload, through the parser and the check against the
// memory file. Whatever is accepted must satisfy what the fault engine
// relies on; a violation traps.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/uffd_handshake.h"
#include "pager/serving/memory_layout.h"

namespace {

void Require(bool condition) {
  if (!condition) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uffdpager;
  std::string_view payload(reinterpret_cast<const char*>(data), size);
  HandshakeLimits limits;
  auto regions = ParseHandshake(payload, limits);
  if (!regions.ok()) return 0;
  Require(!regions->empty() && regions->size() <= limits.max_regions);
  for (const auto& r : *regions) {
    Require(r.page_size >= 4096 && (r.page_size & (r.page_size - 1)) == 0);
    Require(r.size > 0 && r.size % r.page_size == 0 && r.base_host_virt_addr % r.page_size == 0);
    Require(r.end_addr() > r.base_host_virt_addr && r.offset + r.size > r.offset);
  }
  // What the pager writes back (tinyvmm, the tests) must parse to the same.
  for (auto dialect : {HandshakeDialect::kV1_12, HandshakeDialect::kV1_7}) {
    auto again = ParseHandshake(SerializeHandshake(*regions, dialect), limits);
    Require(again.ok() && *again == *regions);
  }
  // Against a memory file as large as the last region needs, and one byte
  // short of it: the first must be accepted and every page must map back.
  uint64_t needed = 0;
  for (const auto& r : *regions) needed = std::max(needed, r.offset + r.size);
  auto layout = MemoryLayout::Create(*regions, needed);
  Require(layout.ok());
  Require(!MemoryLayout::Create(*regions, needed - 1).ok());
  for (const auto& r : *regions) {
    auto first = layout->Locate(r.base_host_virt_addr);
    auto last = layout->Locate(r.end_addr() - 1);
    Require(first.has_value() && last.has_value());
    Require(first->file_offset == r.offset && last->file_offset == r.offset + r.size - r.page_size);
  }
  return 0;
}
