#include "support/vmm_stand_in.h"

#include <atomic>
#include <random>
#include <thread>

namespace uffdpager::testing {

Result<std::unique_ptr<VmmStandIn>> VmmStandIn::Restore(const std::string& socket_path,
                                                        const std::vector<uint64_t>& region_sizes, uint64_t page_size,
                                                        VmmHandshakeOptions options) {
  auto memory = GuestMemory::Allocate(region_sizes, page_size);
  if (!memory.ok()) return memory.status();
  auto handshake = PerformVmmHandshake(*memory, socket_path, options);
  if (!handshake.ok()) return handshake.status();
  return std::unique_ptr<VmmStandIn>(new VmmStandIn{std::move(*memory), std::move(*handshake)});
}

Result<std::unique_ptr<VmmStandIn>> VmmStandIn::RestoreOn(UniqueFd connection,
                                                          const std::vector<uint64_t>& region_sizes, uint64_t page_size,
                                                          VmmHandshakeOptions options) {
  auto memory = GuestMemory::Allocate(region_sizes, page_size);
  if (!memory.ok()) return memory.status();
  auto handshake = PerformVmmHandshakeOn(*memory, std::move(connection), options);
  if (!handshake.ok()) return handshake.status();
  return std::unique_ptr<VmmStandIn>(new VmmStandIn{std::move(*memory), std::move(*handshake)});
}

uint64_t PageCount(const GuestMemory& memory) { return memory.total_size() / 4096; }

void TouchPages(const GuestMemory& memory, const std::vector<uint64_t>& pages) {
  uint64_t sum = 0;
  for (uint64_t p : pages) sum += *reinterpret_cast<volatile const uint8_t*>(memory.AtFileOffset(p * 4096));
  (void)sum;
}

std::vector<uint64_t> SpreadPages(uint64_t page_count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < page_count; ++p) {
    if (rng() % 3 == 0) pages.push_back(p);
  }
  return pages;
}

void TouchAllPages(const GuestMemory& memory, int threads) {
  const uint64_t pages = PageCount(memory);
  std::atomic<uint64_t> sink{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      uint64_t sum = 0;
      uint64_t start = pages * static_cast<uint64_t>(t) / static_cast<uint64_t>(threads) / 2;
      for (uint64_t i = 0; i < pages; ++i) {
        uint64_t page = (start + i) % pages;
        sum += *reinterpret_cast<volatile const uint8_t*>(memory.AtFileOffset(page * 4096));
      }
      sink += sum;
    });
  }
  for (auto& w : workers) w.join();
}

}  // namespace uffdpager::testing
